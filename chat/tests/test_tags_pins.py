"""Tags (normalised, bounded, the owner's alone, a filter for the API list and the sidebar) and pins (pinned chats
first in the sidebar and the API list, the pages' cursors still covering every chat exactly once)."""

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from chat import library
from chat.models import Chat, Tag
from testsupport.html import Elements
from testsupport.http import bearer
from testsupport.scripted import SCRIPTED_MODEL

pytestmark = pytest.mark.django_db

API = "/api/v1/chat"


def api(method, key, url, body=None):
    kwargs = {"headers": bearer(key)} if key else {}
    if body is not None:
        kwargs.update(data=body, content_type="application/json")
    return getattr(Client(), method)(url, **kwargs)


def new_chat(user, title="A chat", **fields):
    return Chat.objects.create(owner=user, title=title, model=SCRIPTED_MODEL, **fields)


def aged_chats(user, count: int) -> list[Chat]:
    """`count` chats, the newest first, each a second older than the one before."""
    chats = [new_chat(user, f"Chat {n}") for n in range(count)]
    now = timezone.now()
    for n, chat in enumerate(chats):
        Chat.objects.filter(pk=chat.pk).update(updated_at=now - timedelta(seconds=n))
    return chats


# --- tags -------------------------------------------------------------------------------------------------------


def test_tags_are_normalised_kept_once_and_sorted(owner, owner_key):
    chat = new_chat(owner)
    tags = ["Work", "#ideas", "work", " road_trip ", "été-2"]
    response = api("put", owner_key, f"{API}/{chat.pk}/tags", {"tags": tags})
    assert response.status_code == 200
    assert response.json()["chat"]["tags"] == ["ideas", "road_trip", "work", "été-2"]
    assert api("get", owner_key, f"{API}/{chat.pk}").json()["chat"]["tags"] == ["ideas", "road_trip", "work", "été-2"]
    assert api("put", owner_key, f"{API}/{chat.pk}/tags", {"tags": ["work"]}).json()["chat"]["tags"] == ["work"]
    # Tags no chat carries any more are forgotten.
    assert sorted(Tag.objects.filter(owner=owner).values_list("name", flat=True)) == ["work"]
    assert api("get", owner_key, f"{API}/tags").json()["tags"] == [{"name": "work", "chats": 1}]


@pytest.mark.parametrize(
    "tags, code",
    [
        (["two words"], "invalid_tag"),
        (["<b>"], "invalid_tag"),
        (["x" * 31], "invalid_tag"),
        ([""], "invalid_tag"),
        ([f"t{n}" for n in range(21)], "too_many_tags"),
        ([f"t{n}" for n in range(500)], "too_many_tags"),
    ],
)
def test_bad_tags_are_refused_with_400_and_nothing_changes(owner, owner_key, tags, code):
    chat = new_chat(owner)
    library.do_set_tags(owner, chat.pk, ["kept"])
    response = api("put", owner_key, f"{API}/{chat.pk}/tags", {"tags": tags})
    assert response.status_code == 400 and response.json()["code"] == code
    assert Chat.objects.get(pk=chat.pk).tag_names == ["kept"]


def test_tag_bodies_that_are_not_lists_of_text_are_400(owner, owner_key):
    chat = new_chat(owner)
    for body in ({}, {"tags": "work"}, {"tags": [1, 2]}, {"tags": None}):
        assert api("put", owner_key, f"{API}/{chat.pk}/tags", body).status_code == 400, body
    assert api("put", owner_key, f"{API}/{chat.pk}/tags", {"tags": [f"t{n}" for n in range(20)]}).status_code == 200


