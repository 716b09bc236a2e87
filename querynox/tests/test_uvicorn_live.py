"""The production server (querynox/uvicorn_server.py, the Dockerfile's and compose's command) on a real process:
turns stream over SSE and WebSocket, bodies over their limit get 413 before they are read, the log holds no access
line (the hardening tests of daphne, run against uvicorn), socket messages up to our limit reach the consumer, and
SIGTERM lets a running generation finish before the process exits."""

import json
import signal
import socket
import time
import uuid

import httpx
import pytest
from websockets.sync.client import connect

from querynox.tests import test_live_hardening as hardening
from testsupport.http import bearer, iter_sse_events

TURN_TIMEOUT = httpx.Timeout(60, connect=10)
REPLY = "one two three four five six seven eight"


@pytest.fixture(scope="module")
def uvicorn_server(tmp_path_factory, provider_emulator):
    from testsupport.browser import start_emulator_server

    provider_emulator.reset()
    server = start_emulator_server(tmp_path_factory.mktemp("uvicorn-live"), provider_emulator.url, server="uvicorn")
    yield server
    server.stop()
    provider_emulator.reset()


@pytest.fixture
def paced_emulator(provider_emulator):
    # Eight words at 40 per second: about 0.2 s of answer, so buffering would show as one read.
    provider_emulator.configure(reply=REPLY, tokens_per_second=40)
    yield provider_emulator
    provider_emulator.reset()


@pytest.fixture(scope="module")
def api_key(uvicorn_server):
    return uvicorn_server.create_user_with_key("uvicorn-live@example.com", "a long uvicorn-live password")


def test_the_server_is_uvicorn_without_a_server_header(uvicorn_server):
    response = httpx.get(uvicorn_server.url + "/api/v1/health", timeout=30)

    assert response.status_code == 200
    assert "server" not in response.headers
    assert uvicorn_server.process.args[1:3] == ["-m", "querynox.uvicorn_server"]


def test_an_sse_turn_streams(uvicorn_server, api_key, paced_emulator):
    with httpx.stream(
        "POST", uvicorn_server.url + "/api/v1/chat/stream", json={"prompt": "Count to eight."}, headers=bearer(api_key),
        timeout=TURN_TIMEOUT,
    ) as response:  # fmt: skip
        assert response.status_code == 200, response.read()
        received = list(iter_sse_events(response))

    kinds = [event["type"] for _, _, event in received]
    assert kinds[-2:] == ["complete", "done"], kinds
    content_reads = {read for read, _, event in received if event["type"] == "content"}
    assert len(content_reads) >= 2, "every token arrived in one read: the response was buffered"
    text = "".join(event["content"] for _, _, event in received if event["type"] == "content")
    assert text.split() == REPLY.split()
    assert received[-2][2]["query"]["response"] == text


def test_a_websocket_turn_streams(uvicorn_server, api_key, paced_emulator):
    url = uvicorn_server.ws_url + "/ws/chat/"
    arrivals = []
    with connect(url, additional_headers=bearer(api_key), open_timeout=30) as ws:
        ws.send(json.dumps({"prompt": "Count to eight."}))
        deadline = time.monotonic() + 60
        while not arrivals or arrivals[-1][1]["type"] not in ("complete", "error"):
            event = json.loads(ws.recv(timeout=max(1.0, deadline - time.monotonic())))
            arrivals.append((time.monotonic(), event))

    assert arrivals[-1][1]["type"] == "complete", arrivals[-1]
    contents = [(at, event) for at, event in arrivals if event["type"] == "content"]
    assert "".join(event["content"] for _, event in contents).split() == REPLY.split()
    assert contents[-1][0] - contents[0][0] > 0.05, "the tokens came all at once"


def test_a_declared_body_over_the_limit_gets_413_before_it_is_sent(uvicorn_server):
    """Only the headers go out: the answer must come without the server waiting for (or storing) the 30 MB."""
    with socket.create_connection(("127.0.0.1", uvicorn_server.port), timeout=30) as conn:
        conn.sendall(
            b"POST /api/v1/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 31457280\r\n\r\n"
        )
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):  # bounded by the socket timeout
            chunk = conn.recv(65536)
            if not chunk:
                break
            answer += chunk

    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), answer[:300]
    assert json.loads(body)["code"] == "body_too_large"


