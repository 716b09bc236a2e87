"""The branches over the JSON API: regenerate and edit (JSON and SSE), select, the branch shown with each query's
parent and siblings, other branches by ?leaf= and /tree; every endpoint refuses other users and anonymous callers."""

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from chat.models import ChatQuery
from testsupport.chats import branched_chat, queries_of
from testsupport.http import ServerAsyncClient, bearer, parse_sse, read_streaming

transactional = pytest.mark.django_db(transaction=True)

UNKNOWN_ID = "6f1c1a8e-0000-4000-8000-000000000000"


async def post(key, path, payload=None):
    headers = bearer(key) if key else {}
    body = payload if payload is not None else {}
    return await ServerAsyncClient().post(path, body, content_type="application/json", headers=headers)


# --- regenerate and edit ---------------------------------------------------------------------------------------


@transactional
async def test_regenerate_streams_the_new_version_over_sse(scripted, owner, owner_key, make_chat):
    chat, q1, q2, q3, q2b = await sync_to_async(branched_chat)(make_chat, owner)
    scripted.tokens = ["A3", " again"]

    response = await post(owner_key, f"/api/v1/chat/{chat.pk}/queries/{q3.pk}/regenerate/stream")

    assert response.status_code == 200 and response["Content-Type"].startswith("text/event-stream")
    events = parse_sse(await read_streaming(response))
    complete = next(e for e in events if e["type"] == "complete")
    assert complete["query"]["response"] == "A3 again"
    assert (complete["query"]["parentId"], complete["query"]["prompt"]) == (str(q2.pk), "Q3")


@transactional
async def test_edit_streams_and_answers_as_json(scripted, owner, owner_key, make_chat):
    chat, q1, q2, q3, q2b = await sync_to_async(branched_chat)(make_chat, owner)

    streamed = await post(owner_key, f"/api/v1/chat/{chat.pk}/queries/{q1.pk}/edit/stream", {"prompt": "Q1 v2"})
    events = parse_sse(await read_streaming(streamed))
    assert next(e for e in events if e["type"] == "complete")["query"]["prompt"] == "Q1 v2"

    answered = await post(owner_key, f"/api/v1/chat/{chat.pk}/queries/{q2b.pk}/edit", {"prompt": "Q2 v3"})
    assert answered.status_code == 201, answered.content
    body = answered.json()
    assert (body["chatQuery"]["prompt"], body["chatQuery"]["parentId"]) == ("Q2 v3", str(q1.pk))
    assert body["chat"]["id"] == str(chat.pk)


# --- reading the tree ------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_get_chat_returns_the_branch_shown_with_parents_and_siblings(owner, owner_key, make_chat):
    chat, q1, q2, q3, q2b = branched_chat(make_chat, owner)

    body = Client().get(f"/api/v1/chat/{chat.pk}", headers=bearer(owner_key)).json()

    assert [q["id"] for q in body["queries"]] == [str(q1.pk), str(q2b.pk)]
    assert [q["parentId"] for q in body["queries"]] == [None, str(q1.pk)]
    assert body["queries"][0]["siblings"] == {"ids": [str(q1.pk)], "index": 0, "count": 1}
    assert body["queries"][1]["siblings"] == {"ids": [str(q2.pk), str(q2b.pk)], "index": 1, "count": 2}
    assert body["branches"]["branch"] == f"/api/v1/chat/{chat.pk}?leaf={{queryId}}"
    assert body["branches"]["tree"] == f"/api/v1/chat/{chat.pk}/tree"


@pytest.mark.django_db
def test_leaf_returns_the_branch_ending_at_any_version(owner, owner_key, make_chat):
    chat, q1, q2, q3, q2b = branched_chat(make_chat, owner)

    body = Client().get(f"/api/v1/chat/{chat.pk}?leaf={q3.pk}", headers=bearer(owner_key)).json()

    assert [q["id"] for q in body["queries"]] == [str(q1.pk), str(q2.pk), str(q3.pk)]
    assert body["queries"][1]["siblings"]["index"] == 0
    # Reading another branch does not change which one is shown.
    shown = Client().get(f"/api/v1/chat/{chat.pk}", headers=bearer(owner_key)).json()
    assert [q["id"] for q in shown["queries"]] == [str(q1.pk), str(q2b.pk)]


