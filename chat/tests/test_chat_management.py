"""Managing chats: rename, bookmark, delete, and the newest-first list behind the sidebar."""

import json
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.test import Client
from django.utils import timezone

from chat.models import Chat, ChatQuery
from testsupport.http import ServerAsyncClient, bearer


@pytest.fixture
def chat(owner, make_chat):
    return make_chat(owner, [("Plan a trip to Lisbon", "Day 1: Alfama.")])


def api(key, method, path, body=None):
    kwargs = {"data": json.dumps(body), "content_type": "application/json"} if body is not None else {}
    return getattr(Client(), method)(path, headers=bearer(key), **kwargs)


def age(chats_with_minutes_ago):
    """Give each chat a distinct last-activity time, `minutes` ago."""
    now = timezone.now()
    for chat, minutes in chats_with_minutes_ago:
        Chat.objects.filter(pk=chat.pk).update(updated_at=now - timedelta(minutes=minutes))


def listed_titles(key) -> list[str]:
    return [c["title"] for c in api(key, "get", "/api/v1/chat/user").json()["chats"]]


# --- rename --------------------------------------------------------------------------------------------------


def test_rename_through_the_api(chat, owner_key):
    response = api(owner_key, "patch", f"/api/v1/chat/{chat.pk}", {"title": "  Lisbon   in May "})

    assert response.status_code == 200
    assert response.json()["chat"]["title"] == "Lisbon in May"
    chat.refresh_from_db()
    assert chat.title == "Lisbon in May"
    assert api(owner_key, "get", f"/api/v1/chat/{chat.pk}").json()["chat"]["title"] == "Lisbon in May"


@pytest.mark.parametrize(
    "body,code",
    [
        ({"title": ""}, "invalid_title"),
        ({"title": "   "}, "invalid_title"),
        ({"title": "x" * 201}, "invalid_title"),
        ({}, "invalid_body"),
        ({"title": 5}, "invalid_body"),
    ],
)
def test_rename_refuses_bad_titles(chat, owner_key, body, code):
    response = api(owner_key, "patch", f"/api/v1/chat/{chat.pk}", body)

    assert response.status_code == 400
    assert response.json()["code"] == code
    chat.refresh_from_db()
    assert chat.title == "Plan a trip to Lisbon"


def test_rename_through_the_page(chat, owner_client):
    response = owner_client.post(f"/chat/{chat.pk}/rename/", {"title": "Lisbon"})

    assert response.status_code == 200
    assert response["HX-Trigger"] == "chats-changed"  # the sidebar reloads itself
    assert 'value="Lisbon"' in response.content.decode()
    chat.refresh_from_db()
    assert chat.title == "Lisbon"


@pytest.mark.parametrize("data", [{"title": ""}, {"title": "  "}, {}])
def test_rename_through_the_page_refuses_an_empty_title(chat, owner_client, data):
    response = owner_client.post(f"/chat/{chat.pk}/rename/", data)

    assert response.status_code == 400
    assert response.content.decode() == "The title is empty."
    chat.refresh_from_db()
    assert chat.title == "Plan a trip to Lisbon"


# --- bookmarks -----------------------------------------------------------------------------------------------


def test_bookmark_toggles_with_an_empty_body_and_sets_with_a_value(chat, owner_key):
    url = f"/api/v1/chat/{chat.pk}/bookmark"
    assert api(owner_key, "patch", url).json()["chat"]["bookmarked"] is True
    assert api(owner_key, "patch", url).json()["chat"]["bookmarked"] is False
    assert api(owner_key, "patch", url, {"bookmarked": True}).json()["chat"]["bookmarked"] is True
    assert api(owner_key, "patch", url, {"bookmarked": True}).json()["chat"]["bookmarked"] is True
    chat.refresh_from_db()
    assert chat.bookmarked

    refused = api(owner_key, "patch", url, {"bookmarked": "no"})
    assert (refused.status_code, refused.json()["code"]) == (400, "invalid_field")
    chat.refresh_from_db()
    assert chat.bookmarked


def test_bookmarked_chats_lists_only_bookmarked_ones_newest_first(owner, owner_key, other, make_chat):
    older = make_chat(owner, [("Older", "a")])
    newer = make_chat(owner, [("Newer", "b")])
    make_chat(owner, [("Not bookmarked", "c")])
    make_chat(other, [("Someone else's", "d")], bookmarked=True)
    age([(older, 10), (newer, 5)])
    for c in (older, newer):
        api(owner_key, "patch", f"/api/v1/chat/{c.pk}/bookmark")

    chats = api(owner_key, "get", "/api/v1/user/bookmarked-chats").json()["chats"]

    assert [c["title"] for c in chats] == ["Newer", "Older"]
    assert all(c["bookmarked"] for c in chats)


