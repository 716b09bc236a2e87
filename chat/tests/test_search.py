"""Search (chat/search.py): titles, prompts and answers, highlighted, owner only, and an index that never drifts
from what is stored: every mutation path (a turn, its answer, rename, naming, regenerate/edit, delete, the OpenAI
API's stored conversation) is searched right after it. Runs on SQLite (FTS5) and, with DATABASE_URL, PostgreSQL."""

import json
import random
import uuid

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from chat import search
from chat.assist import BilledTo, name_chat
from chat.models import Chat, ChatQuery, SearchDocument
from chat.services import ChatError, do_delete_chat, do_rename_chat, search_chats
from testsupport.chats import branched_chat
from testsupport.exports import chatgpt_linear_conversation
from testsupport.http import ServerAsyncClient, bearer
from testsupport.scripted import SCRIPTED_MODEL

transactional = pytest.mark.django_db(transaction=True)


def indexed(make_chat, user, turns, **fields) -> Chat:
    """A chat built straight in the database and then indexed, as an import would."""
    chat = make_chat(user, turns, **fields)
    search.reindex_chat(chat.pk)
    return chat


def found(user, query) -> list[str]:
    return [result.chat.title for result in search.search(user, query).results]


def api_search(key, query: str, **params):
    return Client().get("/api/v1/chat/search", {"q": query, **params}, headers=bearer(key) if key else {})


def text_rows() -> int:
    """How many rows the engine's own text index holds (the words beside chat_searchdocument)."""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("SELECT COUNT(*) FROM chat_searchtext")
        else:
            cursor.execute("SELECT COUNT(*) FROM chat_searchdocument WHERE document <> ''::tsvector")
        return cursor.fetchone()[0]


# --- what is found -------------------------------------------------------------------------------------------


def test_titles_prompts_and_answers_are_found_with_the_words_marked(make_chat, owner):
    lisbon = indexed(make_chat, owner, [("Plan a trip to Lisbon", "Day 1: the Alfama district, then trams.")])
    indexed(make_chat, owner, [("Sourdough starter ratios", "Feed it flour and water daily.")])

    [by_answer] = search.search(owner, "alfama").results
    assert by_answer.chat.pk == lisbon.pk
    assert by_answer.matched_in == "response"
    assert by_answer.query_id == lisbon.queries.get().pk
    assert by_answer.snippet.html == "Day 1: the <mark>Alfama</mark> district, then trams."
    assert by_answer.snippet.text == "Day 1: the Alfama district, then trams."

    [by_title] = search.search(owner, "sourdough").results
    assert by_title.title.html == "<mark>Sourdough</mark> starter ratios"
    assert found(owner, "trip lisbon") == ["Plan a trip to Lisbon"]  # every word, anywhere in the turn
    assert found(owner, "lisbon sourdough") == []  # every word must match one turn (or the title)


def test_the_last_word_matches_as_a_prefix_while_it_is_being_typed(make_chat, owner):
    indexed(make_chat, owner, [("Docker compose networking", "Use a user-defined bridge.")])

    assert found(owner, "dock") == ["Docker compose networking"]
    assert found(owner, "compose netw") == ["Docker compose networking"]
    assert found(owner, "dock ") == []  # a finished word is matched whole
    assert found(owner, "d") == []  # one letter is a word, not a prefix of every word


@pytest.mark.parametrize("prefix_in_index", [True, False])
def test_words_beside_a_prefix_find_the_same_whichever_way_the_index_is_asked(
    make_chat, owner, other, monkeypatch, prefix_in_index
):
    """PostgreSQL asks its index for a rare prefix with the whole words, or checks a common one on the rows they
    find (chosen per search from the planner's estimates): the matches are the same either way."""
    monkeypatch.setattr(search, "_pg_rare_prefix", lambda cursor, terms: prefix_in_index)
    indexed(make_chat, owner, [("Docker compose networking", "Use a user-defined bridge."), ("Pods", "Nodes.")])
    indexed(make_chat, owner, [("Compose files", "Services and volumes.")])
    indexed(make_chat, other, [("Docker compose networking", "Someone else's.")])

    assert found(owner, "compose netw") == ["Docker compose networking"]
    assert sorted(found(owner, "compose serv")) == ["Compose files"]
    assert found(owner, "user defined bri") == ["Docker compose networking"]
    assert found(owner, "pods nod") == ["Docker compose networking"]  # both words in one turn, not the title
    assert found(owner, "docker volu") == []  # every word in one turn (or the title)
    assert found(owner, "compose zzq") == []