@pytest.mark.django_db
def test_leaf_must_be_a_query_of_that_chat(owner, owner_key, make_chat):
    chat, *_ = branched_chat(make_chat, owner)
    elsewhere = queries_of(make_chat(owner, [("Other chat", "Its answer")]))[0]
    client = Client()

    for leaf in (UNKNOWN_ID, "not-a-uuid", elsewhere.pk):
        response = client.get(f"/api/v1/chat/{chat.pk}?leaf={leaf}", headers=bearer(owner_key))
        assert response.status_code == 404, leaf
        assert response.json() == {"error": "Answer not found.", "code": "not_found"}


@pytest.mark.django_db
def test_tree_lists_every_version_with_its_parent(owner, owner_key, make_chat):
    chat, q1, q2, q3, q2b = branched_chat(make_chat, owner)

    body = Client().get(f"/api/v1/chat/{chat.pk}/tree", headers=bearer(owner_key)).json()

    rows = {q["id"]: (q["parentId"], q["selected"], q["shown"]) for q in body["queries"]}
    assert rows == {
        str(q1.pk): (None, True, True),
        str(q2.pk): (str(q1.pk), False, False),
        str(q3.pk): (str(q2.pk), True, False),
        str(q2b.pk): (str(q1.pk), True, True),
    }


# --- selecting a version ---------------------------------------------------------------------------------------


@transactional
async def test_select_shows_that_version_and_continuing_the_chat_follows_it(scripted, owner, owner_key, make_chat):
    chat, q1, q2, q3, q2b = await sync_to_async(branched_chat)(make_chat, owner)

    response = await post(owner_key, f"/api/v1/chat/{chat.pk}/queries/{q2.pk}/select")

    assert response.status_code == 200, response.content
    assert [q["id"] for q in response.json()["queries"]] == [str(q1.pk), str(q2.pk), str(q3.pk)]
    continued = (await post(owner_key, f"/api/v1/chat/{chat.pk}", {"prompt": "Q4"})).json()
    assert continued["chatQuery"]["parentId"] == str(q3.pk)
    assert [m["content"] for m in scripted.calls[-1]["messages"]] == ["Q1", "A1", "Q2", "A2", "Q3", "A3", "Q4"]


@pytest.mark.django_db
def test_the_public_api_shows_the_branch_selected(owner, make_chat):
    chat, q1, q2, q3, q2b = branched_chat(make_chat, owner)
    chat.shared = True
    chat.save()

    body = Client().get(f"/api/v1/public/chat/{chat.pk}").json()

    assert [(q["prompt"], q["response"]) for q in body["queries"]] == [("Q1", "A1"), ("Q2", "A2b")]


@transactional  # the cache is cleared once the selection is committed
def test_selecting_another_version_refreshes_the_public_api(owner, owner_key, make_chat):
    chat, q1, q2, q3, q2b = branched_chat(make_chat, owner)
    chat.shared = True
    chat.save()
    client = Client()
    client.get(f"/api/v1/public/chat/{chat.pk}")  # cached now

    client.post(f"/api/v1/chat/{chat.pk}/queries/{q2.pk}/select", headers=bearer(owner_key))

    body = client.get(f"/api/v1/public/chat/{chat.pk}").json()
    assert [q["response"] for q in body["queries"]] == ["A1", "A2", "A3"]


# --- who may: owner, other user, anonymous ----------------------------------------------------------------------

ACTIONS = [
    ("regenerate", None),
    ("regenerate/stream", None),
    ("edit", {"prompt": "Changed"}),
    ("edit/stream", {"prompt": "Changed"}),
    ("select", None),
]


@transactional
@pytest.mark.parametrize(("action", "body"), ACTIONS)
async def test_another_users_query_is_not_found_and_nothing_changes(
    scripted, owner, other, other_key, make_chat, action, body
):
    chat, q1, q2, q3, q2b = await sync_to_async(branched_chat)(make_chat, owner)
    own_chat = await sync_to_async(make_chat)(other, [("Mine", "Yes")])

    # The owner's chat and query, and the other user's own chat with the owner's query in it.
    for chat_id in (chat.pk, own_chat.pk):
        response = await post(other_key, f"/api/v1/chat/{chat_id}/queries/{q2.pk}/{action}", body)
        assert response.status_code == 404, response.content
        assert response.json()["error"] in ("Answer not found.", "Chat not found.")
    response = await post(other_key, f"/api/v1/chat/{own_chat.pk}/queries/{q2.pk}/{action}", body)
    assert response.json() == {"error": "Answer not found.", "code": "not_found"}
    assert await ChatQuery.objects.filter(chat=chat).acount() == 4
    assert not (await ChatQuery.objects.aget(pk=q2.pk)).selected
    assert scripted.calls == []


