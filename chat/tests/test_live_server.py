"""End to end through a real daphne process over loopback, with the real local model answering.

What the in-process tests cannot show: that tokens really leave the server one by one (nothing buffers the SSE
response), that what was streamed is what was saved, and that the socket works through daphne."""

import json
import time

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from testsupport.http import bearer, iter_sse_events

pytestmark = pytest.mark.local_model

# The model runs on a shared 2-core machine: allow for a slow CPU, but never wait forever.
TURN_TIMEOUT = httpx.Timeout(180, connect=10)


@pytest.fixture(scope="module")
def api_key(daphne_server):
    return daphne_server.create_user_with_key("live-api@example.com", "a long live-test password")


def stream_turn(base_url: str, key: str, payload: dict, path: str = "/api/v1/chat/stream"):
    """POST a turn and read its SSE answer incrementally: [(read number, arrival time, event), ...]."""
    with httpx.stream("POST", base_url + path, json=payload, headers=bearer(key), timeout=TURN_TIMEOUT) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return list(iter_sse_events(response))


def answer_text(received) -> str:
    return "".join(event["content"] for _, _, event in received if event["type"] == "content")


def test_sse_streams_status_metadata_and_tokens_as_they_are_generated(live_server_url, api_key):
    received = stream_turn(live_server_url, api_key, {"prompt": "Name three colours of the rainbow."})

    kinds = [event["type"] for _, _, event in received]
    assert kinds[0] == "status"
    assert kinds[1] == "metadata"
    assert "content" in kinds
    assert kinds[-2:] == ["complete", "done"], kinds
    assert kinds.index("content") > kinds.index("metadata")
    assert all(kind == "content" for kind in kinds[kinds.index("content") : -2])

    # Real streaming: the tokens came in over several network reads, before the answer was complete.
    complete_read, complete_at, complete = received[-2]
    content_reads = {read for read, _, event in received if event["type"] == "content"}
    assert len(content_reads) >= 2, "every token arrived in one read: the response was buffered"
    assert min(content_reads) < complete_read
    first_content_at = min(at for _, at, event in received if event["type"] == "content")
    assert complete_at > first_content_at

    # What was streamed is exactly what was saved.
    assert complete["status"] == "complete"
    streamed = answer_text(received)
    assert streamed.strip()
    assert complete["query"]["response"] == streamed
    assert complete["usage"]["outputTokens"] >= 1
    chat_id = received[1][2]["chatId"]
    saved = httpx.get(f"{live_server_url}/api/v1/chat/{chat_id}", headers=bearer(api_key), timeout=30)
    assert saved.status_code == 200
    (query,) = saved.json()["queries"]
    assert (query["status"], query["response"]) == ("complete", streamed)


def test_the_local_model_knows_the_capital_of_france(live_server_url, api_key):
    received = stream_turn(live_server_url, api_key, {"prompt": "What is the capital of France?"})

    assert received[-2][2]["status"] == "complete"
    assert "Paris" in answer_text(received)


def test_follow_up_over_sse_continues_the_same_chat(live_server_url, api_key):
    first = stream_turn(live_server_url, api_key, {"prompt": "What is the capital of France?"})
    chat_id = first[1][2]["chatId"]

    second = stream_turn(
        live_server_url, api_key, {"prompt": "And what is the capital of Italy?"}, f"/api/v1/chat/{chat_id}/stream"
    )

    assert second[1][2]["chatId"] == chat_id
    assert second[-2][2]["status"] == "complete"
    history = httpx.get(f"{live_server_url}/api/v1/chat/{chat_id}", headers=bearer(api_key), timeout=30).json()
    assert [q["prompt"] for q in history["queries"]] == [
        "What is the capital of France?",
        "And what is the capital of Italy?",
    ]
    assert history["queries"][1]["response"] == answer_text(second)


def test_websocket_round_trip_through_daphne(daphne_server, api_key):
    url = daphne_server.ws_url + "/ws/chat/"
    with connect(url, additional_headers=bearer(api_key), origin=daphne_server.url, open_timeout=30) as socket:
        socket.send(json.dumps({"prompt": "What is the capital of France?"}))
        received = []
        deadline = time.monotonic() + TURN_TIMEOUT.read
        while not received or received[-1]["type"] not in ("complete", "error"):
            received.append(json.loads(socket.recv(timeout=max(1.0, deadline - time.monotonic()))))

    kinds = [event["type"] for event in received]
    assert kinds[:2] == ["status", "metadata"]
    assert kinds[-1] == "complete", received[-1]
    text = "".join(event["content"] for event in received if event["type"] == "content")
    assert text and received[-1]["query"]["response"] == text
    assert "Paris" in text

    chat_id = received[1]["chatId"]
    saved = httpx.get(f"{daphne_server.url}/api/v1/chat/{chat_id}", headers=bearer(api_key), timeout=30).json()
    assert saved["queries"][0]["response"] == text


def test_an_anonymous_socket_is_refused_by_the_real_server(daphne_server):
    with connect(daphne_server.ws_url + "/ws/chat/", origin=daphne_server.url, open_timeout=30) as socket:
        event = json.loads(socket.recv(timeout=30))
        assert event["code"] == "unauthenticated"
        with pytest.raises(ConnectionClosed):
            socket.recv(timeout=30)
    assert socket.close_code == 4401