def test_the_bookmark_page_toggle_and_the_bookmarked_page(chat, owner, owner_client, make_chat):
    make_chat(owner, [("Not bookmarked", "c")])

    response = owner_client.post(f"/chat/{chat.pk}/bookmark/")
    assert response.status_code == 200
    assert response["HX-Trigger"] == "chats-changed"
    assert "★ Bookmarked" in response.content.decode()

    page = owner_client.get("/chat/bookmarked/").content.decode()
    assert "Plan a trip to Lisbon" in page
    assert f'href="/chat/{chat.pk}/"' in page
    assert "Not bookmarked" not in page

    owner_client.post(f"/chat/{chat.pk}/bookmark/")
    assert "Plan a trip to Lisbon" not in owner_client.get("/chat/bookmarked/").content.decode()


# --- delete --------------------------------------------------------------------------------------------------


def test_delete_through_the_api(chat, owner_key):
    query_ids = list(chat.queries.values_list("pk", flat=True))

    response = api(owner_key, "delete", f"/api/v1/chat/{chat.pk}")

    assert response.status_code == 204
    assert response.content == b""
    assert api(owner_key, "get", f"/api/v1/chat/{chat.pk}").status_code == 404
    assert api(owner_key, "delete", f"/api/v1/chat/{chat.pk}").status_code == 404
    assert not ChatQuery.objects.filter(pk__in=query_ids).exists()
    assert listed_titles(owner_key) == []


def test_delete_through_the_page_redirects_to_a_new_chat(chat, owner_client):
    response = owner_client.post(f"/chat/{chat.pk}/delete/")

    assert response.status_code == 204
    assert response["HX-Redirect"] == "/chat/"
    assert not Chat.objects.filter(pk=chat.pk).exists()
    assert owner_client.get(f"/chat/{chat.pk}/").status_code == 404


# --- the newest-first list -----------------------------------------------------------------------------------


def test_the_chat_list_is_newest_first(owner, owner_key, make_chat):
    chats = [make_chat(owner, [(title, "answer")]) for title in ("Monday", "Tuesday", "Wednesday")]
    age([(chats[0], 30), (chats[1], 10), (chats[2], 20)])

    assert listed_titles(owner_key) == ["Tuesday", "Wednesday", "Monday"]


def test_renaming_does_not_reorder_the_list(owner, owner_key, make_chat):
    older, newer = make_chat(owner, [("Older", "a")]), make_chat(owner, [("Newer", "b")])
    age([(older, 10), (newer, 5)])

    api(owner_key, "patch", f"/api/v1/chat/{older.pk}", {"title": "Older, renamed"})

    assert listed_titles(owner_key) == ["Newer", "Older, renamed"]


@pytest.mark.django_db(transaction=True)
async def test_a_new_turn_moves_a_chat_to_the_top_and_a_bookmark_does_not(scripted, owner, owner_key, make_chat):
    def arrange():
        chats = [make_chat(owner, [(title, "answer")]) for title in ("Oldest", "Middle", "Newest")]
        age([(chats[0], 30), (chats[1], 20), (chats[2], 10)])
        return chats

    oldest, middle, newest = await sync_to_async(arrange)()
    client = ServerAsyncClient()

    async def titles():
        response = await client.get("/api/v1/chat/user", headers=bearer(owner_key))
        return [c["title"] for c in response.json()["chats"]]

    assert await titles() == ["Newest", "Middle", "Oldest"]

    turn = await client.post(
        f"/api/v1/chat/{oldest.pk}",
        {"prompt": "One more thing"},
        content_type="application/json",
        headers=bearer(owner_key),
    )
    assert turn.status_code == 200
    assert await titles() == ["Oldest", "Newest", "Middle"]

    for flag in ("bookmark", "share", "bookmark"):
        response = await client.patch(f"/api/v1/chat/{middle.pk}/{flag}", headers=bearer(owner_key))
        assert response.status_code == 200
    assert await titles() == ["Oldest", "Newest", "Middle"]


def test_the_sidebar_follows_the_same_order(owner, owner_client, make_chat):
    chats = [make_chat(owner, [(title, "answer")]) for title in ("Alpha", "Beta", "Gamma")]
    age([(chats[0], 5), (chats[1], 15), (chats[2], 10)])

    html = owner_client.get("/chat/sidebar/").content.decode()

    assert html.index("Alpha") < html.index("Gamma") < html.index("Beta")
