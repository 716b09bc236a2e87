"""Two real daphne instances on different loopback ports share one database and one Redis, as two replicas do.

A client streams from instance A, drops the connection mid-answer and resumes on instance B; a stop sent to B stops
the generation running on A; A killed mid-answer leaves an error with the partial answer, never `streaming`; and A
shut down with SIGTERM finishes (or stops) its generations first. The provider is the emulator, reached through the
real OpenAI SDK, streaming numbered words at a fixed rate so every token can be accounted for.

With the suite on PostgreSQL the instances get a fresh database on the same server (and a connection pool);
otherwise they share one SQLite file.
"""

import json
import signal
import time
import uuid

import httpx
import psycopg
import pytest
from django.conf import settings
from websockets.sync.client import connect

from testsupport.emulator import reply_pieces
from testsupport.http import bearer, free_port, iter_sse_events
from testsupport.live import LiveServer

HEARTBEAT_MS = 300
SHUTDOWN_GRACE_SECONDS = 2
PUBLIC_RATE_LIMIT = 6


def numbered_reply(words: int) -> str:
    return " ".join(f"w{n:03d}" for n in range(1, words + 1))


@pytest.fixture(scope="module")
def shared_database_url(tmp_path_factory):
    database = settings.DATABASES["default"]
    if "postgresql" not in database["ENGINE"]:
        yield f"sqlite:///{tmp_path_factory.mktemp('two-instances') / 'shared.sqlite3'}"
        return
    name = f"querynox_instances_{uuid.uuid4().hex[:8]}"
    server = {
        "host": database["HOST"] or "127.0.0.1",
        "port": database["PORT"] or 5432,
        "user": database["USER"],
        "password": database["PASSWORD"],
    }
    with psycopg.connect(dbname="postgres", autocommit=True, **server) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield f"postgres://{server['user']}:{server['password'] or ''}@{server['host']}:{server['port']}/{name}"
    with psycopg.connect(dbname="postgres", autocommit=True, **server) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def instances(tmp_path_factory, shared_database_url, redis_url, provider_emulator):
    env = {
        "DATABASE_URL": shared_database_url,
        "REDIS_URL": redis_url,
        "OPENAI_API_KEY": "sk-emulator",
        "OPENAI_BASE_URL": f"{provider_emulator.url}/v1",
        "DEFAULT_MODEL": "gpt-3.5-turbo",
        "FALLBACK_MODELS": "",
        "UTILITY_MODELS": "",
        "CHAT_NAMING": "false",
        "LOCAL_MODEL_PRELOAD": "false",
        "GENERATION_HEARTBEAT_MS": str(HEARTBEAT_MS),
        "GENERATION_SHUTDOWN_GRACE_SECONDS": str(SHUTDOWN_GRACE_SECONDS),
        "PUBLIC_CHAT_RATE_LIMIT": str(PUBLIC_RATE_LIMIT),
        "PUBLIC_CHAT_RATE_WINDOW": "60",
    }
    if shared_database_url.startswith("postgres"):
        env["DB_POOL_MAX_SIZE"] = "4"
    a = LiveServer(tmp_path_factory.mktemp("instance-a"), extra_env=env).start()
    b = LiveServer(tmp_path_factory.mktemp("instance-b"), extra_env=env).start()
    key = a.create_user_with_key("replicas@example.com", "a good long password")
    yield a, b, key
    a.stop()
    b.stop()


@pytest.fixture
def emulator_reply(provider_emulator):
    provider_emulator.reset()

    def configure(words: int, tokens_per_second: float) -> str:
        reply = numbered_reply(words)
        provider_emulator.configure(reply=reply, tokens_per_second=tokens_per_second)
        return reply

    yield configure
    provider_emulator.reset()


def running(server: LiveServer) -> LiveServer:
    """The instance, restarted on a new port if an earlier test stopped or killed it."""
    if server.process is None or server.process.poll() is not None:
        server.stop()
        server.port = None
        server.port = free_port()
        server._spawn()
        server._wait_healthy(60)
    return server


def start_stream(client: httpx.Client, server: LiveServer, key: str, prompt: str):
    return client.stream(
        "POST", f"{server.url}/api/v1/chat/stream", headers=bearer(key), json={"prompt": prompt}, timeout=30
    )


def follow_stream(client: httpx.Client, server: LiveServer, key: str, query_id: str, after: int = 0):
    headers = {**bearer(key), "Last-Event-ID": str(after)}
    return client.stream("GET", f"{server.url}/api/v1/chat/queries/{query_id}/events", headers=headers, timeout=30)


def saved_query(server: LiveServer, key: str, chat_id: str, query_id: str) -> dict:
    response = httpx.get(f"{server.url}/api/v1/chat/{chat_id}", headers=bearer(key), timeout=10)
    response.raise_for_status()
    return next(q for q in response.json()["queries"] if q["id"] == query_id)


class Events:
    """The SSE events of a streaming response, read in installments."""

    def __init__(self, response):
        self._events = (event for _, _, event in iter_sse_events(response))

    def __iter__(self):
        return self._events


