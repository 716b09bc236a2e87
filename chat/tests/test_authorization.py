"""Every API endpoint and HTMX page, walked as the owner, another user and an anonymous client.

Anonymous callers get 401 (API) or the login page (HTML); another user gets 404, never 403, for someone
else's chat or answer, and nothing changes; the owner succeeds."""

import json

import pytest
from django.test import Client

from chat.models import Chat, ChatQuery
from testsupport.http import ServerAsyncClient, bearer, parse_sse, read_streaming

transactional = pytest.mark.django_db(transaction=True)

# (method, path, JSON body or None, status for the owner). {chat} and {query} are the owner's.
CHAT_ENDPOINTS = [
    ("post", "/api/v1/chat/{chat}", {"prompt": "Follow-up"}, 200),
    ("post", "/api/v1/chat/{chat}/stream", {"prompt": "Follow-up"}, 200),
    ("get", "/api/v1/chat/{chat}", None, 200),
    ("get", "/api/v1/chat/{chat}/documents", None, 200),
    ("patch", "/api/v1/chat/{chat}", {"title": "Renamed"}, 200),
    ("patch", "/api/v1/chat/{chat}/share", None, 200),
    ("patch", "/api/v1/chat/{chat}/bookmark", None, 200),
    ("delete", "/api/v1/chat/{chat}", None, 204),
    ("get", "/api/v1/chat/queries/{query}/events", None, 200),
    ("post", "/api/v1/chat/queries/{query}/stop", None, 200),
]
ACCOUNT_ENDPOINTS = [
    ("post", "/api/v1/chat", {"prompt": "Hello"}, 201),
    ("post", "/api/v1/chat/stream", {"prompt": "Hello"}, 200),
    ("get", "/api/v1/chat/user", None, 200),
    ("get", "/api/v1/user", None, 200),
    ("get", "/api/v1/user/bookmarked-chats", None, 200),
]
PRIVATE_ENDPOINTS = CHAT_ENDPOINTS + ACCOUNT_ENDPOINTS
STARTS_A_GENERATION = {
    ("post", "/api/v1/chat"),
    ("post", "/api/v1/chat/stream"),
    ("post", "/api/v1/chat/{chat}"),
    ("post", "/api/v1/chat/{chat}/stream"),
}
STREAMS = {"/api/v1/chat/stream", "/api/v1/chat/{chat}/stream", "/api/v1/chat/queries/{query}/events"}
LIVE_ENDPOINTS = [r for r in PRIVATE_ENDPOINTS if (r[0], r[1]) in STARTS_A_GENERATION or r[1] in STREAMS]
PLAIN_ENDPOINTS = [r for r in PRIVATE_ENDPOINTS if r not in LIVE_ENDPOINTS]


def endpoint_id(row) -> str:
    return f"{row[0].upper()} {row[1]}"


@pytest.fixture
def owned(owner, make_chat):
    chat = make_chat(owner, [("What is the capital of France?", "Paris.")], system_prompt="Be terse.")
    return chat, chat.queries.get()


def fill(path: str, chat: Chat, query: ChatQuery) -> str:
    return path.format(chat=chat.pk, query=query.pk)


def call(client, method, path, body, headers=None):
    kwargs = {"headers": headers or {}}
    if body is not None:
        kwargs.update(data=json.dumps(body), content_type="application/json")
    return getattr(client, method)(path, **kwargs)


def snapshot() -> list:
    """Everything an endpoint could change: every chat and answer, field by field."""
    return [c.as_dict() for c in Chat.objects.order_by("pk")] + [q.as_dict() for q in ChatQuery.objects.order_by("pk")]


@pytest.mark.parametrize("credentials", [None, "Bearer qnx_not-a-real-key", "Token something"], ids=str)
@pytest.mark.parametrize("method,path,body,_", PRIVATE_ENDPOINTS, ids=[endpoint_id(r) for r in PRIVATE_ENDPOINTS])
def test_anonymous_callers_get_401_and_change_nothing(owned, method, path, body, _, credentials):
    before = snapshot()

    response = call(Client(), method, fill(path, *owned), body, {"Authorization": credentials} if credentials else {})

    assert response.status_code == 401, response.content
    assert response.json()["code"] == "unauthenticated"
    assert "Bearer" in response.json()["error"]
    assert snapshot() == before


@pytest.mark.parametrize("method,path,body,_", CHAT_ENDPOINTS, ids=[endpoint_id(r) for r in CHAT_ENDPOINTS])
def test_another_user_gets_404_never_403_and_changes_nothing(scripted, owned, other_key, method, path, body, _):
    before = snapshot()

    response = call(Client(), method, fill(path, *owned), body, bearer(other_key))

    assert response.status_code == 404, response.content
    assert response.json()["code"] == "not_found"
    assert snapshot() == before
    assert scripted.calls == []