def test_an_oversized_body_sent_whole_gets_413(uvicorn_server, api_key):
    body = json.dumps({"shared": True, "padding": "x" * (2 * 1024 * 1024)}).encode()

    response = httpx.patch(
        f"{uvicorn_server.url}/api/v1/chat/{uuid.uuid4()}/share",
        content=body,
        headers={"Content-Type": "application/json", **bearer(api_key)},
        timeout=TURN_TIMEOUT,
    )

    assert response.status_code == 413
    assert response.json()["code"] == "body_too_large"


def test_a_chunked_body_over_the_limit_gets_413(uvicorn_server, api_key):
    def pieces():
        for _ in range(40):  # 40 MiB at most, far past every limit
            yield b"a" * (1024 * 1024)

    response = httpx.post(
        uvicorn_server.url + "/api/v1/chat",
        content=pieces(),
        headers={"Content-Type": "application/json", **bearer(api_key)},
        timeout=TURN_TIMEOUT,
    )

    assert response.status_code == 413
    assert response.json()["code"] == "body_too_large"


def test_the_log_holds_routes_and_no_access_lines(uvicorn_server):
    hardening.test_the_log_holds_routes_never_raw_paths_or_query_strings(uvicorn_server)


@pytest.mark.parametrize("size", [1_500_000, 3_000_000])
def test_a_socket_message_over_1_mb_gets_our_error_and_a_clean_close(uvicorn_server, size):
    hardening.test_a_socket_message_over_1_mb_gets_our_error_and_a_clean_close(uvicorn_server, size)


def test_sigterm_lets_a_running_generation_finish_and_keeps_it(tmp_path, provider_emulator):
    from testsupport.browser import start_emulator_server

    provider_emulator.configure(reply=REPLY, tokens_per_second=8)  # about one second of answer
    server = start_emulator_server(tmp_path, provider_emulator.url, server="uvicorn")
    try:
        key = server.create_user_with_key("uvicorn-sigterm@example.com", "a long sigterm password")
        with httpx.stream(
            "POST", server.url + "/api/v1/chat/stream", json={"prompt": "Count."}, headers=bearer(key),
            timeout=TURN_TIMEOUT,
        ) as response:  # fmt: skip
            events = iter_sse_events(response)
            chat_id = None
            for _, _, event in events:  # bounded by the stream's end and the timeout
                chat_id = chat_id or event.get("chatId")
                if event["type"] == "content":
                    server.process.send_signal(signal.SIGTERM)
                    break
            rest = [event for _, _, event in events]
        assert rest[-2:] and rest[-2]["type"] == "complete", rest[-3:]
        server.process.wait(timeout=60)
        # The answer was saved whole: read it back from a fresh server on the same database.
        server.stop()
        server = start_emulator_server(tmp_path, provider_emulator.url, server="uvicorn")
        saved = httpx.get(f"{server.url}/api/v1/chat/{chat_id}", headers=bearer(key), timeout=30).json()
        assert [(q["status"], q["response"].split()) for q in saved["queries"]] == [("complete", REPLY.split())]
    finally:
        server.stop()
        provider_emulator.reset()


def test_the_server_module_keeps_daphnes_limits():
    from querynox import server as daphne_server
    from querynox import uvicorn_server

    config = uvicorn_server.build_config("127.0.0.1", 8000, proxy_headers=False)
    assert uvicorn_server.WEBSOCKET_MAX_MESSAGE_BYTES == daphne_server.WEBSOCKET_MAX_MESSAGE_BYTES
    assert config.ws_max_size == daphne_server.WEBSOCKET_MAX_MESSAGE_BYTES
    assert (config.access_log, config.server_header, config.proxy_headers) == (False, False, False)
    assert config.ws_per_message_deflate is False
    assert (config.loop, config.http, config.lifespan) == ("uvloop", "httptools", "on")
    behind_proxy = uvicorn_server.build_config("0.0.0.0", 8000, proxy_headers=True)
    assert behind_proxy.proxy_headers is True and behind_proxy.forwarded_allow_ips == "*"