def read_until(stream: Events, enough) -> list[dict]:
    """Events of `stream` until `enough(events)` is true or the stream ends."""
    received = []
    for event in stream:
        received.append(event)
        if enough(received):
            break
    return received


def content_count(events: list[dict]) -> int:
    return sum(1 for e in events if e["type"] == "content")


def test_a_client_that_moves_to_the_other_instance_gets_every_token_exactly_once_in_order(instances, emulator_reply):
    a, b, key = (running(instances[0]), running(instances[1]), instances[2])
    reply = emulator_reply(words=120, tokens_per_second=40)  # about 3 s of streaming
    with httpx.Client() as client:
        with start_stream(client, a, key, "Count to 120, please.") as response:
            assert response.status_code == 200
            on_a = read_until(Events(response), lambda got: content_count(got) >= 25)
        # The connection to A is closed here, mid-answer; A keeps generating.
        metadata = next(e for e in on_a if e["type"] == "metadata")
        last_seen = int(on_a[-1]["id"])
        time.sleep(0.5)  # tokens generated while the client is away must come back too
        with follow_stream(client, b, key, metadata["queryId"], after=last_seen) as response:
            assert response.status_code == 200
            on_b = read_until(Events(response), lambda got: got[-1]["type"] in ("complete", "error", "done"))

    received = [e for e in on_a + on_b if "id" in e]
    ids = [int(e["id"]) for e in received]
    tokens = [e["content"] for e in received if e["type"] == "content"]
    sent = reply_pieces(reply)
    figures = {
        "tokens_sent": len(sent),
        "tokens_received": len(tokens),
        "received_on_a": content_count(on_a),
        "received_on_b": content_count(on_b),
        "duplicates": len(ids) - len(set(ids)),
        "gaps": (max(ids) - min(ids) + 1) - len(set(ids)),
    }
    print("two-instance reconnect:", json.dumps(figures))
    assert ids == list(range(1, len(ids) + 1)), "events out of order, duplicated or missing"
    assert tokens == sent
    assert "".join(tokens) == reply
    assert figures["received_on_a"] >= 25 and figures["received_on_b"] > 0
    assert received[-1]["type"] == "complete" and received[-1]["status"] == "complete"
    saved = saved_query(b, key, metadata["chatId"], metadata["queryId"])
    assert saved["status"] == "complete" and saved["response"] == reply


def test_a_socket_client_that_moves_to_the_other_instance_gets_every_token_exactly_once_in_order(
    instances, emulator_reply
):
    a, b, key = (running(instances[0]), running(instances[1]), instances[2])
    reply = emulator_reply(words=80, tokens_per_second=40)
    with connect(f"{a.ws_url}/ws/chat/", additional_headers=bearer(key), origin=a.url, open_timeout=30) as socket:
        socket.send(json.dumps({"prompt": "Count to 80 over a socket."}))
        on_a = []
        while content_count(on_a) < 15:
            on_a.append(json.loads(socket.recv(timeout=30)))
    metadata = next(e for e in on_a if e["type"] == "metadata")
    with connect(f"{b.ws_url}/ws/chat/", additional_headers=bearer(key), origin=b.url, open_timeout=30) as socket:
        socket.send(json.dumps({"action": "follow", "queryId": metadata["queryId"], "after": on_a[-1]["seq"]}))
        on_b = [json.loads(socket.recv(timeout=30))]
        while on_b[-1]["type"] not in ("complete", "error"):
            on_b.append(json.loads(socket.recv(timeout=30)))

    received = on_a + on_b
    assert [e["seq"] for e in received] == list(range(1, len(received) + 1))
    assert "".join(e["content"] for e in received if e["type"] == "content") == reply
    assert content_count(on_b) > 0 and received[-1]["status"] == "complete"


def test_stop_sent_to_one_instance_stops_the_generation_running_on_the_other(
    instances, emulator_reply, provider_emulator
):
    a, b, key = (running(instances[0]), running(instances[1]), instances[2])
    reply = emulator_reply(words=400, tokens_per_second=20)  # 20 s if nothing stops it
    with httpx.Client() as client, start_stream(client, a, key, "A long answer, please.") as response:
        sse = Events(response)
        events = read_until(sse, lambda got: content_count(got) >= 5)
        metadata = next(e for e in events if e["type"] == "metadata")
        stopped_at = time.monotonic()
        stop = client.post(f"{b.url}/api/v1/chat/queries/{metadata['queryId']}/stop", headers=bearer(key))
        assert stop.status_code == 200 and stop.json()["stopped"] is True
        events += read_until(sse, lambda got: got[-1]["type"] in ("complete", "error"))
        took = time.monotonic() - stopped_at

    print(f"two-instance stop: sent to B, A's stream ended {took * 1000:.0f} ms later")
    assert events[-1]["type"] == "complete" and events[-1]["status"] == "stopped"
    assert took < 5, f"the stop took {took:.1f} s to reach instance A"
    streamed = streamed_text(events)
    assert reply.startswith(streamed) and len(streamed) < len(reply)
    saved = saved_query(b, key, metadata["chatId"], metadata["queryId"])
    assert saved["status"] == "stopped" and saved["response"] == streamed
    assert provider_emulator.wait_closed_early(1), "instance A did not close the provider stream"


