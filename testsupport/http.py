"""Small HTTP and SSE helpers shared by the tests and the benchmarks: one copy of each."""

import json
import socket
import time

import httpx
from asgiref.sync import ThreadSensitiveContext
from django.test import AsyncClient

HOST = "127.0.0.1"


def bearer(raw_key: str) -> dict:
    return {"Authorization": f"Bearer {raw_key}"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class ServerAsyncClient(AsyncClient):
    """An AsyncClient that runs each request in its own thread-sensitive context, as Django's ASGIHandler does.

    The plain AsyncClient skips that context, so sync middleware borrows asgiref's one global sync thread while
    the async view runs; a non-streaming turn then waits on a generation whose database work is queued behind
    that same thread, and deadlocks. Under the real server (daphne) each request has its own thread."""

    async def request(self, **request):
        async with ThreadSensitiveContext():
            return await super().request(**request)


def parse_sse(body: str) -> list[dict]:
    """The JSON events of an SSE body, in order; the closing [DONE] marker is kept as {'type': 'done'}."""
    frames = (_parse_sse_frame(frame) for frame in body.replace("\r\n", "\n").split("\n\n"))
    # Event ids stay out: callers compare events with what the pipeline yielded.
    return [{key: value for key, value in event.items() if key != "id"} for event in frames if event is not None]


async def read_until_query_id(stream) -> str:
    """Read an SSE stream (a response's streaming_content) up to the event naming the turn's query; the rest is
    left unread, so the test can act mid-answer."""
    async for chunk in stream:
        for event in parse_sse(chunk.decode()):
            if "queryId" in event:
                return event["queryId"]
    raise AssertionError("the stream ended without naming its query")


async def read_streaming(response) -> str:
    chunks = []
    async for chunk in response.streaming_content:
        chunks.append(chunk.decode() if isinstance(chunk, bytes) else chunk)
    return "".join(chunks)


def iter_sse_events(response: httpx.Response):
    """(read number, arrival time, event) for each SSE event of a streaming httpx response, as it arrives.

    The read number counts the network reads, so a caller can tell events that really arrived apart from events
    that came in one buffered lump. The closing `[DONE]` marker is yielded as {'type': 'done'}; an `id:` line
    becomes the event's 'id'."""
    buffer = ""
    for read_number, chunk in enumerate(response.iter_text(), start=1):
        arrived = time.monotonic()
        buffer += chunk.replace("\r\n", "\n")
        while "\n\n" in buffer:
            frame, buffer = buffer.split("\n\n", 1)
            event = _parse_sse_frame(frame)
            if event is not None:
                yield read_number, arrived, event


def _parse_sse_frame(frame: str) -> dict | None:
    event_id = None
    data_lines = []
    for line in frame.split("\n"):
        if line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("data:"):
            data_lines.append(line[5:].removeprefix(" "))
    if not data_lines:
        return None
    data = "\n".join(data_lines)
    event = {"type": "done"} if data == "[DONE]" else json.loads(data)
    if event_id is not None:
        event["id"] = event_id
    return event


async def stream_turn(client, key, payload, path="/api/v1/chat/stream"):
    response = await client.post(path, payload, content_type="application/json", headers=bearer(key))
    assert response.status_code == 200, getattr(response, "content", b"")
    assert response["Content-Type"].startswith("text/event-stream")
    return parse_sse(await read_streaming(response))
