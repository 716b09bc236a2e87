"""Branches in the web UI: ‹ 2 / 3 › on turns with versions (the conversation below follows the version shown),
a regenerate button under each ended answer, an edit action with an inline editor on each prompt, and the socket
actions regenerate and edit; each for the owner, another user and anonymous visitors."""

import json
import re
from html.parser import HTMLParser

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from chat.models import ChatQuery
from chat.services import HISTORY_PAGE_SIZE
from testsupport.chats import branched_chat, queries_of
from testsupport.sockets import chat_socket, frames_until

UNKNOWN_ID = "6f1c1a8e-0000-4000-8000-000000000000"


class Tags(HTMLParser):
    """Every start tag of a fragment as (tag, attributes)."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def with_class(self, css: str) -> list[dict]:
        return [attrs for _, attrs in self.tags if css in (attrs.get("class") or "").split()]

    def turn_ids(self) -> list[str]:
        return [attrs["id"][5:] for tag, attrs in self.tags if tag == "article" and attrs.get("id", "")[:5] == "turn-"]


UI_ANSWERS = ("Answer one", "Answer two", "Answer three", "Answer two again")


# --- the chat page ---------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_page_shows_the_branch_selected_with_versions_controls(owner, owner_client, make_chat):
    chat, q1, q2, q3, q2b = branched_chat(make_chat, owner, UI_ANSWERS)

    html = owner_client.get(f"/chat/{chat.pk}/").content.decode()
    tags = Tags(html)

    assert tags.turn_ids() == [str(q1.pk), str(q2b.pk)]  # A3 followed the other version: not shown
    assert "Answer two again" in html and "Answer three" not in html
    (previous,) = tags.with_class("version-prev")
    assert previous["hx-post"] == f"/chat/{chat.pk}/queries/{q2.pk}/select/"
    assert previous["hx-target"] == f"#turn-{q2b.pk}" and previous["hx-swap"] == "outerHTML"
    assert "disabled" in tags.with_class("version-next")[0]
    assert re.search(r'class="version-position">\s*2 / 2\s*<', html)
    # Turn 1 has one version: no controls there, but like every prompt it can be edited, and every answer regenerated.
    assert [e["hx-get"] for e in tags.with_class("edit-prompt")] == [
        f"/chat/{chat.pk}/queries/{q.pk}/edit/" for q in (q1, q2b)
    ]
    regenerates = [json.loads(e["hx-vals"]) for e in tags.with_class("regenerate")]
    assert regenerates == [{"action": "regenerate", "queryId": str(q.pk)} for q in (q1, q2b)]
    assert all("ws-send" in e for e in tags.with_class("regenerate"))
    assert '<script src="/static/js/branches.js" defer></script>' in html


@pytest.mark.django_db
def test_a_turn_still_streaming_has_no_edit_or_regenerate(owner, owner_client, make_chat):
    chat = make_chat(owner, [("Q1", "A1"), ("Live", "partial", "streaming")])
    live = queries_of(chat)[1]

    tags = Tags(owner_client.get(f"/chat/{chat.pk}/").content.decode())

    assert [e["hx-get"].split("/")[-3] for e in tags.with_class("edit-prompt")] == [str(queries_of(chat)[0].pk)]
    assert str(live.pk) not in [json.loads(e["hx-vals"])["queryId"] for e in tags.with_class("regenerate")]


# --- selecting a version ---------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_selecting_a_version_swaps_the_turn_and_the_conversation_below_it(owner, owner_client, make_chat):
    chat, q1, q2, q3, q2b = branched_chat(make_chat, owner, UI_ANSWERS)

    response = owner_client.post(f"/chat/{chat.pk}/queries/{q2.pk}/select/")

    assert response.status_code == 200
    html = response.content.decode()
    tags = Tags(html)
    assert tags.turn_ids() == [str(q2.pk), str(q3.pk)]  # from that turn down, server-rendered
    assert "Answer two" in html and "Answer three" in html and "Answer one" not in html
    assert re.search(r'class="version-position">\s*1 / 2\s*<', html)
    assert tags.with_class("version-next")[0]["hx-post"] == f"/chat/{chat.pk}/queries/{q2b.pk}/select/"
    assert [q.pk for q in ChatQuery.objects.filter(chat=chat, selected=False)] == [q2b.pk]

    # And back: Q3, which followed the version now hidden, is removed from the page.
    back = owner_client.post(f"/chat/{chat.pk}/queries/{q2b.pk}/select/").content.decode()
    assert Tags(back).turn_ids() == [str(q2b.pk)]
    assert f'<div id="turn-{q3.pk}" hx-swap-oob="delete"></div>' in back
    assert Tags(owner_client.get(f"/chat/{chat.pk}/").content.decode()).turn_ids() == [str(q1.pk), str(q2b.pk)]


@pytest.mark.django_db
def test_select_refuses_other_users_anonymous_visitors_gets_and_bad_ids(
    owner, owner_client, other, other_client, make_chat
):
    chat, q1, q2, q3, q2b = branched_chat(make_chat, owner, UI_ANSWERS)
    elsewhere = queries_of(make_chat(owner, [("Other chat", "Its answer")]))[0]
    own_chat = make_chat(other, [("Mine", "Yes")])

    response = other_client.post(f"/chat/{own_chat.pk}/queries/{q2.pk}/select/")
    assert (response.status_code, response.content.decode()) == (404, "Answer not found.")
    assert other_client.post(f"/chat/{chat.pk}/queries/{q2.pk}/select/").status_code == 404
    anonymous = Client().post(f"/chat/{chat.pk}/queries/{q2.pk}/select/")
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/accounts/login/")
    assert owner_client.get(f"/chat/{chat.pk}/queries/{q2.pk}/select/").status_code == 405
    for bad in (UNKNOWN_ID, "not-a-uuid", elsewhere.pk):
        response = owner_client.post(f"/chat/{chat.pk}/queries/{bad}/select/")
        assert (response.status_code, response.content.decode()) == (404, "Answer not found."), bad
    assert [q.pk for q in ChatQuery.objects.filter(chat=chat, selected=False)] == [q2.pk]  # nothing changed


@pytest.mark.django_db
def test_select_needs_the_csrf_token(owner, make_chat):
    chat, q1, q2, q3, q2b = branched_chat(make_chat, owner, UI_ANSWERS)
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)

    assert client.post(f"/chat/{chat.pk}/queries/{q2.pk}/select/").status_code == 403

    client.get(f"/chat/{chat.pk}/")
    token = client.cookies["csrftoken"].value
    response = client.post(f"/chat/{chat.pk}/queries/{q2.pk}/select/", headers={"X-CSRFToken": token})
    assert response.status_code == 200


# --- editing a prompt ------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_edit_opens_an_inline_editor_that_sends_over_the_socket_and_cancel_puts_the_prompt_back(
    owner, owner_client, make_chat
):
    chat, q1, q2, q3, q2b = branched_chat(make_chat, owner, UI_ANSWERS)

    editor = owner_client.get(f"/chat/{chat.pk}/queries/{q2b.pk}/edit/").content.decode()

    tags = Tags(editor)
    form = next(attrs for tag, attrs in tags.tags if tag == "form")
    assert form["id"] == f"prompt-{q2b.pk}" and "ws-send" in form and form["hx-include"] == "#model, #web-search"
    fields = {attrs["name"]: attrs.get("value") for tag, attrs in tags.tags if tag == "input"}
    assert fields == {"action": "edit", "queryId": str(q2b.pk)}
    assert re.search(r'<textarea [^>]*name="prompt"[^>]*>Q2</textarea>', editor)
    assert "Save &amp; send" in editor
    (cancel,) = tags.with_class("cancel-edit")
    assert cancel["hx-get"] == f"/chat/{chat.pk}/queries/{q2b.pk}/prompt/"

    block = owner_client.get(cancel["hx-get"]).content.decode()
    assert f'id="prompt-{q2b.pk}"' in block and "edit-prompt" in block
    assert re.search(r'class="version-position">\s*2 / 2\s*<', block)


@pytest.mark.django_db
def test_the_editor_and_prompt_refuse_other_users_and_anonymous_visitors(
    owner, other, other_client, make_chat
):
    chat, q1, *_ = branched_chat(make_chat, owner, UI_ANSWERS)
    own_chat = make_chat(other, [("Mine", "Yes")])

    for view in ("edit", "prompt"):
        response = other_client.get(f"/chat/{own_chat.pk}/queries/{q1.pk}/{view}/")
        assert (response.status_code, response.content.decode()) == (404, "Answer not found.")
        assert other_client.get(f"/chat/{chat.pk}/queries/{q1.pk}/{view}/").status_code == 404
        anonymous = Client().get(f"/chat/{chat.pk}/queries/{q1.pk}/{view}/")
        assert anonymous.status_code == 302 and anonymous["Location"].startswith("/accounts/login/")


@pytest.mark.django_db
def test_prompts_stay_text_in_the_editor_and_the_block(owner, owner_client, make_chat):
    chat = make_chat(owner, [("<script>alert(1)</script>", "ok")])
    query = queries_of(chat)[0]

    for view in ("edit", "prompt"):
        html = owner_client.get(f"/chat/{chat.pk}/queries/{query.pk}/{view}/").content.decode()
        assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


# --- the socket: regenerate and edit ---------------------------------------------------------------------------


HTMX = {"HX-Request": "true"}


@pytest.mark.django_db(transaction=True)
async def test_regenerate_from_the_page_replaces_the_turn_and_what_followed_it(scripted, owner, owner_key, make_chat):
    chat, q1, q2, q3, q2b = await sync_to_async(branched_chat)(make_chat, owner, UI_ANSWERS)
    await sync_to_async(ChatQuery.objects.filter(pk__in=[q2b.pk]).update)(selected=False)
    await sync_to_async(ChatQuery.objects.filter(pk=q2.pk).update)(selected=True)  # Q1 → Q2 → Q3 shown
    scripted.tokens = ["A2 ", "anew"]
    comm = chat_socket(owner_key)
    await comm.connect()

    await comm.send_json_to({"action": "regenerate", "queryId": str(q2.pk), "HEADERS": HTMX})
    frames = await frames_until(comm, 'class="turn-controls" hx-swap-oob')
    await comm.disconnect()

    new = await ChatQuery.objects.exclude(pk__in=[q1.pk, q2.pk, q3.pk, q2b.pk]).aget()
    assert (new.parent_id, new.prompt, new.response) == (q1.pk, "Q2", "A2 anew")
    html = "".join(frames)
    assert frames[0].startswith(f'<div hx-swap-oob="afterend:#turn-{q2.pk}"><article class="turn" id="turn-{new.pk}"')
    assert re.search(r'class="version-position">\s*3 / 3\s*<', frames[0])
    assert f'<div id="turn-{q2.pk}" hx-swap-oob="delete"></div>' in html
    assert f'<div id="turn-{q3.pk}" hx-swap-oob="delete"></div>' in html
    assert f"#turn-{q2b.pk}" not in html  # it was not on the page
    assert [m["content"] for m in scripted.calls[-1]["messages"]] == ["Q1", "Answer one", "Q2"]


@pytest.mark.django_db(transaction=True)
async def test_edit_over_the_socket_as_json_answers_the_new_prompt(scripted, owner, owner_key, make_chat):
    chat, q1, q2, q3, q2b = await sync_to_async(branched_chat)(make_chat, owner, UI_ANSWERS)
    comm = chat_socket(owner_key)
    await comm.connect()

    await comm.send_json_to({"action": "edit", "queryId": str(q2b.pk), "prompt": "Q2, shorter"})
    events = []
    while not events or events[-1]["type"] not in ("complete", "error"):
        events.append(json.loads(await comm.receive_from(timeout=10)))
    await comm.disconnect()

    assert events[-1]["type"] == "complete"
    saved = events[-1]["query"]
    assert (saved["prompt"], saved["parentId"], saved["response"]) == ("Q2, shorter", str(q1.pk), "Hello, world!")
    assert [m["content"] for m in scripted.calls[-1]["messages"]] == ["Q1", "Answer one", "Q2, shorter"]


@pytest.mark.django_db(transaction=True)
async def test_socket_versions_refuse_other_users_bad_input_and_turns_still_streaming(
    scripted, owner, other_key, owner_key, make_chat
):
    chat, q1, q2, q3, q2b = await sync_to_async(branched_chat)(make_chat, owner, UI_ANSWERS)
    live_chat = await sync_to_async(make_chat)(owner, [("Live", "partial", "streaming")])
    live = await ChatQuery.objects.aget(chat=live_chat)

    async def refusal(key, message) -> dict:
        comm = chat_socket(key)
        await comm.connect()
        await comm.send_json_to(message)
        reply = json.loads(await comm.receive_from(timeout=10))
        await comm.disconnect()
        return reply

    for action in ({"action": "regenerate"}, {"action": "edit", "prompt": "Changed"}):
        reply = await refusal(other_key, {**action, "queryId": str(q2.pk)})
        assert (reply["type"], reply["message"], reply["code"]) == ("error", "Answer not found.", "not_found")
        for bad in (UNKNOWN_ID, "not-a-uuid", None):
            assert (await refusal(owner_key, {**action, "queryId": bad}))["code"] == "not_found"
        assert (await refusal(owner_key, {**action, "queryId": str(live.pk)}))["code"] == "still_streaming"
    for empty in ({"prompt": " "}, {}):
        reply = await refusal(owner_key, {"action": "edit", "queryId": str(q2.pk), **empty})
        assert reply["code"] == "empty_prompt"
    # The query of one chat named with another chat's id.
    reply = await refusal(owner_key, {"action": "regenerate", "queryId": str(q2.pk), "chatId": str(live_chat.pk)})
    assert reply["message"] == "Answer not found."
    # The page's framer shows the refusal where the composer shows errors.
    comm = chat_socket(owner_key)
    await comm.connect()
    await comm.send_json_to({"action": "regenerate", "queryId": str(live.pk), "HEADERS": HTMX})
    frame = await comm.receive_from(timeout=10)
    await comm.disconnect()
    assert frame.startswith('<div id="composer-error" class="composer-error" hx-swap-oob="outerHTML">This answer is')

    assert await ChatQuery.objects.acount() == 5 and scripted.calls == []


@pytest.mark.django_db(transaction=True)
async def test_anonymous_sockets_cannot_regenerate(scripted, owner, make_chat):
    chat, q1, *_ = await sync_to_async(branched_chat)(make_chat, owner, UI_ANSWERS)
    comm = chat_socket(None)
    await comm.connect()

    assert json.loads(await comm.receive_from())["code"] == "unauthenticated"
    assert (await comm.receive_output())["type"] == "websocket.close"
    assert await ChatQuery.objects.acount() == 4


# --- the public page and a constant number of SQL queries --------------------------------------------------------


@pytest.mark.django_db
def test_the_public_page_shows_the_branch_selected_without_controls(owner, make_chat):
    chat, q1, q2, q3, q2b = branched_chat(make_chat, owner, UI_ANSWERS)
    chat.shared = True
    chat.save()

    html = Client().get(f"/share/{chat.pk}/").content.decode()

    assert "Answer two again" in html and "Answer three" not in html
    assert "version-prev" not in html and "edit-prompt" not in html and "regenerate" not in html


def long_branched_chat(make_chat, owner, turns: int):
    chat = make_chat(owner, [(f"Q{i}", f"A{i}") for i in range(turns)])
    # A second version of the first turn, not shown: the tree is walked whole either way.
    ChatQuery.objects.create(
        chat=chat, prompt="Q0", response="A0b", model=chat.model, status="complete", selected=False
    )
    return chat


@pytest.mark.django_db
def test_the_chat_page_costs_the_same_queries_for_3_turns_and_30(
    owner, owner_client, make_chat, django_assert_num_queries
):
    short, long = long_branched_chat(make_chat, owner, 3), long_branched_chat(make_chat, owner, 30)
    owner_client.get(f"/chat/{short.pk}/")  # warm: the catalog and session

    with CaptureQueriesContext(connection) as short_queries:
        assert len(Tags(owner_client.get(f"/chat/{short.pk}/").content.decode()).turn_ids()) == 3
    with django_assert_num_queries(len(short_queries)):
        # The page shows the newest turns (older ones load on scrolling up: chat/tests/test_history_pages.py).
        assert len(Tags(owner_client.get(f"/chat/{long.pk}/").content.decode()).turn_ids()) == HISTORY_PAGE_SIZE
