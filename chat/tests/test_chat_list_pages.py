"""Chat lists come a page at a time, newest activity first, continued by a cursor (`before`): the API
(GET /api/v1/chat/user, GET /api/v1/user/bookmarked-chats), the sidebar (the next page loads when its end scrolls
into view) and the bookmarked page."""

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from chat.models import Chat
from chat.services import CHAT_PAGE_SIZE, chat_cursor
from testsupport.http import bearer
from testsupport.scripted import SCRIPTED_MODEL

pytestmark = pytest.mark.django_db


def make_chats(user, count: int, same_time: bool = False, **fields) -> list[Chat]:
    """`count` chats, newest first in the returned list; with `same_time` all share one updated_at (ties)."""
    chats = Chat.objects.bulk_create(
        Chat(owner=user, title=f"Chat {n}", model=SCRIPTED_MODEL, **fields) for n in range(count)
    )
    now = timezone.now()
    for n, chat in enumerate(chats):
        Chat.objects.filter(pk=chat.pk).update(updated_at=now if same_time else now - timedelta(seconds=count - n))
    return sorted(Chat.objects.filter(pk__in=[c.pk for c in chats]), key=lambda c: (c.updated_at, c.pk), reverse=True)


def get_json(key, url):
    response = Client().get(url, headers=bearer(key))
    return response.status_code, response.json()


def all_pages(key, url, limit=None) -> tuple[list[str], int]:
    """Every chat id, following nextCursor from the first page to the last; and how many pages it took."""
    ids, cursor, pages = [], None, 0
    for _ in range(100):
        parts = (f"before={cursor}" if cursor else "", f"limit={limit}" if limit else "")
        query = "&".join(part for part in parts if part)
        status, body = get_json(key, f"{url}?{query}" if query else url)
        assert status == 200
        ids += [chat["id"] for chat in body["chats"]]
        pages += 1
        cursor = body["nextCursor"]
        if cursor is None:
            return ids, pages
    raise AssertionError("the pages never ended")


def test_the_api_lists_every_chat_once_page_by_page_newest_first(owner, owner_key):
    chats = make_chats(owner, 2 * CHAT_PAGE_SIZE + 7)

    ids, pages = all_pages(owner_key, "/api/v1/chat/user")

    assert ids == [str(c.pk) for c in chats] and pages == 3


def test_chats_with_the_same_last_activity_are_neither_repeated_nor_skipped(owner, owner_key):
    chats = make_chats(owner, 25, same_time=True)

    ids, pages = all_pages(owner_key, "/api/v1/chat/user", limit=4)

    assert ids == [str(c.pk) for c in chats] and len(set(ids)) == 25 and pages == 7


def test_a_page_keeps_every_field_of_a_chat_and_the_last_page_has_no_cursor(owner, owner_key, make_chat):
    chat = make_chat(owner, [("Hello", "Hi")], system_prompt="Be brief.", web_search=True)

    status, body = get_json(owner_key, "/api/v1/chat/user")

    assert status == 200 and body["nextCursor"] is None
    assert body["chats"] == [chat.as_dict() | {"updatedAt": Chat.objects.get(pk=chat.pk).updated_at.isoformat()}]
    assert body["chats"][0]["systemPrompt"] == "Be brief." and body["chats"][0]["webSearch"] is True


@pytest.mark.parametrize(
    "query",
    [
        "before=yesterday",
        "before=12_notanid",
        "before=99999999999999999999_" + "0" * 32,
        "before=9999999999999999999_" + "0" * 32,
        "limit=0",
        "limit=201",
        "limit=x",
    ],
)
def test_a_malformed_cursor_or_page_size_is_a_400(owner_key, query):
    status, body = get_json(owner_key, f"/api/v1/chat/user?{query}")

    assert status == 400 and body["code"] in ("invalid_cursor", "invalid_field")


