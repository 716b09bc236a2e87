"""Hybrid retrieval: BM25 for exact terms, vectors for paraphrases, diversity across documents, the token budget,
and the per-process index following the chat's documents."""

import hashlib

import numpy as np
import pytest

from rag import retrieval
from rag.embeddings import Embedder, EmbeddingError, LocalEmbedder, get_embedder
from rag.models import Chunk, Document, encode_embedding
from rag.retrieval import chat_index, retrieve, stem, terms

FILLER = [
    "The quarterly report covers revenue, staffing and the new office in the north wing.",
    "Lunch is served in the cafeteria between noon and two o'clock on weekdays.",
    "Visitors sign in at the front desk and wear a badge while in the building.",
    "The garden behind the library was replanted with native shrubs last spring.",
    "Team meetings take place on Tuesday mornings in the large conference room.",
    "Parking permits are renewed every January through the facilities portal.",
]


@pytest.fixture(autouse=True)
def _local_embedder_and_fresh_cache(settings):
    settings.RAG_EMBEDDINGS = "local"
    retrieval.clear_cache()
    yield
    retrieval.clear_cache()


def add_document(chat, name, texts, tokens=50, embedder=None, embedding_model=None, headings=None):
    """A ready Document with one chunk per text, embedded by `embedder` (the current one by default)."""
    embedder = embedder or get_embedder()
    vectors = embedder.embed(list(texts))
    document = Document.objects.create(
        chat=chat,
        name=name,
        kind="text",
        mime="text/plain",
        sha256=hashlib.sha256(name.encode()).hexdigest(),
        pages=len(texts),
        status=Document.Status.READY,
        embedding_model=embedding_model or embedder.name,
    )
    Chunk.objects.bulk_create(
        Chunk(
            document=document,
            chat=chat,
            position=i,
            page=i + 1,
            heading=(headings or {}).get(i, ""),
            text=text,
            tokens=tokens,
            embedding=encode_embedding(vector),
        )
        for i, (text, vector) in enumerate(zip(texts, vectors, strict=True))
    )
    return document


@pytest.fixture
def chat(make_chat, owner):
    return make_chat(owner)


# --- the BM25 tokenizer ---------------------------------------------------------------------------------------


def test_terms_lowercase_drop_stopwords_and_light_stem():
    assert terms("What is THE wifi password of the Offices?") == ["wifi", "password", "office"]
    assert terms("Locker 17 belongs to Priya's team; mango-42") == [
        "locker",
        "17",
        "belong",
        "priya",
        "team",
        "mango",
        "42",
    ]
    assert [stem(w) for w in ("batteries", "classes", "news", "bus", "status", "passwords")] == [
        "battery",
        "class",
        "news",
        "bus",
        "status",
        "password",
    ]


# --- lexical and vector retrieval -------------------------------------------------------------------------------


def test_bm25_finds_an_exact_rare_term(chat):
    target = "Replacement part QX-9913 ships from the Rotterdam warehouse."
    add_document(chat, "handbook.txt", [*FILLER, target, *FILLER[:3]])
    hits = retrieve(chat.id, "QX-9913", k=3)
    assert hits[0].text == target
    index = chat_index(chat.id)
    lexical = index.lexical_scores(terms("QX-9913"))
    assert np.count_nonzero(lexical) == 1  # only that chunk has the term at all


def test_bm25_weighs_rare_terms_up_and_long_chunks_down(chat):
    """idf: a rare term counts more than a common one; length normalisation: a match in a short chunk beats the
    same match in a long one."""
    add_document(
        chat,
        "notes.txt",
        [
            "apple banana",  # 0
            "apple cherry",  # 1
            "apple " + "filler " * 40 + "durian",  # 2: durian in a long chunk
            "durian",  # 3: durian in a short chunk
        ],
    )
    index = chat_index(chat.id)
    common = index.lexical_scores(["apple"])
    rare = index.lexical_scores(["banana"])
    assert rare[0] > common[0] > 0
    durian = index.lexical_scores(["durian"])
    assert durian[3] > durian[2] > 0
    assert durian[0] == durian[1] == 0


def test_vectors_find_a_paraphrase_without_shared_words(chat):
    target = "To change your password, open Settings and choose Security."
    add_document(chat, "it-guide.txt", [*FILLER, target])
    query = "How can I reset my login credentials?"
    assert not set(terms(query)) & set(terms(target))  # nothing for BM25 to go on
    hits = retrieve(chat.id, query, k=3)
    assert hits[0].text == target


def test_hits_carry_document_page_heading_and_a_score(chat):
    document = add_document(chat, "guide.txt", FILLER, headings={2: "Visitors"})
    (hit,) = retrieve(chat.id, "Where do visitors sign in?", k=1)
    assert hit.document_id == document.id
    assert hit.document_name == "guide.txt"
    assert hit.page == 3 and hit.heading == "Visitors"
    assert hit.chunk_id == Chunk.objects.get(document=document, position=2).id
    assert hit.score > 0


