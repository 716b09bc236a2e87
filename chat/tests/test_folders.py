"""Folders: created, renamed and deleted (their chats kept) by their owner alone, chats filed into them from the API,
the chat's menu or a drag onto the sidebar, and the sidebar and the API list costing the same SQL queries for 3 and
50 chats whatever the folders and tags."""

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from chat import library
from chat.models import Chat, Folder
from testsupport.html import Elements
from testsupport.http import bearer
from testsupport.scripted import SCRIPTED_MODEL

pytestmark = pytest.mark.django_db

API = "/api/v1/chat"


def api(method, key, url, body=None):
    client = Client()
    kwargs = {"headers": bearer(key)} if key else {}
    if body is not None:
        kwargs.update(data=body, content_type="application/json")
    return getattr(client, method)(url, **kwargs)


def new_chat(user, title="A chat", **fields):
    return Chat.objects.create(owner=user, title=title, model=SCRIPTED_MODEL, **fields)


# --- the API ----------------------------------------------------------------------------------------------------


def test_the_owner_creates_lists_renames_and_deletes_folders_and_their_chats_are_kept(owner, owner_key):
    created = api("post", owner_key, f"{API}/folders", {"name": "  Work   stuff "})
    assert created.status_code == 201
    folder = created.json()["folder"]
    assert (folder["name"], folder["chats"]) == ("Work stuff", 0)
    chat = new_chat(owner)
    moved = api("patch", owner_key, f"{API}/{chat.pk}/folder", {"folderId": folder["id"]})
    assert moved.status_code == 200 and moved.json()["chat"]["folderId"] == folder["id"]

    listed = api("get", owner_key, f"{API}/folders").json()["folders"]
    assert [(f["name"], f["chats"]) for f in listed] == [("Work stuff", 1)]
    renamed = api("patch", owner_key, f"{API}/folders/{folder['id']}", {"name": "Projects"})
    assert renamed.status_code == 200 and renamed.json()["folder"]["name"] == "Projects"

    assert api("delete", owner_key, f"{API}/folders/{folder['id']}").status_code == 204
    assert not Folder.objects.exists()
    chat.refresh_from_db()
    assert chat.folder_id is None  # the chat is kept, in no folder
    assert api("get", owner_key, f"{API}/{chat.pk}").json()["chat"]["folderId"] is None


def test_folder_names_are_unique_per_owner_whatever_their_case_and_bounded(owner, other, owner_key, other_key):
    assert api("post", owner_key, f"{API}/folders", {"name": "Ideas"}).status_code == 201
    duplicate = api("post", owner_key, f"{API}/folders", {"name": "IDEAS"})
    assert duplicate.status_code == 409 and duplicate.json()["code"] == "folder_exists"
    assert api("post", other_key, f"{API}/folders", {"name": "ideas"}).status_code == 201  # another user's own
    second = api("post", owner_key, f"{API}/folders", {"name": "Later"}).json()["folder"]
    clash = api("patch", owner_key, f"{API}/folders/{second['id']}", {"name": "ideas"})
    assert clash.status_code == 409
    for bad in ("", "   ", "x" * 61):
        response = api("post", owner_key, f"{API}/folders", {"name": bad})
        assert response.status_code == 400 and response.json()["code"] == "invalid_folder_name"
    assert api("post", owner_key, f"{API}/folders", {"name": 5}).status_code == 400
    assert api("post", owner_key, f"{API}/folders", {}).status_code == 400
    assert Folder.objects.filter(owner=owner).count() == 2


