"""Retrieval quality, end to end: a multi-page PDF of filler with short facts hidden on different pages goes
through the real pipeline (intake, extraction, chunking, the local embedder, storage); natural questions must find
the chunk holding each fact among the top 3 hits, with the right page for the citation."""

import random

import pytest

from rag import retrieval
from rag.files import check_upload
from rag.retrieval import retrieve
from rag.service import ingest
from testsupport.files import make_text_pdf
from testsupport.rag_questions import QUESTIONS, document_pdfs

FILLER_SENTENCES = [
    "The quarterly review looked at revenue across all regions and found steady growth in the service business.",
    "Management expects the restructuring of the sales teams to be complete by the end of the financial year.",
    "Customer satisfaction scores improved after the support desk extended its opening hours in the evening.",
    "The marketing department plans a new campaign for the spring, focusing on small and medium businesses.",
    "Several suppliers raised their prices, which the procurement team is negotiating on a case by case basis.",
    "The board discussed long-term investments in training and the development of junior staff members.",
    "A new reporting template will make monthly figures easier to compare between departments.",
    "Travel should be booked through the approved agency so that costs and bookings stay in one place.",
    "The annual conference will take place in the autumn, with workshops on leadership and communication.",
    "Product managers gather feedback from clients every quarter and share a summary with the engineering leads.",
    "The legal team reminds everyone that contracts must be reviewed before they are signed by a director.",
    "Energy use in the headquarters dropped after the lighting was replaced with more efficient fittings.",
    "Recruitment for the analytics team continues, with interviews scheduled over the coming weeks.",
    "The company newsletter is published on the first Monday of each month and collects news from every office.",
    "Health and safety training is mandatory for new employees and must be refreshed every two years.",
    "Quarterly targets for the regional offices were adjusted to reflect the slower start of the year.",
    "The archive of old project documents is being digitised and will be searchable by the summer.",
    "Teams are encouraged to hold shorter meetings with a clear agenda and written notes afterwards.",
]

# (page, the fact as a single line on that page, a question a user would ask)
FACTS = [
    (2, "The wifi password is mango-42.", "What is the wifi password?"),
    (3, "Locker 17 belongs to Priya.", "Who does locker 17 belong to?"),
    (5, "Invoices above 5000 euros are approved by Mr. Okafor.", "Who approves large invoices?"),
    (6, "The fire assembly point is the old oak tree behind car park B.", "Where is the fire assembly point?"),
    (8, "The spare key for the server room is kept in a blue envelope at reception.", "Where is the spare server key?"),
]
# Questions that share (almost) no words with their fact: only the embeddings can connect them.
PARAPHRASES = [
    ("The wifi password is mango-42.", "How do I log in to the wireless internet?"),
    ("The fire assembly point is the old oak tree behind car park B.", "Where should we gather during an evacuation?"),
]
PAGES = 9


def filler_page(rng: random.Random, paragraphs: int = 4) -> list[str]:
    return [" ".join(rng.sample(FILLER_SENTENCES, 4)) for _ in range(paragraphs)]


def handbook_pages() -> list[str]:
    rng = random.Random(42)
    facts_by_page = {page: fact for page, fact, _ in FACTS}
    pages = []
    for number in range(1, PAGES + 1):
        paragraphs = filler_page(rng)
        if number in facts_by_page:
            paragraphs.insert(rng.randrange(1, len(paragraphs)), facts_by_page[number])  # a line amid the filler
        pages.append("\n\n".join(paragraphs))
    pages[0] = "# Staff handbook\n\n" + pages[0]
    return pages


@pytest.fixture
def handbook_chat(make_chat, owner, settings, tmp_path):
    settings.RAG_EMBEDDINGS = "local"
    settings.MEDIA_ROOT = tmp_path
    retrieval.clear_cache()
    chat = make_chat(owner)
    handbook = ingest(chat, check_upload("handbook.pdf", make_text_pdf(handbook_pages())))
    # A second document of filler only, so the facts also have to beat another document's chunks.
    rng = random.Random(7)
    ingest(chat, check_upload("minutes.pdf", make_text_pdf(["\n\n".join(filler_page(rng)) for _ in range(4)])))
    assert handbook.chunks.count() >= PAGES  # the facts really are spread over many chunks
    yield chat
    retrieval.clear_cache()