def test_only_the_owner_tags_a_chat_and_tags_never_cross_users(owner, other, owner_key, other_key):
    mine, theirs = new_chat(owner, "mine"), new_chat(other, "theirs")
    library.do_set_tags(other, theirs.pk, ["secret"])
    assert api("put", other_key, f"{API}/{mine.pk}/tags", {"tags": ["x"]}).status_code == 404
    assert api("put", None, f"{API}/{mine.pk}/tags", {"tags": ["x"]}).status_code == 401
    assert api("get", None, f"{API}/tags").status_code == 401
    assert Chat.objects.get(pk=mine.pk).tag_names == []
    library.do_set_tags(owner, mine.pk, ["secret"])
    assert [c["title"] for c in api("get", owner_key, f"{API}/user?tag=secret").json()["chats"]] == ["mine"]
    assert [c["title"] for c in api("get", other_key, f"{API}/user?tag=SECRET").json()["chats"]] == ["theirs"]
    assert api("get", owner_key, f"{API}/user?tag=not%20a%20tag").status_code == 400


def test_the_sidebar_shows_tag_chips_that_filter_the_list(owner, owner_client):
    tagged, plain = new_chat(owner, "Tagged"), new_chat(owner, "Plain")
    library.do_set_tags(owner, tagged.pk, ["work"])
    page = Elements(owner_client.get("/chat/").content.decode())
    (chip,) = page.find("button", class_="tag-chip")
    assert chip[1] == "#work" and chip[0]["hx-get"].startswith("/chat/sidebar/?tag=work")

    filtered = owner_client.get("/chat/sidebar/?tag=work")
    links = [text for _, text in Elements(filtered.content.decode()).find("a", class_="chat-link")]
    assert links == ["Tagged"]
    assert "Show all chats" in filtered.content.decode()
    assert owner_client.get("/chat/sidebar/?tag=bad%20tag").status_code == 400
    assert plain.pk  # the untagged chat is not in the filtered list


def test_the_menu_sets_tags_and_shows_a_refusal(owner, other_client, owner_client, client):
    chat = new_chat(owner)
    saved = owner_client.post(f"/chat/{chat.pk}/tags/", {"tags": "Work, ideas  road-trip"})
    assert saved.status_code == 200 and saved["HX-Trigger"] == "chats-changed"
    assert Chat.objects.get(pk=chat.pk).tag_names == ["ideas", "road-trip", "work"]
    (field,) = Elements(saved.content.decode()).find("input", name="tags")
    assert field[0]["value"] == "ideas, road-trip, work"

    refused = owner_client.post(f"/chat/{chat.pk}/tags/", {"tags": "<script>"})
    assert refused.status_code == 400
    assert "is not a tag" in refused.content.decode() and "<script>" not in refused.content.decode()
    assert Chat.objects.get(pk=chat.pk).tag_names == ["ideas", "road-trip", "work"]
    assert other_client.post(f"/chat/{chat.pk}/tags/", {"tags": "x"}).status_code == 404
    assert other_client.get(f"/chat/{chat.pk}/menu/").status_code == 404
    assert client.post(f"/chat/{chat.pk}/tags/", {"tags": "x"}).status_code == 302
    assert client.get(f"/chat/{chat.pk}/menu/").status_code == 302
    assert Chat.objects.get(pk=chat.pk).tag_names == ["ideas", "road-trip", "work"]


# --- pins -------------------------------------------------------------------------------------------------------


def test_pin_toggles_or_sets_and_is_not_activity(owner, owner_key):
    chat = new_chat(owner)
    before = Chat.objects.get(pk=chat.pk).updated_at
    assert api("patch", owner_key, f"{API}/{chat.pk}/pin").json()["chat"]["pinned"] is True
    assert api("patch", owner_key, f"{API}/{chat.pk}/pin", {"pinned": True}).json()["chat"]["pinned"] is True
    assert Chat.objects.get(pk=chat.pk).pinned_at is not None
    assert api("patch", owner_key, f"{API}/{chat.pk}/pin").json()["chat"]["pinned"] is False
    saved = Chat.objects.get(pk=chat.pk)
    assert (saved.pinned, saved.pinned_at, saved.updated_at) == (False, None, before)
    bad = api("patch", owner_key, f"{API}/{chat.pk}/pin", {"pinned": "yes"})
    assert bad.status_code == 400


