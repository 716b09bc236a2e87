"""Branches as one page shows them: a turn that ends live gets the controls of an ended turn (its edit button, and
‹ n / m › once it has versions) without a reload, and a new prompt follows the last turn the page shows (the
composer's `parentId`), not whatever another tab selected on the server since; a `parentId` that is not one of the
chat's turns is "Answer not found.", for the owner's other chats, other users and ids nobody has."""

import pytest
from asgiref.sync import sync_to_async

from chat.branches import selected_branch
from chat.models import ChatQuery
from testsupport.chats import branched_chat
from testsupport.html import Elements
from testsupport.http import ServerAsyncClient, bearer
from testsupport.sockets import chat_socket, events_until, frames_until

pytestmark = pytest.mark.django_db(transaction=True)

HTMX = {"HX-Request": "true"}
UNKNOWN_ID = "6f1c1a8e-0000-4000-8000-000000000000"


def sent_conversation(provider) -> list[str]:
    return [m["content"] for m in provider.calls[-1]["messages"] if m["role"] != "system"]


def prompt_blocks(frames: list[str], query_id) -> list[tuple[dict, str]]:
    return [found for frame in frames for found in Elements(frame).find(id=f"prompt-{query_id}")]


# --- a turn added live gets its controls when it ends ------------------------------------------------------------


async def test_a_new_turn_gets_its_edit_button_when_its_answer_ends(scripted, owner_key):
    comm = chat_socket(owner_key)
    await comm.connect()
    await comm.send_json_to({"prompt": "Hello", "HEADERS": HTMX, "action": "turn"})
    frames = await frames_until(comm, 'id="chat-list"', timeout=5)  # the new turn, its tokens, then the end
    frames += await frames_until(comm, 'id="chat-list"', timeout=5)
    await comm.disconnect()
    query = await ChatQuery.objects.aget()

    (streaming, _), (ended, text) = prompt_blocks(frames, query.pk)
    assert "hx-swap-oob" not in streaming  # rendered inside the new turn, while it streamed: no edit button yet
    assert ended["hx-swap-oob"] == "outerHTML" and text.startswith("Hello")
    (ended_frame,) = [f for f in frames if f'id="prompt-{query.pk}" hx-swap-oob' in f]
    ((edit, _),) = Elements(ended_frame).find("button", class_="icon-button edit-prompt")
    assert edit["hx-get"] == f"/chat/{query.chat_id}/queries/{query.pk}/edit/"
    assert not Elements(ended_frame).find(class_="versions")  # one version: no ‹ ›


async def test_a_regenerated_turn_ends_with_its_edit_button_and_versions(scripted, owner, owner_key, make_chat):
    chat, q1, q2, q3, q2b = await sync_to_async(branched_chat)(make_chat, owner)
    comm = chat_socket(owner_key)
    await comm.connect()
    await comm.send_json_to({"action": "regenerate", "queryId": str(q2b.pk), "HEADERS": HTMX})
    frames = await frames_until(comm, 'class="turn-controls" hx-swap-oob', timeout=5)  # the answer ended
    frames += await frames_until(comm, 'id="chat-list"', timeout=5)
    await comm.disconnect()
    new = await ChatQuery.objects.exclude(pk__in=[q1.pk, q2.pk, q3.pk, q2b.pk]).aget()

    (ended_frame,) = [f for f in frames if f'id="prompt-{new.pk}" hx-swap-oob' in f]
    page = Elements(ended_frame)
    assert [text for _, text in page.find(class_="version-position")] == ["3 / 3"]
    ((previous, _),) = page.find("button", class_="icon-button version-prev")
    assert previous["hx-post"] == f"/chat/{chat.pk}/queries/{q2b.pk}/select/"
    assert "disabled" in page.find("button", class_="icon-button version-next")[0][0]
    assert page.find("button", class_="icon-button edit-prompt")


async def test_a_failed_turn_gets_its_edit_button_too(scripted, owner_key):
    scripted.fail_after = (1, "The provider went away.")
    comm = chat_socket(owner_key)
    await comm.connect()
    await comm.send_json_to({"prompt": "Hello", "HEADERS": HTMX, "action": "turn"})
    frames = await frames_until(comm, "hx-swap-oob=\"outerHTML\">The provider went away.", timeout=5)
    frames += await frames_until(comm, 'class="prompt-block"', timeout=5)
    await comm.disconnect()
    query = await ChatQuery.objects.aget()

    (ended_frame,) = [f for f in frames if f'id="prompt-{query.pk}" hx-swap-oob' in f]
    assert Elements(ended_frame).find("button", class_="icon-button edit-prompt")


# --- a new prompt follows the branch the page shows -------------------------------------------------------------


