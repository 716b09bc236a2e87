"""Temporary chats: a first turn sent with `temporary` over the chat socket is answered by the one pipeline like any
other, its chat is never listed, searched or opened, only that socket continues it, and it is deleted when the
socket closes (after a running answer ends); the ledger keeps the usage. The sweeper deletes those whose socket died
without closing."""

import asyncio
import datetime as dt
import json

import pytest
from asgiref.sync import sync_to_async
from django.test import Client
from django.utils import timezone

from billing.models import UsageEntry
from chat import generations, services
from chat.models import Chat, ChatQuery
from testsupport.http import bearer
from testsupport.sockets import chat_socket, events_until, frames_until

pytestmark = pytest.mark.django_db(transaction=True)

HTMX = {"HX-Request": "true"}


async def until(condition, seconds: float = 5.0):
    for _ in range(int(seconds / 0.02)):
        if await sync_to_async(condition)():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the condition never held")


async def temporary_turn(comm, prompt="Hello", **extra) -> list[dict]:
    await comm.send_json_to({"prompt": prompt, "temporary": True, **extra})
    return await events_until(comm, "complete")


def api_get(key, url):
    return Client().get(url, headers=bearer(key))


async def test_a_temporary_chat_is_answered_continued_and_gone_when_its_socket_closes(scripted, owner, owner_key):
    comm = chat_socket(owner_key)
    await comm.connect()
    first = await temporary_turn(comm, "First question")
    assert first[-1]["type"] == "complete" and first[-1]["query"]["response"] == "Hello, world!"
    chat_id = first[-1]["query"]["chatId"]
    chat = await Chat.objects.aget(pk=chat_id)
    assert chat.unlisted and chat.owner_id == owner.pk

    # Never listed, searched or opened, by the API or the pages.
    assert (await sync_to_async(api_get)(owner_key, "/api/v1/chat/user")).json()["chats"] == []
    assert (await sync_to_async(api_get)(owner_key, f"/api/v1/chat/{chat_id}")).status_code == 404
    search = await sync_to_async(services.search_chats)(owner, "First question")
    assert search.results == []

    # The same socket continues it: the second turn follows the first, in the same chat.
    second = await temporary_turn(comm, "Second question", chatId=chat_id)
    assert second[-1]["query"]["chatId"] == chat_id
    assert second[-1]["query"]["parentId"] == first[-1]["query"]["id"]
    assert await ChatQuery.objects.filter(chat_id=chat_id).acount() == 2

    await comm.disconnect()
    await until(lambda: not Chat.objects.filter(pk=chat_id).exists())
    assert not await ChatQuery.objects.filter(chat_id=chat_id).aexists()
    # The ledger still records both turns (their link to the deleted query is cleared).
    entries = [entry async for entry in UsageEntry.objects.filter(user=owner, action="chat")]
    assert len(entries) == 2 and all(entry.chat_query_id is None for entry in entries)
    assert all(entry.output_tokens > 0 for entry in entries)


async def test_closing_the_socket_mid_answer_deletes_the_chat_only_once_the_answer_ends(scripted, owner, owner_key):
    scripted.tokens = [f"t{n} " for n in range(10)]
    gate = scripted.hold_at(4)
    comm = chat_socket(owner_key)
    await comm.connect()
    await comm.send_json_to({"prompt": "Count", "temporary": "true"})
    metadata = None
    for _ in range(20):
        event = json.loads(await comm.receive_from(timeout=5))
        if event["type"] == "metadata":
            metadata = event
            break
    chat_id = metadata["chatId"]
    await comm.disconnect()
    await asyncio.sleep(0.1)
    assert await Chat.objects.filter(pk=chat_id).aexists()  # the generation outlives its socket

    gate.set()
    await until(lambda: not Chat.objects.filter(pk=chat_id).exists())
    (entry,) = [entry async for entry in UsageEntry.objects.filter(user=owner, action="chat")]
    assert entry.output_tokens == 10  # the whole answer was produced, and charged


