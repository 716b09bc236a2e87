"""Inputs the audit found crashing the API (500) or the socket (1011): each now gets a clear 4xx or an `error` frame.
Deeply nested JSON, a lone surrogate in a prompt, a socket message over 1 MB, and `follow` from a negative position."""

import json

import pytest
from django.test import AsyncClient

from chat.consumers import CLOSE_MESSAGE_TOO_BIG, MAX_FRAME_BYTES
from chat.models import Chat, ChatQuery
from querynox.server import WEBSOCKET_MAX_MESSAGE_BYTES
from testsupport.http import bearer, parse_sse, read_streaming
from testsupport.sockets import chat_socket

pytestmark = pytest.mark.django_db(transaction=True)

DEEP = "[" * 1000 + "]" * 1000  # 2 KB; json.loads recurses once per level
LONE_SURROGATE_JSON = '{"prompt": "hello \\ud800 there"}'  # valid JSON, but not encodable as UTF-8


async def post(key, path, body: str):
    return await AsyncClient().post(path, body, content_type="application/json", headers=bearer(key))


# --- deeply nested JSON --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/chat", "/api/v1/chat/stream"])
@pytest.mark.parametrize("body", [DEEP, '{"prompt": "hi", "model": ' + DEEP + "}"])
async def test_deeply_nested_json_is_a_400_not_a_500(scripted, owner_key, path, body):
    response = await post(owner_key, path, body)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_body"
    assert not await ChatQuery.objects.aexists()


