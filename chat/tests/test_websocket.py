import asyncio
import json

import pytest
from channels.testing import WebsocketCommunicator

from chat.models import ChatQuery
from querynox.asgi import application
from testsupport.sockets import chat_socket, events_until

pytestmark = pytest.mark.django_db(transaction=True)


async def test_api_client_gets_the_pipeline_events_as_json_frames(scripted, owner_key):
    comm = chat_socket(owner_key)
    connected, _ = await comm.connect()
    assert connected

    await comm.send_json_to({"prompt": "Say hello"})
    events = await events_until(comm, "complete")

    assert [e["type"] for e in events][:2] == ["status", "metadata"]
    assert "".join(e["content"] for e in events if e["type"] == "content") == "Hello, world!"
    assert events[-1]["query"]["status"] == "complete"
    await comm.disconnect()


async def test_anonymous_socket_gets_an_error_and_is_closed(db):
    comm = chat_socket()
    connected, _ = await comm.connect()
    assert connected
    event = json.loads(await comm.receive_from())
    assert event == {"type": "error", "message": event["message"], "code": "unauthenticated"}
    assert (await comm.receive_output())["type"] == "websocket.close"


async def test_bad_frames_get_error_events(scripted, owner_key):
    comm = chat_socket(owner_key)
    await comm.connect()
    await comm.send_to(text_data="{not json")
    assert json.loads(await comm.receive_from())["code"] == "invalid_body"
    await comm.send_json_to({"prompt": ""})
    assert json.loads(await comm.receive_from())["code"] == "empty_prompt"
    await comm.send_json_to({"prompt": "hi", "model": "no-such-model"})
    assert json.loads(await comm.receive_from())["code"] == "unknown_model"
    await comm.send_json_to({"prompt": "hi", "chatId": "6f1c1a8e-0000-4000-8000-000000000000"})
    assert json.loads(await comm.receive_from())["code"] == "not_found"
    await comm.disconnect()


async def test_disconnect_does_not_stop_and_reconnect_replays_each_token_once(scripted, owner_key):
    scripted.tokens = [f"t{i} " for i in range(20)]
    gate = scripted.hold_at(8)
    comm = chat_socket(owner_key)
    await comm.connect()
    await comm.send_json_to({"prompt": "Count"})
    before = []
    while len([e for e in before if e["type"] == "content"]) < 8:
        before.append(json.loads(await comm.receive_from()))
    query_id = before[1]["queryId"]
    await comm.disconnect()

    gate.set()  # the answer goes on with nobody listening
    for _ in range(100):
        if (await ChatQuery.objects.aget(pk=query_id)).status != "streaming":
            break
        await asyncio.sleep(0.02)

    again = chat_socket(owner_key)
    await again.connect()
    await again.send_json_to({"action": "follow", "queryId": query_id})
    replay = await events_until(again, "complete")

    contents = [e["content"] for e in replay if e["type"] == "content"]
    assert contents == scripted.tokens
    assert (await ChatQuery.objects.aget(pk=query_id)).response == "".join(scripted.tokens)
    await again.disconnect()


async def test_stop_keeps_the_partial_answer_and_closes_the_provider_stream(scripted, owner_key):
    scripted.tokens = ["one ", "two ", "three ", "four "]
    scripted.hold_at(2)
    comm = chat_socket(owner_key)
    await comm.connect()
    await comm.send_json_to({"prompt": "Count"})
    events = []
    while len([e for e in events if e["type"] == "content"]) < 2:
        events.append(json.loads(await comm.receive_from()))

    await comm.send_json_to({"action": "stop", "queryId": events[1]["queryId"]})
    rest = await events_until(comm, "complete")

    assert rest[-1]["status"] == "stopped"
    saved = await ChatQuery.objects.aget(pk=events[1]["queryId"])
    assert (saved.status, saved.response) == ("stopped", "one two ")
    assert scripted.closed_early == 1
    await comm.disconnect()


async def test_another_users_query_cannot_be_followed_or_stopped(scripted, owner_key, other_key):
    comm = chat_socket(owner_key)
    await comm.connect()
    await comm.send_json_to({"prompt": "Mine"})
    query_id = (await events_until(comm, "complete"))[1]["queryId"]
    await comm.disconnect()

    intruder = chat_socket(other_key)
    await intruder.connect()
    for action in ("follow", "stop"):
        await intruder.send_json_to({"action": action, "queryId": query_id})
        assert json.loads(await intruder.receive_from())["code"] == "not_found"
    await intruder.disconnect()


async def test_htmx_client_gets_out_of_band_fragments(scripted, owner_key):
    comm = chat_socket(owner_key)
    await comm.connect()
    await comm.send_json_to({"prompt": "Say <b>hello</b>", "HEADERS": {"HX-Request": "true"}, "action": "turn"})
    frames = []
    controls_cleared = 'class="turn-controls" hx-swap-oob="outerHTML"></div>'
    while not frames or controls_cleared not in frames[-1]:
        frames.append(await comm.receive_from())
    html = "\n".join(frames)
    assert 'hx-swap-oob="beforeend"' in html and "Say &lt;b&gt;hello&lt;/b&gt;" in html
    assert 'hx-swap-oob="beforeend:#answer-' in html
    assert 'id="chat-list"' in html
    await comm.disconnect()


async def test_non_browser_clients_without_origin_may_connect_with_a_key(scripted, owner_key):
    comm = WebsocketCommunicator(application, "/ws/chat/", headers=[(b"authorization", f"Bearer {owner_key}".encode())])
    connected, _ = await comm.connect()
    assert connected
    await comm.send_json_to({"prompt": "Say hello"})
    assert (await events_until(comm, "complete"))[-1]["type"] == "complete"
    await comm.disconnect()


async def test_a_foreign_origin_is_refused_at_the_handshake(scripted):
    # Without a bearer token the socket would trust a session cookie, so the origin must be one CSRF accepts
    # (accounts/tests/test_socket_origin.py has the whole rule).
    comm = chat_socket(origin=b"https://evil.example")
    connected, _ = await comm.connect()
    assert not connected