def test_postgresql_asks_its_index_for_a_prefix_estimated_rarer_than_the_words(make_chat, owner):
    if connection.vendor != "postgresql":
        pytest.skip("SQLite has no planner estimates to choose by")
    indexed(make_chat, owner, [(f"common words here {n}", "and an answer") for n in range(150)])
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE chat_searchdocument")  # the statistics the planner estimates from
        assert search._pg_rare_prefix(cursor, search.parse_terms("common zzq"))  # ~150 rows, ~3
        assert not search._pg_rare_prefix(cursor, search.parse_terms("zzqrare comm"))  # ~1 row, ~3

    assert len(found(owner, "common wor")) == 1  # one chat, at its best turn
    assert found(owner, "common zzq") == []


def test_case_and_accents_are_folded(make_chat, owner):
    indexed(make_chat, owner, [("Café CRÈME recipe", "Steam the milk.")])

    assert found(owner, "cafe creme") == ["Café CRÈME recipe"]
    assert found(owner, "CAFÉ") == ["Café CRÈME recipe"]


def test_a_long_answer_shows_a_snippet_around_the_match(make_chat, owner):
    answer = " ".join(f"word{i}" for i in range(200)) + " needle " + " ".join(f"tail{i}" for i in range(200))
    indexed(make_chat, owner, [("Long one", answer)])

    [result] = search.search(owner, "needle").results
    assert result.snippet.text.startswith("…word194 ")
    assert result.snippet.text.endswith("…")
    assert "<mark>needle</mark>" in result.snippet.html
    assert len(result.snippet.text.split()) == search.SNIPPET_WORDS


def test_html_in_chats_is_shown_as_text_never_as_markup(make_chat, owner):
    indexed(make_chat, owner, [("<script>alert(1)</script> xss", '<img src=x onerror="alert(2)"> payload & more')])

    [result] = search.search(owner, "payload").results
    assert result.snippet.html == (
        "&lt;img src=x onerror=&quot;alert(2)&quot;&gt; <mark>payload</mark> &amp; more"
    )
    assert result.title.html == "&lt;script&gt;alert(1)&lt;/script&gt; xss"


@pytest.mark.parametrize(
    "hostile,matches",
    [
        ('"', False),
        ('"unbalanced', False),
        ("*", False),
        ("lisbon*", True),
        ("NEAR(lisbon trip)", False),  # "near" is a word like any other, and no turn has it
        ("(lisbon trip", True),
        ("lisbon AND OR NOT", False),
        ("lisbon -trams", True),
        ("title:lisbon", False),
        ("{prompt}: lisbon", False),
        ("lisbon & | ! :* <-> trip", True),
        ("'; DROP TABLE chat_chat; --", False),
        ("\x00lisbon", True),
        ("🙂 lisbon", True),
        ("^lisbon", True),
        ("(((((", False),
        ("o1", False),  # the owner token of the FTS5 index is not searchable
        ("%s %(x)s lisbon", False),
        ("lisbon\\", True),
    ],
)
def test_a_hostile_query_gets_results_or_nothing_never_an_error(make_chat, owner, hostile, matches):
    indexed(make_chat, owner, [("Plan a trip to Lisbon", "Trams.")])

    assert found(owner, hostile) == (["Plan a trip to Lisbon"] if matches else [])