async def test_only_the_socket_that_started_a_temporary_chat_reaches_it(scripted, owner, owner_key, other_key):
    starter = chat_socket(owner_key)
    await starter.connect()
    done = await temporary_turn(starter)
    chat_id, query_id = done[-1]["query"]["chatId"], done[-1]["query"]["id"]

    for key in (owner_key, other_key):  # another tab of the owner's, or someone else
        comm = chat_socket(key)
        await comm.connect()
        await comm.send_json_to({"prompt": "Sneak in", "chatId": chat_id, "temporary": True})
        assert json.loads(await comm.receive_from(timeout=5))["code"] == "not_found"
        await comm.send_json_to({"action": "follow", "queryId": query_id})
        assert json.loads(await comm.receive_from(timeout=5))["code"] == "not_found"
        await comm.send_json_to({"action": "regenerate", "queryId": query_id})
        assert json.loads(await comm.receive_from(timeout=5))["code"] == "not_found"
        await comm.disconnect()
    assert await ChatQuery.objects.filter(chat_id=chat_id).acount() == 1
    assert await Chat.objects.filter(pk=chat_id).aexists()  # the other sockets' closing leaves it alone

    # Its own socket can regenerate an answer in it, and then closes.
    await starter.send_json_to({"action": "regenerate", "queryId": query_id})
    regenerated = await events_until(starter, "complete")
    assert regenerated[-1]["query"]["chatId"] == chat_id
    await starter.disconnect()
    await until(lambda: not Chat.objects.filter(pk=chat_id).exists())


async def test_a_temporary_flag_that_is_not_a_boolean_is_refused(scripted, owner_key):
    comm = chat_socket(owner_key)
    await comm.connect()
    await comm.send_json_to({"prompt": "Hello", "temporary": "perhaps"})
    assert json.loads(await comm.receive_from(timeout=5))["code"] == "invalid_field"
    assert not await Chat.objects.aexists()
    await comm.disconnect()


async def test_a_normal_chat_on_the_same_socket_is_kept(scripted, owner, owner_key):
    comm = chat_socket(owner_key)
    await comm.connect()
    await temporary_turn(comm, "Temporary")
    await comm.send_json_to({"prompt": "Kept"})
    kept = (await events_until(comm, "complete"))[-1]["query"]["chatId"]
    await comm.disconnect()
    await until(lambda: Chat.objects.filter(owner=owner).count() == 1)
    assert str((await Chat.objects.aget(owner=owner)).pk) == kept


async def test_the_page_says_the_chat_is_temporary_and_keeps_no_address(scripted, owner_key):
    comm = chat_socket(owner_key)
    await comm.connect()
    await comm.send_json_to({"prompt": "Hello", "temporary": "true", "action": "turn", "HEADERS": HTMX})
    frames = await frames_until(comm, 'id="chat-location"', timeout=5)
    header = next(frame for frame in frames if 'id="chat-header"' in frame)
    assert "Temporary chat" in header and "deleted when you close this tab" in header
    assert "Rename" not in header and "Share" not in header
    assert '<div id="chat-location" data-url="" hx-swap-oob="true"></div>' in frames[-1]
    await frames_until(comm, 'id="answer-foot-', timeout=5)
    await comm.disconnect()


async def test_the_sweeper_deletes_idle_unlisted_chats_that_no_socket_deleted(scripted, owner, make_chat):
    old = await sync_to_async(make_chat)(owner, unlisted=True)
    running = await sync_to_async(make_chat)(owner, [("Still going", "", "streaming")], unlisted=True)
    recent = await sync_to_async(make_chat)(owner, unlisted=True)
    listed = await sync_to_async(make_chat)(owner)
    long_ago = timezone.now() - dt.timedelta(hours=13)
    await Chat.objects.filter(pk__in=[old.pk, running.pk, listed.pk]).aupdate(updated_at=long_ago)

    assert await generations.sweep_temporary_chats(idle_seconds=12 * 3600) == 1
    remaining = {chat.pk async for chat in Chat.objects.all()}
    assert remaining == {running.pk, recent.pk, listed.pk}


def test_the_new_chat_page_offers_the_toggle_and_a_temporary_chat_has_no_page(owner, owner_client, other_client):
    page = owner_client.get("/chat/").content.decode()
    assert 'name="temporary"' in page and 'id="temporary-hint"' in page
    chat = Chat.objects.create(owner=owner, title="t", model="m", unlisted=True)
    assert owner_client.get(f"/chat/{chat.pk}/").status_code == 404
    assert other_client.get(f"/chat/{chat.pk}/").status_code == 404
    assert Client().get(f"/chat/{chat.pk}/").status_code == 302
    assert str(chat.pk) not in owner_client.get("/chat/sidebar/").content.decode()