def test_a_chunk_both_rankings_agree_on_comes_first(chat):
    texts = [
        "Server room access requires a blue badge.",  # lexical and semantic match
        "Entry to the data centre needs special clearance.",  # semantic only
        "The blue badge is also valid in the gym.",  # lexical only (blue badge)
        *FILLER,
    ]
    add_document(chat, "security.txt", texts)
    hits = retrieve(chat.id, "Which badge opens the server room?", k=3)
    assert hits[0].text == texts[0]
    assert hits[0].score == max(h.score for h in hits)


# --- diversity and the token budget ---------------------------------------------------------------------------


def test_one_document_cannot_take_every_slot_when_others_exist(chat):
    cats = add_document(
        chat, "cats.txt", [f"Cats are curious pets; fact number {i} about cats and kittens." for i in range(10)]
    )
    dogs = add_document(chat, "dogs.txt", [f"Dogs enjoy long walks; dog fact number {i}." for i in range(5)])
    hits = retrieve(chat.id, "Tell me about cats and kittens", k=6)
    # Every cat chunk outranks every dog chunk, yet cats get ceil(6/2) = 3 slots and dogs the other 3.
    assert [h.document_id for h in hits].count(cats.id) == 3
    assert [h.document_id for h in hits].count(dogs.id) == 3
    assert hits[0].document_id == cats.id


def test_the_cap_is_lifted_when_other_documents_run_out(chat):
    cats = add_document(chat, "cats.txt", [f"Cats are curious pets; fact number {i} about cats." for i in range(10)])
    add_document(chat, "dog.txt", ["Dogs enjoy long walks."])
    hits = retrieve(chat.id, "cats", k=6)
    assert len(hits) == 6
    assert sum(h.document_id == cats.id for h in hits) == 5


def test_a_single_document_fills_every_slot(chat):
    add_document(chat, "cats.txt", [f"Cats are curious pets; fact number {i} about cats." for i in range(10)])
    assert len(retrieve(chat.id, "cats", k=6)) == 6


def test_token_budget_limits_the_chunks_but_never_to_none(chat):
    add_document(
        chat, "big.txt", [f"Chapter {i} of the manual explains the espresso machine." for i in range(8)], tokens=400
    )
    assert len(retrieve(chat.id, "espresso machine manual", k=6, token_budget=1000)) == 2
    assert len(retrieve(chat.id, "espresso machine manual", k=6, token_budget=100)) == 1
    assert len(retrieve(chat.id, "espresso machine manual", k=6, token_budget=10_000)) == 6


def test_defaults_come_from_settings(chat, settings):
    add_document(
        chat, "big.txt", [f"Chapter {i} of the manual explains the espresso machine." for i in range(8)], tokens=10
    )
    settings.RAG_TOP_K = 4
    settings.RAG_CONTEXT_TOKENS = 25
    assert len(retrieve(chat.id, "espresso machine")) == 2
    settings.RAG_CONTEXT_TOKENS = 1000
    assert len(retrieve(chat.id, "espresso machine")) == 4


# --- what there is to search ----------------------------------------------------------------------------------


def test_nothing_to_find(chat, make_chat, other):
    assert retrieve(chat.id, "anything") == []
    add_document(chat, "a.txt", FILLER)
    assert retrieve(chat.id, "   ") == []
    assert retrieve(make_chat(other).id, "cafeteria") == []  # another chat's documents are not searched


def test_documents_that_are_not_ready_are_not_searched(chat):
    document = add_document(chat, "a.txt", FILLER)
    Document.objects.filter(pk=document.pk).update(status=Document.Status.PROCESSING)
    assert retrieve(chat.id, "cafeteria lunch") == []


def test_the_index_follows_added_and_deleted_documents(chat):
    first = add_document(chat, "first.txt", FILLER)
    assert retrieve(chat.id, "cafeteria")[0].document_id == first.id
    index = chat_index(chat.id)
    assert chat_index(chat.id) is index  # cached while nothing changes

    second = add_document(chat, "second.txt", ["The zeppelin hangar opens at dawn."])
    assert retrieve(chat.id, "zeppelin hangar")[0].document_id == second.id
    assert chat_index(chat.id) is not index

    second.delete()
    assert all(h.document_id == first.id for h in retrieve(chat.id, "zeppelin hangar"))


def test_documents_embedded_by_another_model_are_still_found_by_their_words(chat):
    add_document(chat, "old.txt", [*FILLER, "The zeppelin hangar opens at dawn."], embedding_model="openai:retired")
    hits = retrieve(chat.id, "zeppelin hangar", k=2)
    assert hits[0].text == "The zeppelin hangar opens at dawn."