def test_any_text_at_all_is_a_valid_search(make_chat, owner):
    """Random text from every Unicode plane (seeded, bounded), indexed and searched: never an error, and a chat is
    always found by its own words."""
    rng = random.Random(14)
    pools = [(0x20, 0x7F), (0xA0, 0x2FF), (0x300, 0x36F), (0x370, 0x1FFF), (0x2000, 0x2BFF), (0x3000, 0x9FFF),
             (0xAC00, 0xD7A3), (0xE000, 0xFFFD), (0x1F300, 0x1FAFF), (0x10000, 0x10FFFF)]
    def random_text(length):
        chars = []
        for _ in range(length):
            low, high = rng.choice(pools)
            char = chr(rng.randint(low, high))
            chars.append(char if not 0xD800 <= ord(char) <= 0xDFFF else "x")
        return "".join(chars)

    for _ in range(30):
        text = random_text(rng.randint(1, 40))
        chat = indexed(make_chat, owner, [(text, random_text(60))], title="t")
        for query in (text, text[: rng.randint(1, len(text))], random_text(rng.randint(1, 20))):
            search.search(owner, query)  # never raises
        own_words = search.words(text)
        if own_words:
            results = search.search(owner, " ".join(own_words[:3]) + " ", limit=50).results
            assert chat.pk in {r.chat.pk for r in results}


def test_ranking_prefers_the_better_match_then_the_newest(make_chat, owner):
    older = indexed(make_chat, owner, [("Kubernetes", "about pods")])
    newer = indexed(make_chat, owner, [("Kubernetes", "about pods")])
    in_passing = indexed(make_chat, owner, [("Misc", "a long answer " * 30 + "that mentions pods once")])
    Chat.objects.filter(pk=older.pk).update(updated_at=newer.updated_at.replace(year=2020))

    ranked = [result.chat.pk for result in search.search(owner, "kubernetes pods").results]
    assert ranked == [newer.pk, older.pk]
    ranked = [result.chat.pk for result in search.search(owner, "pods").results]
    assert ranked[-1] == in_passing.pk


def test_one_result_per_chat_at_its_best_turn(make_chat, owner):
    chat = indexed(make_chat, owner, [("Rust lifetimes", "Borrowing."), ("More on rust lifetimes", "Rust rust.")])

    [result] = search.search(owner, "rust lifetimes").results

    assert result.chat.pk == chat.pk
    assert result.query_id in set(chat.queries.values_list("pk", flat=True))


def test_results_are_paginated(make_chat, owner):
    for n in range(5):
        indexed(make_chat, owner, [(f"Paging test {n}", "same words here")])

    first = search.search(owner, "paging", limit=2)
    second = search.search(owner, "paging", offset=first.next_offset, limit=2)
    last = search.search(owner, "paging", offset=second.next_offset, limit=2)

    titles = [r.chat.title for page in (first, second, last) for r in page.results]
    assert sorted(titles) == [f"Paging test {n}" for n in range(5)]
    assert (first.next_offset, second.next_offset, last.next_offset) == (2, 4, None)


# --- owner only ----------------------------------------------------------------------------------------------


def test_only_the_callers_chats_are_found(make_chat, owner, other):
    indexed(make_chat, owner, [("Owner secret plans", "hidden")])
    indexed(make_chat, other, [("Other secret plans", "hidden")])

    assert found(owner, "secret") == ["Owner secret plans"]
    assert found(other, "secret") == ["Other secret plans"]


def test_unlisted_chats_are_never_indexed(make_chat, owner):
    indexed(make_chat, owner, [("Ephemeral question", "ephemeral answer")], unlisted=True)

    assert found(owner, "ephemeral") == []
    assert not SearchDocument.objects.exists()


# --- the index never drifts ----------------------------------------------------------------------------------


async def post_json(key, path, payload=None):
    body = json.dumps(payload) if payload is not None else ""
    return await ServerAsyncClient().post(path, body, content_type="application/json", headers=bearer(key))


async def afound(user, query):
    from asgiref.sync import sync_to_async

    return await sync_to_async(found)(user, query)


@transactional
async def test_a_turn_is_found_by_its_prompt_and_by_its_answer_once_it_ends(scripted, owner_key, owner):
    scripted.tokens = ["Photosynthesis", " uses", " chlorophyll"]

    response = await post_json(owner_key, "/api/v1/chat", {"prompt": "How do leaves make sugar?"})

    assert response.status_code == 201
    assert await afound(owner, "leaves sugar") == ["How do leaves make sugar?"]
    assert await afound(owner, "chlorophyll") == ["How do leaves make sugar?"]