def test_nobody_renames_deletes_or_files_into_someone_elses_folder(owner, other, owner_key, other_key):
    folder = library.do_create_folder(owner, "Mine")
    theirs = new_chat(other)
    for method, url, body in (
        ("patch", f"{API}/folders/{folder.pk}", {"name": "Taken"}),
        ("delete", f"{API}/folders/{folder.pk}", None),
        ("patch", f"{API}/{theirs.pk}/folder", {"folderId": folder.pk}),
        ("get", f"{API}/user?folder={folder.pk}", None),
    ):
        response = api(method, other_key, url, body)
        assert response.status_code == 404, (method, url)
    theirs.refresh_from_db()
    assert theirs.folder_id is None
    assert Folder.objects.get(pk=folder.pk).name == "Mine"
    # Nor does the owner file someone else's chat into their own folder.
    assert api("patch", owner_key, f"{API}/{theirs.pk}/folder", {"folderId": folder.pk}).status_code == 404
    assert api("get", other_key, f"{API}/folders").json()["folders"] == []


def test_anonymous_callers_get_401_from_every_folder_endpoint(owner):
    folder = library.do_create_folder(owner, "Mine")
    chat = new_chat(owner)
    for method, url, body in (
        ("get", f"{API}/folders", None),
        ("post", f"{API}/folders", {"name": "x"}),
        ("patch", f"{API}/folders/{folder.pk}", {"name": "x"}),
        ("delete", f"{API}/folders/{folder.pk}", None),
        ("patch", f"{API}/{chat.pk}/folder", {"folderId": folder.pk}),
    ):
        assert api(method, None, url, body).status_code == 401, (method, url)
    assert Folder.objects.get().name == "Mine"


def test_bad_folder_ids_are_not_found_and_bad_bodies_are_400(owner, owner_key):
    chat = new_chat(owner)
    for folder_id in ("abc", "0", "-1", "99999999999999999999", "1.5"):
        assert api("patch", owner_key, f"{API}/folders/{folder_id}", {"name": "x"}).status_code == 404
        assert api("delete", owner_key, f"{API}/folders/{folder_id}").status_code == 404
    assert api("patch", owner_key, f"{API}/{chat.pk}/folder", {"folderId": 12345}).status_code == 404
    assert api("patch", owner_key, f"{API}/{chat.pk}/folder", {"folderId": "nope"}).status_code == 400
    assert api("patch", owner_key, f"{API}/{chat.pk}/folder", {"folderId": 2**70}).status_code in (400, 404)
    assert api("get", owner_key, f"{API}/user?folder=abc").status_code == 404


def test_the_api_list_filters_by_folder_and_by_no_folder(owner, owner_key):
    work = library.do_create_folder(owner, "Work")
    filed = new_chat(owner, "filed")
    new_chat(owner, "loose")
    library.do_move_chat(owner, filed.pk, work.pk)

    def titles(query):
        return [c["title"] for c in api("get", owner_key, f"{API}/user{query}").json()["chats"]]

    assert titles(f"?folder={work.pk}") == ["filed"]
    assert titles("?folder=none") == ["loose"]
    assert sorted(titles("")) == ["filed", "loose"]  # unfiltered: every chat


def test_moving_a_chat_is_not_activity(owner):
    folder = library.do_create_folder(owner, "Work")
    chat = new_chat(owner)
    before = Chat.objects.get(pk=chat.pk).updated_at
    library.do_move_chat(owner, chat.pk, folder.pk)
    assert Chat.objects.get(pk=chat.pk).updated_at == before


# --- the sidebar ------------------------------------------------------------------------------------------------


def test_the_sidebar_shows_folders_and_loads_a_folders_chats_when_opened(owner, owner_client):
    folder = library.do_create_folder(owner, "Reading <list>")
    filed = new_chat(owner, "Filed chat")
    new_chat(owner, "Loose chat")
    library.do_move_chat(owner, filed.pk, folder.pk)

    page = owner_client.get("/chat/").content.decode()
    assert "Reading &lt;list&gt;" in page and "Reading <list>" not in page
    links = [text for _, text in Elements(page).find("a", class_="chat-link")]
    assert links == ["Loose chat"]  # a filed chat lives in its folder
    (loader,) = Elements(page).find("div", class_="folder-chats")
    assert loader[0]["hx-get"].startswith(f"/chat/sidebar/?folder={folder.pk}")

    inside = owner_client.get(f"/chat/sidebar/?folder={folder.pk}").content.decode()
    assert [text for _, text in Elements(inside).find("a", class_="chat-link")] == ["Filed chat"]