def test_natural_questions_find_each_hidden_fact_and_its_page(handbook_chat):
    problems = []
    for page, fact, question in FACTS:
        hits = retrieve(handbook_chat.id, question)[:3]
        holding = [hit for hit in hits if fact in " ".join(hit.text.split())]
        if not holding:
            problems.append(f"{question!r}: {fact!r} not in the top 3 {[h.text[:50] for h in hits]}")
        elif (holding[0].page, holding[0].document_name) != (page, "handbook.pdf"):
            problems.append(f"{question!r}: cited {holding[0].document_name} page {holding[0].page}, not {page}")
    assert not problems, "\n".join(problems)


def test_paraphrased_questions_find_their_fact_through_the_embeddings(handbook_chat):
    problems = []
    for fact, question in PARAPHRASES:
        hits = retrieve(handbook_chat.id, question)[:3]
        if not any(fact in " ".join(hit.text.split()) for hit in hits):
            problems.append(f"{question!r}: {fact!r} not in the top 3 {[h.text[:50] for h in hits]}")
    assert not problems, "\n".join(problems)


# --- the fixed question set (testsupport.rag_questions; bench/rag_quality.py reports the same figures) ----------

# What the local embedder scores on the set (bench/README.md): 33 of 40 first hits on the answer's page, 39 of 40
# with the answer's page among the 6 retrieved. A speed-up (batching, threads, another model) must not lower them.
RECALL_AT_1_FLOOR = 33
RECALL_AT_6_FLOOR = 39


@pytest.fixture
def question_set_chat(make_chat, owner, settings, tmp_path):
    settings.RAG_EMBEDDINGS = "local"
    settings.MEDIA_ROOT = tmp_path
    retrieval.clear_cache()
    chat = make_chat(owner)
    for name, data in document_pdfs().items():
        ingest(chat, check_upload(name, data))
    yield chat
    retrieval.clear_cache()


def answer_ranks(chat) -> list[int | None]:
    """For each question, the rank (0 = first) of the first hit on the answer's page, or None if none of the hits
    is."""
    ranks = []
    for question in QUESTIONS:
        places = [(hit.document_name, hit.page) for hit in retrieve(chat.id, question.text)]
        answer = (question.document, question.page)
        ranks.append(places.index(answer) if answer in places else None)
    return ranks


def test_question_set_recall_does_not_drop_and_needs_the_embeddings(question_set_chat, monkeypatch):
    ranks = answer_ranks(question_set_chat)
    at_1 = sum(rank == 0 for rank in ranks)
    at_6 = sum(rank is not None for rank in ranks)
    missed = [question.text for question, rank in zip(QUESTIONS, ranks, strict=True) if rank != 0]
    assert len(QUESTIONS) == 40
    assert at_1 >= RECALL_AT_1_FLOOR, f"recall@1 {at_1}/40; not first: {missed}"
    assert at_6 >= RECALL_AT_6_FLOOR, f"recall@6 {at_6}/40"

    # The set really measures the embedder: by words alone (no query vector), the paraphrased questions lose first
    # places that the embeddings win.
    monkeypatch.setattr(retrieval.ChatIndex, "ranked", _lexical_only(retrieval.ChatIndex.ranked))
    lexical = answer_ranks(question_set_chat)
    paraphrases = [index for index, question in enumerate(QUESTIONS) if question.kind == "meaning"]
    first = [sum(found[i] == 0 for i in paraphrases) for found in (ranks, lexical)]
    assert first[0] >= first[1] + 3, f"paraphrases first: {first[0]} with embeddings, {first[1]} by words alone"


def _lexical_only(ranked):
    def without_vector(self, query, query_vector, embedding_model):
        return ranked(self, query, None, embedding_model)

    return without_vector