@transactional
async def test_a_failed_answer_is_found_by_what_it_wrote(scripted, owner_key, owner):
    scripted.tokens = ["Partial", " mitochondria", " and", " more"]
    scripted.fail_after = (2, "the provider went away")

    response = await post_json(owner_key, "/api/v1/chat", {"prompt": "Cells"})

    assert response.status_code == 502
    assert await afound(owner, "mitochondria") == ["Cells"]
    assert await afound(owner, "more") == []


@transactional
async def test_regenerated_and_edited_versions_are_all_found(scripted, owner_key, owner):
    scripted.tokens = ["Original", " zebra"]
    first = (await post_json(owner_key, "/api/v1/chat", {"prompt": "Name an animal"})).json()
    chat_id, query_id = first["chat"]["id"], first["chatQuery"]["id"]

    scripted.tokens = ["Regenerated", " giraffe"]
    regenerated = await post_json(owner_key, f"/api/v1/chat/{chat_id}/queries/{query_id}/regenerate")
    scripted.tokens = ["Edited", " okapi"]
    edited = await post_json(owner_key, f"/api/v1/chat/{chat_id}/queries/{query_id}/edit", {"prompt": "Rare animal"})

    assert (regenerated.status_code, edited.status_code) == (201, 201)
    from asgiref.sync import sync_to_async

    for word, version in (("zebra", query_id), ("giraffe", regenerated.json()["chatQuery"]["id"])):
        [result] = (await sync_to_async(search.search)(owner, word)).results
        assert str(result.query_id) == version
    assert await afound(owner, "okapi rare") == ["Name an animal"]
    assert await afound(owner, "animal") == ["Name an animal"]  # one chat, however many versions match


@transactional
async def test_a_renamed_chat_is_found_by_its_new_title_only(scripted, owner_key, owner):
    chat_id = (await post_json(owner_key, "/api/v1/chat", {"prompt": "Untitled musings"})).json()["chat"]["id"]

    response = await ServerAsyncClient().patch(
        f"/api/v1/chat/{chat_id}", json.dumps({"title": "Quantum gardening"}), content_type="application/json",
        headers=bearer(owner_key),
    )

    assert response.status_code == 200
    assert await afound(owner, "quantum garden") == ["Quantum gardening"]
    assert await afound(owner, "musings") == ["Quantum gardening"]  # the prompt still says it
    renamed_again = await ServerAsyncClient().patch(
        f"/api/v1/chat/{chat_id}", json.dumps({"title": "Plain title"}), content_type="application/json",
        headers=bearer(owner_key),
    )
    assert renamed_again.status_code == 200
    assert await afound(owner, "quantum") == []


@transactional
async def test_a_generated_name_is_found_at_once(scripted, owner):
    from asgiref.sync import sync_to_async

    chat = await sync_to_async(Chat.objects.create)(owner=owner, title="hello there", name="hello there",
                                                    model=SCRIPTED_MODEL)
    await sync_to_async(search.reindex_chat)(chat.pk)
    scripted.tokens = ["Greeting", " etiquette"]

    name = await name_chat(chat.pk, "hello there", "Hi!", [SCRIPTED_MODEL], BilledTo(owner.pk, None))

    assert name == "Greeting etiquette"
    assert await afound(owner, "etiquette") == ["hello there"]


def test_a_deleted_chat_leaves_nothing_in_the_index(make_chat, owner):
    chat = indexed(make_chat, owner, [("Delete me please", "gone soon"), ("second turn", "also gone")])
    kept = indexed(make_chat, owner, [("Keep me", "gone soon")])
    assert text_rows() == 5

    do_delete_chat(owner, chat.pk)

    assert found(owner, "gone") == ["Keep me"]
    assert SearchDocument.objects.filter(chat_id=chat.pk).count() == 0
    assert text_rows() == 2
    kept.owner.delete()  # a user deleted: every cascade takes the words too
    assert text_rows() == 0