def test_the_list_is_the_callers_only_and_needs_a_key(owner, other, owner_key, other_key):
    mine = make_chats(owner, 3)
    theirs = make_chats(other, 3)

    _, owners = get_json(owner_key, f"/api/v1/chat/user?limit=2&before={chat_cursor(theirs[0])}")
    _, others = get_json(other_key, "/api/v1/chat/user")

    assert {c["id"] for c in owners["chats"]} <= {str(c.pk) for c in mine}
    assert [c["id"] for c in others["chats"]] == [str(c.pk) for c in theirs]
    assert Client().get("/api/v1/chat/user").status_code == 401


def test_bookmarked_chats_page_too(owner, other, owner_key):
    bookmarked = make_chats(owner, 7, bookmarked=True)
    make_chats(owner, 5)
    make_chats(other, 4, bookmarked=True)

    ids, pages = all_pages(owner_key, "/api/v1/user/bookmarked-chats", limit=3)

    assert ids == [str(c.pk) for c in bookmarked] and pages == 3
    assert Client().get("/api/v1/user/bookmarked-chats").status_code == 401


# --- the pages ----------------------------------------------------------------------------------------------

NEXT_PAGE = re.compile(r'hx-get="(/chat/sidebar/\?before=[^"&]+)&amp;active=([^"]*)"\s+hx-trigger="intersect once"')


def chat_links(html: str) -> list[str]:
    return re.findall(r'<a href="/chat/([0-9a-f-]+)/" class="chat-link', html)


def test_the_sidebar_shows_a_page_and_loads_the_next_when_its_end_scrolls_into_view(owner, owner_client):
    chats = make_chats(owner, CHAT_PAGE_SIZE + 5)
    active = chats[-1].pk

    first = owner_client.get(f"/chat/{active}/").content.decode()
    assert chat_links(first) == [str(c.pk) for c in chats[:CHAT_PAGE_SIZE]]
    url, active_in_url = NEXT_PAGE.search(first).groups()
    assert active_in_url == str(active)

    second = owner_client.get(f"{url}&active={active}").content.decode()

    assert chat_links(second) == [str(c.pk) for c in chats[CHAT_PAGE_SIZE:]]
    assert "chat-link active" in second  # the open chat is marked in whichever page it is
    assert NEXT_PAGE.search(second) is None and "No chats yet" not in second and 'id="chat-list"' not in second


def test_the_sidebars_pages_are_the_users_own_and_need_a_login(owner, other, owner_client, other_client):
    make_chats(owner, CHAT_PAGE_SIZE + 1)
    url, _ = NEXT_PAGE.search(owner_client.get("/chat/sidebar/").content.decode()).groups()

    assert chat_links(other_client.get(url).content.decode()) == []  # a cursor positions, it does not authorise
    anonymous = Client().get(url)
    assert anonymous.status_code == 302 and "/login" in anonymous["Location"]
    assert owner_client.get("/chat/sidebar/?before=nonsense").status_code == 400


def test_a_short_sidebar_has_no_next_page(owner, owner_client):
    make_chats(owner, 2)

    html = owner_client.get("/chat/sidebar/").content.decode()

    assert len(chat_links(html)) == 2 and "before=" not in html


def test_the_bookmarked_page_loads_older_bookmarks_when_scrolled_to_its_end(owner, other_client, owner_client):
    bookmarked = make_chats(owner, CHAT_PAGE_SIZE + 2, bookmarked=True)

    first = owner_client.get("/chat/bookmarked/").content.decode()
    url = re.search(r'hx-get="(/chat/bookmarked/\?before=[^"]+)" hx-trigger="revealed"', first)[1]
    second = owner_client.get(url).content.decode()

    found = re.findall(r'<li><a href="/chat/([0-9a-f-]+)/">', first + second)
    assert found == [str(c.pk) for c in bookmarked]
    assert "<main" not in second and "before=" not in second
    assert re.findall(r'<li><a href="/chat/', other_client.get(url).content.decode()) == []
    assert Client().get(url).status_code == 302
