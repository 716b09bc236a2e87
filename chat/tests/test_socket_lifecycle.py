"""The chat socket's own read loop and disconnect (chat/consumers.py ChatConsumer.__call__, websocket_disconnect):
no task per frame, no thread trip on close, and a closing socket still ends cleanly while its answer goes on."""

import asyncio
import json
import uuid

import pytest
from channels.generic import websocket as channels_websocket

from chat import generations
from chat.models import ChatQuery
from testsupport.sockets import chat_socket

pytestmark = pytest.mark.django_db(transaction=True)


async def test_opening_and_closing_a_socket_makes_no_database_thread_trip(owner_key, monkeypatch):
    trips = []

    async def counted():
        trips.append(1)

    monkeypatch.setattr(channels_websocket, "aclose_old_connections", counted)
    comm = chat_socket(owner_key)
    connected, _ = await comm.connect()
    assert connected
    await comm.disconnect()

    assert trips == []
    assert comm.future.done() and not comm.future.cancelled() and comm.future.exception() is None


async def test_the_socket_application_ends_by_itself_when_the_client_goes_mid_answer(scripted, owner_key):
    # The consumer reads the socket with plain awaits (ChatConsumer.__call__): a disconnect must still end the
    # application instance on its own, not leave it for the server to cancel, and the answer must go on.
    scripted.tokens = [f"t{i} " for i in range(6)]
    gate = scripted.hold_at(3)
    comm = chat_socket(owner_key)
    await comm.connect()
    await comm.send_json_to({"prompt": "Count"})
    received = []
    while len([e for e in received if e["type"] == "content"]) < 3:
        received.append(json.loads(await comm.receive_from()))
    await comm.disconnect()

    assert comm.future.done() and not comm.future.cancelled()
    assert comm.future.exception() is None
    gate.set()
    generation = generations._running[uuid.UUID(received[1]["queryId"])]
    await asyncio.wait_for(generation.task, timeout=10)
    assert (await ChatQuery.objects.aget(pk=generation.query_id)).response == "".join(scripted.tokens)