def test_rename_service_reindexes_in_the_same_transaction(make_chat, owner):
    chat = indexed(make_chat, owner, [("A question", "text")], title="Old name")

    do_rename_chat(owner, chat.pk, "Brand new name")

    assert found(owner, "brand") == ["Brand new name"]
    assert found(owner, "old") == []
    assert SearchDocument.objects.filter(chat=chat, query__isnull=True).count() == 1


@transactional
async def test_a_stored_client_conversation_is_searchable_and_an_unstored_one_never(scripted, owner_key, owner):
    messages = [
        {"role": "user", "content": "Tell me about narwhals"},
        {"role": "assistant", "content": "Narwhals have a tusk."},
        {"role": "user", "content": "And belugas?"},
    ]
    scripted.tokens = ["Belugas", " are", " white"]
    stored = await post_json(owner_key, "/v1/chat/completions", {"model": SCRIPTED_MODEL, "messages": messages,
                                                                  "store": True})
    assert stored.status_code == 200
    assert await afound(owner, "tusk") == ["And belugas?"]  # an earlier turn the client sent
    assert await afound(owner, "white") == ["And belugas?"]

    scripted.tokens = ["Orcas", " hunt"]
    unstored = await post_json(owner_key, "/v1/chat/completions", {"model": SCRIPTED_MODEL, "messages": [
        {"role": "user", "content": "Orca facts"}]})
    assert unstored.status_code == 200
    assert await afound(owner, "orca") == []
    assert await afound(owner, "hunt") == []


def test_an_imported_chat_is_found_at_once(owner, owner_key):
    conversation = chatgpt_linear_conversation("Imported astronomy", [("What is a quasar?", "A bright nucleus.")])
    upload = SimpleUploadedFile("conversations.json", json.dumps([conversation]).encode())

    response = Client().post("/api/v1/chat/import", {"file": upload}, headers=bearer(owner_key))

    assert response.status_code in (200, 201), response.content
    assert found(owner, "astronomy") == ["Imported astronomy"]
    assert found(owner, "quasar nucleus") == ["Imported astronomy"]


# --- what indexing costs a turn ---------------------------------------------------------------------------------


def index_statements(captured) -> list[str]:
    return [query["sql"] for query in captured.captured_queries if "chat_search" in query["sql"]]


def post_turn(key, path, payload):
    return Client().post(path, json.dumps(payload), content_type="application/json", headers=bearer(key))


@pytest.fixture
def unnamed(monkeypatch):
    """No chat naming after a first answer: it runs in the background, apart from the turn (and its own index
    write is tested above), so the count below is the turn's alone."""
    monkeypatch.setattr("chat.pipeline._name_first_turn", lambda *args, **kwargs: None)


def test_a_turn_indexes_its_prompt_and_answer_in_two_statements_or_three_on_sqlite(scripted, owner_key, owner,
                                                                                   unnamed):
    """The prompt (and a new chat's title) written once as the turn starts, the answer added once as it ends: no
    delete, no read back, the same count for a chat's first turn and for a later one."""
    per_turn = 2 if connection.vendor == "postgresql" else 3  # SQLite: the document rows, then their words
    scripted.tokens = ["Photosynthesis", " uses", " chlorophyll"]
    with CaptureQueriesContext(connection) as first_turn:
        first = post_turn(owner_key, "/api/v1/chat", {"prompt": "How do leaves make sugar?"})
    assert first.status_code == 201, first.content
    scripted.tokens = ["Stomata", " breathe"]
    chat_id = first.json()["chat"]["id"]
    with CaptureQueriesContext(connection) as second_turn:
        second = post_turn(owner_key, f"/api/v1/chat/{chat_id}", {"prompt": "And how do they breathe?"})
    assert second.status_code == 200, second.content

    assert len(index_statements(first_turn)) == per_turn, index_statements(first_turn)
    assert len(index_statements(second_turn)) == per_turn, index_statements(second_turn)
    assert not any(sql.lstrip().upper().startswith(("DELETE", "SELECT")) for sql in index_statements(first_turn))
    assert found(owner, "leaves sugar") == found(owner, "chlorophyll") == ["How do leaves make sugar?"]
    assert found(owner, "stomata breathe") == ["How do leaves make sugar?"]
    assert SearchDocument.objects.filter(chat_id=chat_id).count() == 3  # the title and two turns