def test_retrieval_falls_back_to_words_when_the_query_cannot_be_embedded(chat, monkeypatch):
    add_document(chat, "a.txt", [*FILLER, "The zeppelin hangar opens at dawn."])

    def broken(self, texts):
        raise EmbeddingError("OpenAI did not answer in time.")

    monkeypatch.setattr(LocalEmbedder, "embed", broken)
    hits = retrieve(chat.id, "zeppelin hangar", k=2)
    assert hits[0].text == "The zeppelin hangar opens at dawn."


def test_the_cache_drops_the_least_recently_used_chat_beyond_its_budget(make_chat, owner, monkeypatch):
    chats = [make_chat(owner) for _ in range(3)]
    for chat in chats:
        add_document(chat, "a.txt", FILLER)
    size = chat_index(chats[0].id).nbytes
    monkeypatch.setattr(retrieval, "cache_budget_bytes", lambda: int(size * 2.5))  # room for two
    retrieval.clear_cache()
    first, second = chat_index(chats[0].id), chat_index(chats[1].id)
    assert chat_index(chats[0].id) is first  # used again: now the second is the least recent
    chat_index(chats[2].id)
    assert set(retrieval._cache) == {str(chats[0].id), str(chats[2].id)}
    assert chat_index(chats[1].id) is not second  # rebuilt when asked for again


def test_a_zero_budget_keeps_no_index(chat, settings):
    add_document(chat, "a.txt", FILLER)
    settings.RAG_INDEX_CACHE_MB = 0
    first = chat_index(chat.id)
    assert chat_index(chat.id) is not first
    assert retrieve(chat.id, "cafeteria")[0].text == FILLER[1]


# --- re-ranking the static model's candidates --------------------------------------------------------------------


class FineByWord(Embedder):
    """A stand-in reranker: the query and texts mentioning `word` point one way, all others another; it records
    what it embeds."""

    name = "test:fine-by-word"
    dimensions = 2
    query = "moored hangar"

    def __init__(self, word):
        self.word = word
        self.embedded = []

    def embed(self, texts):
        self.embedded.append(list(texts))
        near = [text == self.query or self.word in text for text in texts]
        return np.array([[1.0, 0.0] if match else [0.0, 1.0] for match in near], dtype=np.float32)


HANGAR = ["The hangar opens at dawn and closes at dusk.", "The zeppelin is moored inside the hangar."]


def test_the_best_candidates_are_re_scored_by_the_reranker_and_its_vectors_are_kept(chat, monkeypatch):
    assert get_embedder().reranker is not None  # the default local embedder is re-ranked
    add_document(chat, "a.txt", [*FILLER, *HANGAR])
    fine = FineByWord("moored")
    monkeypatch.setattr(retrieval, "reranker_for", lambda name: fine if name == get_embedder().name else None)
    monkeypatch.setattr(retrieval, "RERANK_DEPTH", 4)

    hits = retrieve(chat.id, "moored hangar", k=3)
    assert hits[0].text == HANGAR[1]
    assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)
    assert fine.embedded[0] == ["moored hangar"] and len(fine.embedded[1]) == 4  # the query, then the top 4

    # The same candidates again: their vectors are remembered, and so is the query's.
    retrieve(chat.id, "moored hangar", k=3)
    assert len(fine.embedded) == 2
    # The reranker decides between the candidates: pointing it at the other chunk moves that one first.
    retrieval.clear_cache()
    monkeypatch.setattr(fine, "word", "dawn")
    assert retrieve(chat.id, "moored hangar", k=3)[0].text == HANGAR[0]


def test_a_failing_reranker_leaves_the_coarse_ranking(chat, monkeypatch):
    add_document(chat, "a.txt", [*FILLER, *HANGAR])
    monkeypatch.setattr(retrieval, "reranker_for", lambda name: None)
    coarse = [(hit.text, hit.score) for hit in retrieve(chat.id, "zeppelin hangar", k=3)]

    class Broken(FineByWord):
        def embed(self, texts):
            raise EmbeddingError("the reranker is unavailable")

    monkeypatch.setattr(retrieval, "reranker_for", lambda name: Broken("moored"))
    assert [(hit.text, hit.score) for hit in retrieve(chat.id, "zeppelin hangar", k=3)] == coarse
    assert coarse[0][0] == HANGAR[1]


def test_documents_embedded_by_minilm_itself_are_still_searched_by_meaning(chat, settings):
    """Uploaded before the static model became the local default: their stored MiniLM vectors still count."""
    settings.RAG_EMBEDDING_THREADS = 1
    minilm = get_embedder().reranker
    fact = "The wifi password is mango-42."
    add_document(chat, "old.txt", [*FILLER, fact], embedder=minilm)
    # No word in common with the fact: only the vectors connect them.
    assert retrieve(chat.id, "How do I log in to the wireless internet?", k=1)[0].text == fact