def signal_a_while_b_watches(a, b, key, prompt: str, tokens_first: int, signum: int) -> tuple[dict, list[dict], float]:
    """Start a turn on A, follow it from B, send A `signum` after `tokens_first` tokens, and read B to the end.
    Returns the turn's metadata event, everything B received, and the seconds from the signal to the last event."""
    with httpx.Client() as client:
        with start_stream(client, a, key, prompt) as response:
            metadata = read_until(Events(response), lambda got: got[-1]["type"] == "metadata")[-1]
        with follow_stream(client, b, key, metadata["queryId"]) as response:
            sse = Events(response)
            events = read_until(sse, lambda got: content_count(got) >= tokens_first)
            a.process.send_signal(signum)
            signalled_at = time.monotonic()
            events += read_until(sse, lambda got: got[-1]["type"] in ("complete", "error"))
            return metadata, events, time.monotonic() - signalled_at


def streamed_text(events: list[dict]) -> str:
    return "".join(e["content"] for e in events if e["type"] == "content")


def test_an_instance_killed_mid_answer_leaves_an_error_with_the_partial_answer(instances, emulator_reply):
    a, b, key = (running(instances[0]), running(instances[1]), instances[2])
    emulator_reply(words=400, tokens_per_second=20)

    metadata, events, noticed_after = signal_a_while_b_watches(a, b, key, "Another long answer.", 10, signal.SIGKILL)

    print(f"two-instance kill: B reported A's death {noticed_after * 1000:.0f} ms after SIGKILL")
    assert events[-1]["type"] == "error" and events[-1]["code"] == "instance_lost"
    assert noticed_after < 5, f"B took {noticed_after:.1f} s to notice that A died"
    saved = saved_query(b, key, metadata["chatId"], metadata["queryId"])
    assert saved["status"] == "error"
    assert saved["response"] == streamed_text(events) and len(saved["response"]) > 0


def test_sigterm_lets_a_short_generation_finish(instances, emulator_reply):
    a, b, key = (running(instances[0]), running(instances[1]), instances[2])
    reply = emulator_reply(words=30, tokens_per_second=30)  # about 1 s, inside the grace period

    metadata, events, _ = signal_a_while_b_watches(a, b, key, "A short answer.", 3, signal.SIGTERM)

    assert a.process.wait(timeout=15) is not None
    assert events[-1]["type"] == "complete" and events[-1]["status"] == "complete"
    saved = saved_query(b, key, metadata["chatId"], metadata["queryId"])
    assert saved["status"] == "complete" and saved["response"] == reply


def test_sigterm_saves_a_long_generation_as_stopped_after_the_grace_period(instances, emulator_reply):
    a, b, key = (running(instances[0]), running(instances[1]), instances[2])
    reply = emulator_reply(words=400, tokens_per_second=20)

    metadata, events, took = signal_a_while_b_watches(a, b, key, "A very long answer.", 3, signal.SIGTERM)

    assert a.process.wait(timeout=15) is not None
    print(f"two-instance SIGTERM: stopped after {took * 1000:.0f} ms (grace {SHUTDOWN_GRACE_SECONDS} s)")
    assert events[-1]["type"] == "complete" and events[-1]["status"] == "stopped"
    assert SHUTDOWN_GRACE_SECONDS - 0.5 <= took < SHUTDOWN_GRACE_SECONDS + 5
    saved = saved_query(b, key, metadata["chatId"], metadata["queryId"])
    streamed = streamed_text(events)
    assert saved["status"] == "stopped" and saved["response"] == streamed and reply.startswith(streamed)


def test_the_public_chat_cache_and_its_rate_limit_are_shared_by_both_instances(instances, emulator_reply):
    a, b, key = (running(instances[0]), running(instances[1]), instances[2])
    emulator_reply(words=5, tokens_per_second=0)
    created = httpx.post(f"{a.url}/api/v1/chat", headers=bearer(key), json={"prompt": "Hello"}, timeout=30)
    assert created.status_code == 201
    chat_id = created.json()["chat"]["id"]
    shared = httpx.patch(f"{a.url}/api/v1/chat/{chat_id}/share", headers=bearer(key), json={"shared": True})
    assert shared.status_code == 200

    public = f"/api/v1/public/chat/{chat_id}"
    assert httpx.get(b.url + public).json()["chat"]["title"] == "Hello"  # B caches the public view
    renamed = httpx.patch(f"{a.url}/api/v1/chat/{chat_id}", headers=bearer(key), json={"title": "Renamed on A"})
    assert renamed.status_code == 200
    assert httpx.get(b.url + public).json()["chat"]["title"] == "Renamed on A"  # A's change cleared B's copy

    # Two requests were counted above; the rest of the window's allowance is split between the instances.
    statuses = [httpx.get((a if n % 2 else b).url + public).status_code for n in range(PUBLIC_RATE_LIMIT)]
    assert statuses == [200] * (PUBLIC_RATE_LIMIT - 2) + [429, 429]