def test_an_unlisted_turn_writes_nothing_to_the_index(scripted, owner_key, owner, unnamed):
    scripted.tokens = ["Orcas", " hunt"]
    with CaptureQueriesContext(connection) as captured:
        response = post_turn(owner_key, "/v1/chat/completions", {"model": SCRIPTED_MODEL, "messages": [
            {"role": "user", "content": "Orca facts"}]})

    assert response.status_code == 200
    assert [sql for sql in index_statements(captured) if not sql.lstrip().upper().startswith("UPDATE")] == []
    assert not SearchDocument.objects.exists()


def test_a_stored_client_conversation_is_indexed_in_one_write_with_its_turn(scripted, owner_key, owner, unnamed):
    messages = [{"role": "user", "content": f"Question {n} about lemurs"} if n % 2 == 0
                else {"role": "assistant", "content": f"Answer {n} about lemurs"} for n in range(20)]
    scripted.tokens = ["Madagascar"]
    with CaptureQueriesContext(connection) as captured:
        response = post_turn(owner_key, "/v1/chat/completions", {"model": SCRIPTED_MODEL, "store": True,
                                                                 "messages": [*messages, {"role": "user",
                                                                                          "content": "Where?"}]})

    assert response.status_code == 200, response.content
    assert len(index_statements(captured)) == (2 if connection.vendor == "postgresql" else 3)
    assert SearchDocument.objects.count() == 1 + 10 + 1  # the title, ten client turns, the new one
    assert found(owner, "answer 19") == ["Where?"]  # a chat is titled by its last prompt
    assert found(owner, "madagascar") == ["Where?"]


def test_the_answer_is_indexed_again_in_place_when_written_again(make_chat, owner):
    """index_answer replaces the answer's words (an orphan settled after its writer, any second write), keeping
    the prompt's and the document's id."""
    chat = indexed(make_chat, owner, [("Prompt about otters", "first answer mentions beavers")])
    query = chat.queries.get()
    document_id = SearchDocument.objects.get(query=query).pk

    search.index_answer(query.pk, "second answer mentions badgers")
    search.index_answer(query.pk, "third answer mentions weasels")

    assert found(owner, "weasels") == found(owner, "otters") == [chat.title]
    assert found(owner, "beavers") == found(owner, "badgers") == []
    assert SearchDocument.objects.get(query=query).pk == document_id
    assert text_rows() == 2


@transactional
async def test_an_orphaned_answer_is_found_by_what_it_kept_once_settled(owner):
    """A turn whose instance died mid-answer: its prompt was indexed as it started, and settling it (the sweeper)
    adds the partial answer in place."""
    from asgiref.sync import sync_to_async

    from chat import generations

    def start_turn():
        chat = Chat.objects.create(owner=owner, title="Crash course", name="Crash course", model=SCRIPTED_MODEL)
        query = ChatQuery.objects.create(chat=chat, prompt="Explain glaciers", model=SCRIPTED_MODEL,
                                         status=ChatQuery.Status.STREAMING)
        search.index_new(chat, [query], title=True)
        ChatQuery.objects.filter(pk=query.pk).update(response="Moraines are left behind",
                                                     created_at=query.created_at.replace(year=2020))
        return query

    query = await sync_to_async(start_turn)()
    assert await afound(owner, "glaciers") == ["Crash course"]
    assert await afound(owner, "moraines") == []  # streaming: its answer is not indexed at each flush

    assert await generations.sweep_orphans(older_than_seconds=10) == 1

    assert await afound(owner, "moraines") == ["Crash course"]
    assert (await ChatQuery.objects.aget(pk=query.pk)).status == ChatQuery.Status.ERROR