@transactional
@pytest.mark.parametrize(("action", "body"), ACTIONS)
async def test_anonymous_callers_get_401(scripted, owner, make_chat, action, body):
    chat, q1, q2, q3, q2b = await sync_to_async(branched_chat)(make_chat, owner)

    response = await post(None, f"/api/v1/chat/{chat.pk}/queries/{q2.pk}/{action}", body)

    assert response.status_code == 401
    assert response.json()["code"] == "unauthenticated"
    assert await ChatQuery.objects.filter(chat=chat).acount() == 4


@pytest.mark.django_db
def test_reading_another_users_tree_or_branch_is_not_found_and_anonymous_is_401(
    owner, other_key, make_chat
):
    chat, q1, *_ = branched_chat(make_chat, owner)
    client = Client()
    for path in (f"/api/v1/chat/{chat.pk}/tree", f"/api/v1/chat/{chat.pk}?leaf={q1.pk}"):
        assert client.get(path, headers=bearer(other_key)).status_code == 404
        assert client.get(path).status_code == 401


# --- bad input -------------------------------------------------------------------------------------------------


@transactional
async def test_bad_version_requests_get_clear_4xx(scripted, owner, owner_key, make_chat):
    chat, q1, q2, q3, q2b = await sync_to_async(branched_chat)(make_chat, owner)
    other_chat = await sync_to_async(make_chat)(owner, [("Elsewhere", "There")])
    base = f"/api/v1/chat/{chat.pk}/queries"

    cases = [
        (f"{base}/{UNKNOWN_ID}/regenerate", None, 404, "not_found"),
        (f"{base}/not-a-uuid/edit", {"prompt": "x"}, 404, "not_found"),
        (f"/api/v1/chat/{other_chat.pk}/queries/{q2.pk}/regenerate", None, 404, "not_found"),  # another chat's
        (f"{base}/{UNKNOWN_ID}/select", None, 404, "not_found"),
        (f"/api/v1/chat/{other_chat.pk}/queries/{q2.pk}/select", None, 404, "not_found"),
        (f"{base}/{q2.pk}/edit", {"prompt": "   "}, 400, "empty_prompt"),
        (f"{base}/{q2.pk}/edit", {}, 400, "invalid_body"),
        (f"{base}/{q2.pk}/regenerate", {"prompt": "changed"}, 400, "invalid_field"),
        (f"{base}/{q2.pk}/regenerate", {"model": "no-such-model"}, 400, "unknown_model"),
        (f"{base}/{q2.pk}/regenerate", ["not", "an", "object"], 400, "invalid_body"),
    ]
    for path, body, status, code in cases:
        response = await post(owner_key, path, body)
        assert response.status_code == status, (path, body, response.content)
        assert response.json()["code"] == code, (path, body)
    assert await ChatQuery.objects.filter(chat=chat).acount() == 4
    assert scripted.calls == []


# --- a constant number of SQL queries, whatever the chat's length ------------------------------------------------


def long_branched_chat(make_chat, owner, turns: int):
    chat = make_chat(owner, [(f"Q{i}", f"A{i}") for i in range(turns)])
    # A second version of the first turn, not shown: the tree is walked whole either way.
    ChatQuery.objects.create(
        chat=chat, prompt="Q0", response="A0b", model=chat.model, status="complete", selected=False
    )
    return chat


@pytest.mark.django_db
def test_get_chat_costs_the_same_queries_for_3_turns_and_30(owner, owner_key, make_chat, django_assert_num_queries):
    client = Client()
    short, long = long_branched_chat(make_chat, owner, 3), long_branched_chat(make_chat, owner, 30)
    client.get(f"/api/v1/chat/{short.pk}", headers=bearer(owner_key))  # warm: the key's first use writes last_used

    with CaptureQueriesContext(connection) as short_queries:
        assert len(client.get(f"/api/v1/chat/{short.pk}", headers=bearer(owner_key)).json()["queries"]) == 3
    with django_assert_num_queries(len(short_queries)):
        assert len(client.get(f"/api/v1/chat/{long.pk}?limit=30", headers=bearer(owner_key)).json()["queries"]) == 30