async def test_a_prompt_from_a_page_showing_another_branch_continues_that_branch(scripted, owner, owner_key, make_chat):
    chat, q1, q2, q3, q2b = await sync_to_async(branched_chat)(make_chat, owner)
    # The server shows Q1 → Q2b (selected, say by another tab); this page still shows Q1 → Q2 → Q3.
    comm = chat_socket(owner_key)
    await comm.connect()
    await comm.send_json_to(
        {"prompt": "Q4", "chatId": str(chat.pk), "parentId": str(q3.pk), "action": "turn", "HEADERS": HTMX}
    )
    await frames_until(comm, 'id="chat-list"', timeout=5)
    await frames_until(comm, 'id="chat-list"', timeout=5)
    await comm.disconnect()

    new = await ChatQuery.objects.aget(prompt="Q4")
    assert new.parent_id == q3.pk
    assert sent_conversation(scripted) == ["Q1", "A1", "Q2", "A2", "Q3", "A3", "Q4"]
    # The branch it continued is the one shown from now on (in every tab that reloads).
    assert [q.prompt for q in await sync_to_async(selected_branch)(chat.pk)] == ["Q1", "Q2", "Q3", "Q4"]


async def test_the_api_continues_the_turn_it_names_and_without_one_the_selected_branch(
    scripted, owner, owner_key, make_chat
):
    chat, q1, q2, q3, q2b = await sync_to_async(branched_chat)(make_chat, owner)
    client = ServerAsyncClient()

    named = await client.post(
        f"/api/v1/chat/{chat.pk}", {"prompt": "After Q1", "parentId": str(q1.pk)},
        content_type="application/json", headers=bearer(owner_key),
    )
    assert named.status_code == 200, named.content
    assert named.json()["chatQuery"]["parentId"] == str(q1.pk)
    assert sent_conversation(scripted) == ["Q1", "A1", "After Q1"]

    # An empty parentId (a page showing no turn yet) is no parentId: the selected branch, now ending at "After Q1".
    selected = await client.post(
        f"/api/v1/chat/{chat.pk}", {"prompt": "Next", "parentId": ""},
        content_type="application/json", headers=bearer(owner_key),
    )
    assert selected.json()["chatQuery"]["parentId"] == named.json()["chatQuery"]["id"]


async def test_a_parent_id_not_of_this_chat_is_answer_not_found(scripted, owner, other, owner_key, make_chat):
    chat, q1, *_ = await sync_to_async(branched_chat)(make_chat, owner)
    another_chat = await sync_to_async(make_chat)(owner, [("Elsewhere", "There")])
    elsewhere = await ChatQuery.objects.aget(chat=another_chat)
    strangers_chat = await sync_to_async(make_chat)(other, [("Theirs", "Private")])
    theirs = await ChatQuery.objects.aget(chat=strangers_chat)
    before = await ChatQuery.objects.acount()

    async def refusal(message) -> dict:
        comm = chat_socket(owner_key)
        await comm.connect()
        await comm.send_json_to(message)
        (reply,) = await events_until(comm, "complete")
        await comm.disconnect()
        return reply

    turn = {"action": "turn", "prompt": "Continue", "chatId": str(chat.pk)}
    for parent in (elsewhere.pk, theirs.pk, UNKNOWN_ID, "not-a-uuid", 42):
        reply = await refusal({**turn, "parentId": str(parent) if parent != 42 else parent})
        assert (reply["type"], reply["message"], reply["code"]) == ("error", "Answer not found.", "not_found")
    # With no chat there is nothing to follow: a first turn starts one.
    reply = await refusal({"action": "turn", "prompt": "Continue", "parentId": str(q1.pk)})
    assert reply["message"] == "Answer not found."
    # An edit follows its own query's parent: naming another is refused, not ignored.
    reply = await refusal({**turn, "editOf": str(q1.pk), "parentId": str(q1.pk)})
    assert (reply["type"], reply["code"]) == ("error", "invalid_field")

    # Over HTTP: a 404 for the owner naming someone else's turn, a 401 for nobody.
    client = ServerAsyncClient()
    path = f"/api/v1/chat/{chat.pk}"
    body = {"prompt": "Continue", "parentId": str(theirs.pk)}
    response = await client.post(path, body, content_type="application/json", headers=bearer(owner_key))
    assert response.status_code == 404 and response.json()["error"] == "Answer not found."
    assert (await client.post(path, body, content_type="application/json")).status_code == 401

    assert await ChatQuery.objects.acount() == before and scripted.calls == []


def test_the_composer_carries_the_last_turn_the_page_shows(owner, owner_client, other_client, make_chat):
    chat, q1, q2, q3, q2b = branched_chat(make_chat, owner)

    page = Elements(owner_client.get(f"/chat/{chat.pk}/").content.decode())
    ((field, _),) = page.find("input", id="parent-id")
    assert (field["name"], field["type"], field["value"]) == ("parentId", "hidden", str(q2b.pk))
    ((empty, _),) = Elements(owner_client.get("/chat/").content.decode()).find("input", id="parent-id")
    assert empty["value"] == ""
    assert other_client.get(f"/chat/{chat.pk}/").status_code == 404