def test_reindexing_a_chat_or_a_query_replaces_its_document_in_place(make_chat, owner):
    chat = indexed(make_chat, owner, [("Prompt about herons", "answer about egrets")], title="Birds")
    query = chat.queries.get()
    ids = set(SearchDocument.objects.values_list("pk", flat=True))
    Chat.objects.filter(pk=chat.pk).update(title="Waders")
    ChatQuery.objects.filter(pk=query.pk).update(response="answer about storks")

    search.index_chats([chat.pk])
    search.index_queries([query.pk])

    assert found(owner, "waders") == found(owner, "storks") == ["Waders"]
    assert found(owner, "birds") == found(owner, "egrets") == []
    assert set(SearchDocument.objects.values_list("pk", flat=True)) == ids
    assert text_rows() == 2
    Chat.objects.filter(pk=chat.pk).update(unlisted=True)  # nothing writes this today; were it to, words go
    search.index_chats([chat.pk])
    search.index_queries([query.pk])
    assert not SearchDocument.objects.exists() and text_rows() == 0


def test_backfill_indexes_chats_written_before_search_existed(make_chat, owner):
    make_chat(owner, [("Legacy chat about comets", "Comets have tails.")])
    assert found(owner, "comets") == []

    assert search.backfill() == 2
    assert found(owner, "comets") == ["Legacy chat about comets"]
    assert search.backfill() == 0


# --- the API -------------------------------------------------------------------------------------------------


def test_api_search_for_the_owner(make_chat, owner, owner_key):
    chat = indexed(make_chat, owner, [("Plan a trip to Lisbon", "Trams in <b>Alfama</b>.")])

    response = api_search(owner_key, "alfama")

    assert response.status_code == 200
    body = response.json()
    query_id = str(chat.queries.get().pk)
    assert body == {
        "query": "alfama",
        "results": [
            {
                "chatId": str(chat.pk),
                "title": "Plan a trip to Lisbon",
                "titleHtml": "Plan a trip to Lisbon",
                "queryId": query_id,
                "matchedIn": "response",
                "snippet": "Trams in <b>Alfama</b>.",
                "snippetHtml": "Trams in &lt;b&gt;<mark>Alfama</mark>&lt;/b&gt;.",
                "url": f"/chat/{chat.pk}/?query={query_id}#turn-{query_id}",
                "bookmarked": False,
                "updatedAt": chat.updated_at.isoformat(),
            }
        ],
        "nextCursor": None,
    }


def test_api_search_pages_with_next_cursor(make_chat, owner, owner_key):
    for n in range(search.PAGE_SIZE + 3):
        indexed(make_chat, owner, [(f"Topic {n} pagination", "x")])

    first = api_search(owner_key, "pagination").json()
    second = api_search(owner_key, "pagination", cursor=first["nextCursor"]).json()

    assert len(first["results"]) == search.PAGE_SIZE
    assert first["nextCursor"] == str(search.PAGE_SIZE)
    assert len(second["results"]) == 3 and second["nextCursor"] is None
    ids = {r["chatId"] for r in first["results"]} | {r["chatId"] for r in second["results"]}
    assert len(ids) == search.PAGE_SIZE + 3


def test_api_search_of_another_user_finds_nothing_of_the_owners(make_chat, owner, other_key):
    indexed(make_chat, owner, [("Owner only words", "private")])

    response = api_search(other_key, "private")

    assert response.status_code == 200
    assert response.json()["results"] == []


def test_api_search_needs_a_key(make_chat, owner):
    indexed(make_chat, owner, [("Owner only words", "private")])

    assert api_search(None, "private").status_code == 401


@pytest.mark.parametrize(
    "params,code",
    [
        ({"q": ""}, "empty_query"),
        ({"q": "   "}, "empty_query"),
        ({"q": "x" * 201}, "query_too_long"),
        ({"q": "ok", "cursor": "-1"}, "invalid_cursor"),
        ({"q": "ok", "cursor": "abc"}, "invalid_cursor"),
        ({"q": "ok", "cursor": "9" * 5000}, "invalid_cursor"),
        ({"q": "ok", "cursor": str(search.CANDIDATES)}, "invalid_cursor"),
    ],
)
def test_api_search_refuses_a_bad_query_with_400(owner_key, params, code):
    response = Client().get("/api/v1/chat/search", params, headers=bearer(owner_key))

    assert response.status_code == 400
    assert response.json()["code"] == code