def test_a_folders_chats_are_the_owners_alone_in_the_sidebar(owner, owner_client, other_client, client):
    folder = library.do_create_folder(owner, "Private")
    assert other_client.get(f"/chat/sidebar/?folder={folder.pk}").status_code == 404
    assert owner_client.get("/chat/sidebar/?folder=nope").status_code == 404
    assert client.get(f"/chat/sidebar/?folder={folder.pk}").status_code == 302  # to the login page


def test_sidebar_folder_forms_create_rename_and_delete(owner, owner_client):
    created = owner_client.post("/chat/folders/", {"name": "Trips"})
    assert created.status_code == 200 and "Trips" in created.content.decode()
    folder = Folder.objects.get(owner=owner)
    chat = new_chat(owner, folder=folder)

    renamed = owner_client.post(f"/chat/folders/{folder.pk}/rename/", {"name": "Holidays"})
    assert renamed.status_code == 200 and "Holidays" in renamed.content.decode()
    deleted = owner_client.post(f"/chat/folders/{folder.pk}/delete/")
    assert deleted.status_code == 200 and "Holidays" not in deleted.content.decode()
    chat.refresh_from_db()
    assert chat.folder_id is None and "A chat" in deleted.content.decode()  # kept, back in the main list


def test_sidebar_folder_refusals_are_4xx_with_an_escaped_message(owner, owner_client):
    owner_client.post("/chat/folders/", {"name": "<b>x</b>"})
    duplicate = owner_client.post("/chat/folders/", {"name": "<B>X</B>"})
    assert duplicate.status_code == 409
    assert "&lt;B&gt;X&lt;/B&gt;" in duplicate.content.decode() and "<B>" not in duplicate.content.decode()
    assert owner_client.post("/chat/folders/", {"name": ""}).status_code == 400
    assert owner_client.post("/chat/folders/", {"name": "y" * 61}).status_code == 400
    assert owner_client.get("/chat/folders/").status_code == 405


def test_others_and_anonymous_cannot_touch_a_folder_from_the_sidebar(
    owner, other, owner_client, other_client, client
):
    folder = library.do_create_folder(owner, "Mine")
    chat = new_chat(owner)
    their_chat = new_chat(other)
    assert other_client.post(f"/chat/folders/{folder.pk}/rename/", {"name": "Theirs"}).status_code == 404
    assert other_client.post(f"/chat/folders/{folder.pk}/delete/").status_code == 404
    assert other_client.post(f"/chat/{chat.pk}/folder/", {"folder": folder.pk}).status_code == 404
    assert client.post(f"/chat/folders/{folder.pk}/delete/").status_code == 302
    assert client.post("/chat/folders/", {"name": "Anon"}).status_code == 302
    assert owner_client.post(f"/chat/{their_chat.pk}/folder/", {"folder": folder.pk}).status_code == 404
    assert Chat.objects.get(pk=their_chat.pk).folder_id is None
    assert list(Folder.objects.values_list("name", flat=True)) == ["Mine"]