def test_only_the_owner_pins(owner, owner_key, other_key):
    chat = new_chat(owner)
    assert api("patch", other_key, f"{API}/{chat.pk}/pin").status_code == 404
    assert api("patch", None, f"{API}/{chat.pk}/pin").status_code == 401
    assert api("patch", owner_key, f"{API}/not-a-chat/pin").status_code == 404
    assert Chat.objects.get(pk=chat.pk).pinned is False


def test_pinned_chats_come_first_and_the_pages_cover_every_chat_once(owner, owner_key):
    chats = aged_chats(owner, 12)
    pinned = [chats[5], chats[9], chats[11]]  # older chats, pinned
    for chat in pinned:
        library.do_set_pinned(owner, chat.pk, True)

    ids, cursor = [], None
    for _ in range(20):
        url = f"{API}/user?limit=2" + (f"&before={cursor}" if cursor else "")
        body = api("get", owner_key, url).json()
        ids += [c["id"] for c in body["chats"]]
        cursor = body["nextCursor"]
        if cursor is None:
            break
    expected = [str(c.pk) for c in pinned] + [str(c.pk) for c in chats if c not in pinned]
    assert ids == expected
    only_pinned = api("get", owner_key, f"{API}/user?pinned=true").json()["chats"]
    assert [c["id"] for c in only_pinned] == [str(c.pk) for c in pinned]
    assert len(api("get", owner_key, f"{API}/user?pinned=false").json()["chats"]) == 9
    assert api("get", owner_key, f"{API}/user?pinned=maybe").status_code == 400
    assert api("get", owner_key, f"{API}/user?before=pnot_a_cursor").status_code == 400


def test_the_sidebar_lists_pinned_chats_first_even_when_filed_and_pages_on(owner, owner_client):
    chats = aged_chats(owner, 55)
    folder = library.do_create_folder(owner, "Archive")
    library.do_move_chat(owner, chats[40].pk, folder.pk)
    library.do_set_pinned(owner, chats[40].pk, True)  # filed and pinned: at the top all the same
    library.do_move_chat(owner, chats[41].pk, folder.pk)  # filed only: in its folder

    first = owner_client.get("/chat/sidebar/").content.decode()
    links = Elements(first).find("a", class_="chat-link")
    assert links[0][1].endswith("Chat 40") and "📌" in links[0][1]
    more = Elements(first).find("div", class_="chat-list-more muted")[0][0]["hx-get"]
    rest = owner_client.get(more).content.decode()
    titles = [text for _, text in Elements(first).find("a", class_="chat-link")] + [
        text for _, text in Elements(rest).find("a", class_="chat-link")
    ]
    assert len(titles) == 54 and len(set(titles)) == 54  # 55 chats, less the one only filed
    assert not any(title.endswith("Chat 41") for title in titles)


def test_the_menu_pins_and_the_sidebar_is_told(owner, owner_client, other_client):
    chat = new_chat(owner)
    menu = owner_client.get(f"/chat/{chat.pk}/menu/")
    assert "Pin to the top" in menu.content.decode()
    pinned = owner_client.post(f"/chat/{chat.pk}/pin/")
    assert pinned.status_code == 200 and pinned["HX-Trigger"] == "chats-changed"
    assert "Unpin" in pinned.content.decode() and Chat.objects.get(pk=chat.pk).pinned
    assert other_client.post(f"/chat/{chat.pk}/pin/").status_code == 404
    assert owner_client.get(f"/chat/{chat.pk}/pin/").status_code == 405
    assert Chat.objects.get(pk=chat.pk).pinned


def test_the_chat_header_offers_the_organize_menu(owner, owner_client):
    chat = new_chat(owner)
    page = Elements(owner_client.get(f"/chat/{chat.pk}/").content.decode())
    (body,) = page.find("div", class_="chat-menu-body")
    assert body[0]["hx-get"] == f"/chat/{chat.pk}/menu/"