def test_api_search_without_q_is_400(owner_key):
    response = Client().get("/api/v1/chat/search", headers=bearer(owner_key))

    assert response.status_code == 400


def test_search_chats_service_refuses_invalid_unicode(owner):
    with pytest.raises(ChatError) as refused:
        search_chats(owner, "bad \ud800 text")
    assert refused.value.status == 400


# --- the sidebar -----------------------------------------------------------------------------------------------


def test_the_sidebar_has_a_search_box_that_fetches_results_as_the_user_types(owner_client):
    html = owner_client.get("/chat/").content.decode()

    assert 'id="chat-search"' in html
    assert 'hx-get="/chat/search/"' in html
    assert 'hx-trigger="input changed delay:200ms, search"' in html
    assert 'hx-target="#search-results"' in html
    assert "js/search.js" in html


def test_sidebar_results_link_to_the_matching_turn(make_chat, owner, owner_client):
    chat = indexed(make_chat, owner, [("Plan a trip", "See <b>Alfama</b>")])
    query_id = chat.queries.get().pk

    response = owner_client.get("/chat/search/", {"q": "alfa"})

    assert response.status_code == 200
    html = response.content.decode()
    assert f'href="/chat/{chat.pk}/?query={query_id}#turn-{query_id}"' in html
    assert "See &lt;b&gt;<mark>Alfama</mark>&lt;/b&gt;" in html
    assert "<b>" not in html


def test_sidebar_search_with_nothing_found_says_so_and_empty_text_restores_the_list(owner_client):
    assert "No chats match “zzz”." in owner_client.get("/chat/search/", {"q": "zzz"}).content.decode()
    assert owner_client.get("/chat/search/", {"q": "  "}).content == b""
    too_long = owner_client.get("/chat/search/", {"q": "x" * 201}).content.decode()
    assert "at most 200 characters" in too_long


def test_sidebar_results_load_more_when_scrolled_to_the_end(make_chat, owner, owner_client):
    for n in range(search.PAGE_SIZE + 1):
        indexed(make_chat, owner, [(f"Scroll {n}", "x")])

    first = owner_client.get("/chat/search/", {"q": "scroll"}).content.decode()
    more = owner_client.get("/chat/search/", {"q": "scroll", "cursor": str(search.PAGE_SIZE)}).content.decode()

    assert first.count('class="chat-link search-hit"') == search.PAGE_SIZE
    assert f'hx-get="/chat/search/?q=scroll&amp;cursor={search.PAGE_SIZE}"' in first
    assert 'hx-trigger="revealed"' in first
    assert more.count('class="chat-link search-hit"') == 1
    assert "No chats match" not in more


def test_sidebar_search_of_another_user_finds_nothing_of_the_owners(make_chat, owner, other_client):
    indexed(make_chat, owner, [("Owner only words", "private")])

    assert "No chats match" in other_client.get("/chat/search/", {"q": "private"}).content.decode()


def test_sidebar_search_needs_a_login(make_chat, owner):
    response = Client().get("/chat/search/", {"q": "private"})

    assert response.status_code == 302
    assert "/login" in response["Location"]


def test_a_result_on_a_version_not_shown_opens_that_branch(make_chat, owner, owner_client):
    chat, q1, q2, q3, q2b = branched_chat(make_chat, owner, answers=("A1", "hidden wombat", "A3", "shown"))
    search.reindex_chat(chat.pk)
    [result] = search.search(owner, "wombat").results
    assert result.query_id == q2.pk

    html = owner_client.get(result.url).content.decode()

    assert f'id="turn-{q2.pk}"' in html and f'id="turn-{q3.pk}"' in html
    assert f'id="turn-{q2b.pk}"' not in html
    assert f'name="parentId" value="{q3.pk}"' in html  # a new prompt continues the branch on screen
    ChatQuery.objects.get(pk=q2b.pk, selected=True)  # looking selects nothing
    plain = owner_client.get(f"/chat/{chat.pk}/?query={uuid.uuid4()}").content.decode()
    assert f'id="turn-{q2b.pk}"' in plain  # a turn since deleted: the chat as it is shown