def test_the_menu_and_a_drag_file_a_chat_and_tell_the_sidebar(owner, other, owner_client):
    folder = library.do_create_folder(owner, "Work")
    foreign = library.do_create_folder(other, "Theirs")
    chat = new_chat(owner)

    menu = owner_client.get(f"/chat/{chat.pk}/menu/").content.decode()
    options = [text for _, text in Elements(menu).find("option")]
    assert options == ["No folder", "Work"]  # never someone else's folders

    # The drag (static/js/library.js) and the menu's Move post the same form.
    moved = owner_client.post(f"/chat/{chat.pk}/folder/", {"folder": str(folder.pk)})
    assert moved.status_code == 200 and moved["HX-Trigger"] == "chats-changed"
    assert Elements(moved.content.decode()).find("option", selected=True)[0][1] == "Work"
    assert Chat.objects.get(pk=chat.pk).folder_id == folder.pk

    assert owner_client.post(f"/chat/{chat.pk}/folder/", {"folder": str(foreign.pk)}).status_code == 404
    assert Chat.objects.get(pk=chat.pk).folder_id == folder.pk
    assert owner_client.post(f"/chat/{chat.pk}/folder/", {"folder": ""}).status_code == 200
    assert Chat.objects.get(pk=chat.pk).folder_id is None


def test_the_sidebar_marks_chats_draggable_onto_folder_drop_targets(owner, owner_client):
    folder = library.do_create_folder(owner, "Work")
    chat = new_chat(owner)
    page = Elements(owner_client.get("/chat/").content.decode())
    (link,) = page.find("a", class_="chat-link")
    assert link[0]["data-move-url"] == f"/chat/{chat.pk}/folder/"
    assert [a["data-drop-folder"] for a, _ in page.find(**{"data-drop-folder": True})] == [str(folder.pk), ""]
    assert page.find("script", src="/static/js/library.js")


# --- query counts -----------------------------------------------------------------------------------------------


def populate(user, chats: int, folders: int, tags_per_chat: int) -> None:
    made = [library.do_create_folder(user, f"Folder {n}") for n in range(folders)]
    Chat.objects.bulk_create(Chat(owner=user, title=f"Chat {n}", model=SCRIPTED_MODEL) for n in range(chats))
    for n, chat in enumerate(Chat.objects.filter(owner=user)):
        if tags_per_chat:
            library.do_set_tags(user, chat.pk, [f"tag{n % 7}-{k}" for k in range(tags_per_chat)])
        if n % 3 == 0:
            library.do_set_pinned(user, chat.pk, True)
        if made and n % 2:
            library.do_move_chat(user, chat.pk, made[n % len(made)].pk)


def count(request) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = request()
    assert response.status_code == 200
    return len(captured.captured_queries)


def test_the_sidebar_and_the_api_list_cost_the_same_queries_for_3_and_50_chats(
    owner, other, owner_client, other_client, owner_key, other_key
):
    populate(owner, chats=3, folders=1, tags_per_chat=1)
    populate(other, chats=50, folders=12, tags_per_chat=4)
    for client in (owner_client, other_client):
        client.get("/chat/sidebar/")  # a session's first request may set things up once
    for key in (owner_key, other_key):
        api("get", key, f"{API}/user")

    for url in ("/chat/sidebar/", "/chat/", "/chat/sidebar/?tag=tag1-0"):
        assert count(lambda url=url: owner_client.get(url)) == count(lambda url=url: other_client.get(url)), url
    owner_folder = Folder.objects.filter(owner=owner, chats__isnull=False).first()
    other_folder = Folder.objects.filter(owner=other, chats__isnull=False).first()
    assert count(lambda: owner_client.get(f"/chat/sidebar/?folder={owner_folder.pk}")) == count(
        lambda: other_client.get(f"/chat/sidebar/?folder={other_folder.pk}")
    )
    for query in ("", "?tag=tag1-0", "?pinned=true", "?folder=none"):
        few = count(lambda query=query: api("get", owner_key, f"{API}/user{query}"))
        many = count(lambda query=query: api("get", other_key, f"{API}/user{query}"))
        assert few == many, query
    assert count(lambda: api("get", owner_key, f"{API}/folders")) == count(
        lambda: api("get", other_key, f"{API}/folders")
    )
    listed = api("get", other_key, f"{API}/user").json()["chats"]
    assert len(listed) == 50 and all(len(chat["tags"]) == 4 for chat in listed)