async def test_deeply_nested_json_in_a_toggle_body_is_a_400(owner, owner_key, make_chat):
    from asgiref.sync import sync_to_async

    chat = await sync_to_async(make_chat)(owner)
    response = await AsyncClient().patch(
        f"/api/v1/chat/{chat.pk}/share", DEEP, content_type="application/json", headers=bearer(owner_key)
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_body"


async def test_deeply_nested_json_on_the_socket_is_an_error_frame_and_the_socket_lives_on(scripted, owner_key):
    comm = chat_socket(owner_key)
    assert (await comm.connect())[0]
    await comm.send_to(text_data=DEEP)
    assert json.loads(await comm.receive_from()) == {
        "type": "error",
        "message": "The JSON is nested too deeply.",
        "code": "invalid_body",
    }
    await comm.send_json_to({"prompt": "Say hello"})  # still usable
    kinds = []
    while not kinds or kinds[-1] not in ("complete", "error"):
        kinds.append(json.loads(await comm.receive_from(timeout=5))["type"])
    assert kinds[-1] == "complete"
    await comm.disconnect()


# --- a lone surrogate ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/chat", "/api/v1/chat/stream"])
async def test_a_lone_surrogate_in_the_prompt_is_a_400(scripted, owner_key, path):
    response = await post(owner_key, path, LONE_SURROGATE_JSON)
    assert response.status_code == 400
    assert response.json() == {"error": "The prompt contains invalid characters.", "code": "invalid_characters"}
    assert not await ChatQuery.objects.aexists()


@pytest.mark.parametrize(
    ("body", "what"),
    [
        ('{"prompt": "hi", "systemPrompt": "\\udfff"}', "system prompt"),
        ('{"prompt": "hi", "model": "gpt\\ud800"}', "model"),
    ],
)
async def test_lone_surrogates_in_other_turn_fields_are_a_400(scripted, owner_key, body, what):
    response = await post(owner_key, "/api/v1/chat/stream", body)
    assert response.status_code == 400
    assert response.json()["error"] == f"The {what} contains invalid characters."


async def test_a_lone_surrogate_on_the_socket_is_an_error_frame(scripted, owner_key):
    comm = chat_socket(owner_key)
    await comm.connect()
    await comm.send_to(text_data=LONE_SURROGATE_JSON)
    event = json.loads(await comm.receive_from())
    assert (event["type"], event["code"]) == ("error", "invalid_characters")
    assert event["message"] == "The prompt contains invalid characters."
    assert not await Chat.objects.aexists()
    await comm.disconnect()


async def test_a_lone_surrogate_in_a_new_title_is_a_400(owner, owner_key, make_chat):
    from asgiref.sync import sync_to_async

    chat = await sync_to_async(make_chat)(owner)
    response = await AsyncClient().patch(
        f"/api/v1/chat/{chat.pk}", '{"title": "a\\ud800b"}', content_type="application/json", headers=bearer(owner_key)
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_characters"


# --- socket messages over the limit --------------------------------------------------------------------------------


def test_our_message_limit_is_below_the_servers_so_the_consumer_answers_first():
    assert MAX_FRAME_BYTES < WEBSOCKET_MAX_MESSAGE_BYTES


@pytest.mark.parametrize("size", [MAX_FRAME_BYTES + 1, 1_500_000])
async def test_a_message_over_1_mb_gets_message_too_large_and_a_clean_close(scripted, owner_key, size):
    comm = chat_socket(owner_key)
    await comm.connect()
    prompt = "x" * (size - len('{"prompt": ""}'))
    await comm.send_to(text_data=json.dumps({"prompt": prompt}))
    event = json.loads(await comm.receive_from())
    assert (event["type"], event["code"]) == ("error", "message_too_large")
    assert str(MAX_FRAME_BYTES) in event["message"]
    assert await comm.receive_output() == {"type": "websocket.close", "code": CLOSE_MESSAGE_TOO_BIG}
    assert not await ChatQuery.objects.aexists()


async def test_the_limit_counts_bytes_not_characters(scripted, owner_key):
    comm = chat_socket(owner_key)
    await comm.connect()
    # 400,000 characters, 1,200,000 UTF-8 bytes.
    await comm.send_to(text_data=json.dumps({"prompt": "€" * 400_000}, ensure_ascii=False))
    assert json.loads(await comm.receive_from())["code"] == "message_too_large"


# --- follow from a negative position -------------------------------------------------------------------------------


async def finished_turn(key) -> tuple[str, list[dict]]:
    response = await post(key, "/api/v1/chat/stream", '{"prompt": "Say hello"}')
    events = parse_sse(await read_streaming(response))
    return events[1]["queryId"], [e for e in events if e["type"] != "done"]


@pytest.mark.parametrize("after", [-1, -3, "-2", 1.5, True, "x"])
async def test_follow_on_the_socket_refuses_a_bad_after(scripted, owner_key, after):
    query_id, _ = await finished_turn(owner_key)
    comm = chat_socket(owner_key)
    await comm.connect()
    await comm.send_json_to({"action": "follow", "queryId": query_id, "after": after})
    event = json.loads(await comm.receive_from())
    assert (event["type"], event["code"]) == ("error", "invalid_field")
    assert await comm.receive_nothing(timeout=0.3)
    await comm.disconnect()


async def test_follow_on_the_socket_from_0_replays_each_event_once(scripted, owner_key):
    query_id, streamed = await finished_turn(owner_key)
    comm = chat_socket(owner_key)
    await comm.connect()
    await comm.send_json_to({"action": "follow", "queryId": query_id, "after": "0"})
    replayed = []
    while not replayed or replayed[-1]["type"] not in ("complete", "error"):
        replayed.append(json.loads(await comm.receive_from(timeout=5)))
    assert [e["type"] for e in replayed].count("complete") == 1
    assert replayed == streamed
    assert await comm.receive_nothing(timeout=0.3)
    await comm.disconnect()


@pytest.mark.parametrize("last_event_id", ["-1", "-5", "abc", "1.5"])
async def test_follow_over_sse_refuses_a_bad_last_event_id(scripted, owner_key, last_event_id):
    query_id, _ = await finished_turn(owner_key)
    response = await AsyncClient().get(
        f"/api/v1/chat/queries/{query_id}/events", headers={**bearer(owner_key), "Last-Event-ID": last_event_id}
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_field"


async def test_the_generation_log_never_replays_from_a_negative_position(scripted, owner_key):
    from chat.generations import follow

    query_id, streamed = await finished_turn(owner_key)
    replayed = [event async for event in follow(query_id, after_seq=-2)]
    assert [e["type"] for e in replayed].count("complete") == 1
    assert replayed == streamed