@pytest.mark.parametrize(
    "method,path,body,status",
    PLAIN_ENDPOINTS,
    ids=[endpoint_id(r) for r in PLAIN_ENDPOINTS],
)
def test_the_owner_succeeds(owned, owner_key, method, path, body, status):
    response = call(Client(), method, fill(path, *owned), body, bearer(owner_key))

    assert response.status_code == status, response.content


def test_owner_changes_are_applied(owned, owner_key):
    chat, query = owned
    client = Client()
    call(client, "patch", f"/api/v1/chat/{chat.pk}", {"title": "Renamed"}, bearer(owner_key))
    call(client, "patch", f"/api/v1/chat/{chat.pk}/share", None, bearer(owner_key))
    call(client, "patch", f"/api/v1/chat/{chat.pk}/bookmark", None, bearer(owner_key))
    chat.refresh_from_db()
    assert (chat.title, chat.shared, chat.bookmarked) == ("Renamed", True, True)

    detail = call(client, "get", f"/api/v1/chat/{chat.pk}", None, bearer(owner_key)).json()
    assert detail["chat"]["id"] == str(chat.pk)
    assert [q["id"] for q in detail["queries"]] == [str(query.pk)]

    stop = call(client, "post", f"/api/v1/chat/queries/{query.pk}/stop", None, bearer(owner_key)).json()
    assert stop == {"stopped": False, "queryId": str(query.pk)}  # already complete: nothing to stop

    assert call(client, "delete", f"/api/v1/chat/{chat.pk}", None, bearer(owner_key)).status_code == 204
    assert not Chat.objects.filter(pk=chat.pk).exists()
    assert not ChatQuery.objects.filter(pk=query.pk).exists()


@transactional
@pytest.mark.parametrize(
    "method,path,body,status",
    LIVE_ENDPOINTS,
    ids=[endpoint_id(r) for r in LIVE_ENDPOINTS],
)
async def test_the_owner_can_start_and_follow_generations(scripted, owned, owner_key, method, path, body, status):
    chat, query = owned
    response = await call(ServerAsyncClient(), method, fill(path, chat, query), body, bearer(owner_key))

    assert response.status_code == status, getattr(response, "content", b"")
    if path in STREAMS:
        events = parse_sse(await read_streaming(response))
        assert [e["type"] for e in events][-2:] == ["complete", "done"]
        answer = events[-2]["query"]
    else:
        answer = response.json()["chatQuery"]
    assert answer["status"] == "complete"
    if "{chat}" in path or "{query}" in path:
        assert answer["chatId"] == str(chat.pk)
    if (method, path) in STARTS_A_GENERATION:
        assert answer["response"] == "".join(scripted.tokens)
        assert len(scripted.calls) == 1
    else:
        assert answer["id"] == str(query.pk)
        assert scripted.calls == []


def test_lists_and_account_show_only_the_callers_own_data(owned, owner_key, other, other_key, make_chat):
    chat, _ = owned
    Chat.objects.filter(pk=chat.pk).update(bookmarked=True, shared=True)
    theirs = make_chat(other, [("Their question", "Their answer")], bookmarked=True)
    client = Client()

    for key, own_chat in ((other_key, theirs), (owner_key, chat)):
        listed = client.get("/api/v1/chat/user", headers=bearer(key)).json()["chats"]
        bookmarked = client.get("/api/v1/user/bookmarked-chats", headers=bearer(key)).json()["chats"]
        assert [c["id"] for c in listed] == [str(own_chat.pk)]
        assert [c["id"] for c in bookmarked] == [str(own_chat.pk)]

    me = client.get("/api/v1/user", headers=bearer(other_key)).json()
    assert (me["id"], me["email"]) == (other.pk, other.email)


@pytest.mark.parametrize("credentials", [None, "owner", "other"])
def test_open_endpoints_need_no_credentials(owned, owner_key, other_key, credentials):
    chat, _ = owned
    Chat.objects.filter(pk=chat.pk).update(shared=True)
    headers = {None: {}, "owner": bearer(owner_key), "other": bearer(other_key)}[credentials]
    client = Client()

    assert client.get("/api/v1/health", headers=headers).json() == {"status": "ok"}
    assert client.get("/api/v1/help", headers=headers).status_code == 200
    assert client.get("/api/v1/chat/models", headers=headers).json()["models"]
    public = client.get(f"/api/v1/public/chat/{chat.pk}", headers=headers)
    assert public.status_code == 200
    assert public.json()["chat"]["id"] == str(chat.pk)


@pytest.mark.parametrize("credentials", [None, "owner", "other"])
def test_an_unshared_chat_has_no_public_view_for_anyone(owned, owner_key, other_key, credentials):
    chat, _ = owned
    headers = {None: {}, "owner": bearer(owner_key), "other": bearer(other_key)}[credentials]

    response = Client().get(f"/api/v1/public/chat/{chat.pk}", headers=headers)

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


# --- HTMX pages --------------------------------------------------------------------------------------------

# (method, path, form data, status for the owner)
CHAT_PAGES = [
    ("get", "/chat/{chat}/", None, 200),
    ("post", "/chat/{chat}/rename/", {"title": "Renamed"}, 200),
    ("post", "/chat/{chat}/share/", None, 200),
    ("post", "/chat/{chat}/bookmark/", None, 200),
    ("post", "/chat/{chat}/delete/", None, 204),
]
ACCOUNT_PAGES = ["/chat/", "/chat/bookmarked/", "/chat/sidebar/", "/accounts/"]


def page_call(client, method, path, data):
    return getattr(client, method)(path, data or {})


@pytest.mark.parametrize("method,path,data,_", CHAT_PAGES, ids=[endpoint_id(r) for r in CHAT_PAGES])
def test_anonymous_visitors_are_sent_to_login(owned, method, path, data, _):
    before = snapshot()
    url = fill(path, *owned)

    response = page_call(Client(), method, url, data)

    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={url}"
    assert snapshot() == before


@pytest.mark.parametrize("path", ACCOUNT_PAGES)
def test_anonymous_visitors_are_sent_to_login_from_account_pages(db, path):
    response = Client().get(path)

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


@pytest.mark.parametrize("method,path,data,_", CHAT_PAGES, ids=[endpoint_id(r) for r in CHAT_PAGES])
def test_another_user_gets_404_on_someone_elses_chat_pages(owned, other_client, method, path, data, _):
    before = snapshot()

    response = page_call(other_client, method, fill(path, *owned), data)

    assert response.status_code == 404
    assert snapshot() == before


@pytest.mark.parametrize("method,path,data,status", CHAT_PAGES, ids=[endpoint_id(r) for r in CHAT_PAGES])
def test_the_owner_can_use_their_chat_pages(owned, owner_client, method, path, data, status):
    response = page_call(owner_client, method, fill(path, *owned), data)

    assert response.status_code == status


@pytest.mark.parametrize("path", ACCOUNT_PAGES)
def test_account_pages_never_show_another_users_chat(owned, other_client, owner_client, path):
    chat, _ = owned
    Chat.objects.filter(pk=chat.pk).update(bookmarked=True)

    assert chat.title not in other_client.get(path).content.decode()
    if path != "/accounts/":
        assert chat.title in owner_client.get(path).content.decode()


@pytest.mark.parametrize("who", ["anonymous", "owner", "other"])
def test_the_public_page_depends_only_on_sharing(owned, owner_client, other_client, who):
    chat, _ = owned
    client = {"anonymous": Client(), "owner": owner_client, "other": other_client}[who]

    assert client.get(f"/share/{chat.pk}/").status_code == 404
    Chat.objects.filter(pk=chat.pk).update(shared=True)
    page = client.get(f"/share/{chat.pk}/")
    assert page.status_code == 200
    assert chat.title in page.content.decode()


@pytest.mark.parametrize("path", ["/chat/{chat}/rename/", "/chat/{chat}/share/", "/chat/{chat}/bookmark/"])
def test_chat_actions_refuse_get(owned, owner_client, path):
    before = snapshot()

    assert owner_client.get(fill(path, *owned)).status_code == 405
    assert snapshot() == before


QUERY_ENDPOINTS = [(m, p) for m, p, _, _ in CHAT_ENDPOINTS if "{query}" in p]
MALFORMED_QUERY_IDS = ["not-a-uuid", "12345", "6f1c1a8e-0000-4000-8000"]


@pytest.mark.parametrize("query_id", MALFORMED_QUERY_IDS)
@pytest.mark.parametrize("method,path", QUERY_ENDPOINTS, ids=[f"{m.upper()} {p}" for m, p in QUERY_ENDPOINTS])
@pytest.mark.parametrize("who", ["owner", "other"])
def test_a_malformed_query_id_is_an_answer_not_found(owned, owner_key, other_key, who, method, path, query_id):
    """Not "Chat not found.": what was looked up is an answer."""
    before = snapshot()
    key = owner_key if who == "owner" else other_key

    response = call(Client(), method, path.format(query=query_id), None, bearer(key))

    assert response.status_code == 404, response.content
    assert response.json() == {"error": "Answer not found.", "code": "not_found"}
    assert snapshot() == before


@pytest.mark.parametrize("method,path", QUERY_ENDPOINTS, ids=[f"{m.upper()} {p}" for m, p in QUERY_ENDPOINTS])
def test_a_malformed_query_id_asks_an_anonymous_caller_to_authenticate_first(owned, method, path):
    response = call(Client(), method, path.format(query="not-a-uuid"), None)

    assert response.status_code == 401, response.content
    assert response.json()["code"] == "unauthenticated"


@pytest.mark.parametrize("who", ["owner", "other"])
def test_a_malformed_chat_id_is_still_a_chat_not_found(owned, owner_key, other_key, who):
    response = Client().get("/api/v1/chat/not-a-uuid", headers=bearer(owner_key if who == "owner" else other_key))

    assert response.status_code == 404, response.content
    assert response.json() == {"error": "Chat not found.", "code": "not_found"}
