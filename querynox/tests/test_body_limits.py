"""The per-path body limits and the ASGI wrapper that applies them (core/bodylimit.py), in process. The same limits
on a real server, before Twisted buffers anything, are in test_body_limits_live.py."""

import json

import pytest
from django.test import override_settings

from core.bodylimit import RequestBodyLimit
from querynox.body_limits import request_body_limit, too_large_message, upload_limit

LIMITS = {"DATA_UPLOAD_MAX_MEMORY_SIZE": 1000, "RAG_MAX_REQUEST_BYTES": 5000}


@override_settings(**LIMITS)
@pytest.mark.parametrize(
    "path",
    ["/api/v1/chat", "/api/v1/chat/stream", "/api/v1/chat/0b7e/stream", "/api/v1/chat/0b7e", "/chat/attachments/"],
)
def test_the_endpoints_that_take_files_accept_the_upload_limit(path):
    assert request_body_limit(path) == upload_limit() == 6000


@override_settings(**LIMITS)
@pytest.mark.parametrize(
    "path", ["/nonexistent", "/api/v1/chat/0b7e/share", "/accounts/login/", "/api/v1/payments/webhook", "/"]
)
def test_every_other_path_gets_the_ordinary_limit(path):
    assert request_body_limit(path) == 1000


class Recorder:
    """An ASGI app that reads the whole body and answers 200, keeping what it was given."""

    def __init__(self):
        self.scope = None
        self.body = None

    async def __call__(self, scope, receive, send):
        self.scope, chunks = scope, []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        self.body = b"".join(chunks)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def call(headers, chunks, limit=100):
    app = Recorder()
    wrapped = RequestBodyLimit(app, lambda path: limit, too_large_message)
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    received = 0

    async def receive():
        nonlocal received
        received += 1
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/x", "raw_path": b"/x", "headers": headers}
    await wrapped(scope, receive, send)
    return app, sent, received


async def test_a_declared_length_over_the_limit_is_refused_without_reading_the_body():
    app, sent, received = await call([(b"content-length", b"101")], [b"a" * 101])

    assert app.scope is None and received == 0
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"]) == {
        "error": "The request body is 101 bytes; the limit is 100 bytes for this endpoint.",
        "code": "body_too_large",
    }


async def test_a_declared_length_within_the_limit_passes_untouched():
    headers = [(b"content-length", b"100"), (b"content-type", b"text/plain")]
    app, sent, _ = await call(headers, [b"a" * 100])

    assert app.scope["headers"] == headers and app.body == b"a" * 100
    assert sent[0]["status"] == 200


async def test_a_chunked_body_within_the_limit_reaches_the_app_whole_with_its_length():
    headers = [(b"transfer-encoding", b"chunked"), (b"content-type", b"text/plain")]
    app, sent, _ = await call(headers, [b"a" * 40, b"b" * 40, b"c" * 20])

    assert app.body == b"a" * 40 + b"b" * 40 + b"c" * 20
    assert sorted(app.scope["headers"]) == [(b"content-length", b"100"), (b"content-type", b"text/plain")]
    assert sent[0]["status"] == 200


async def test_a_chunked_body_is_cut_off_as_soon_as_it_passes_the_limit():
    app, sent, received = await call([(b"transfer-encoding", b"chunked")], [b"a" * 60, b"b" * 60, b"c" * 60])

    assert app.scope is None
    assert received == 2  # the third chunk was never asked for
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["error"] == "The request body is over 100 bytes for this endpoint."


async def test_a_request_without_a_body_is_not_read_ahead():
    app, sent, received = await call([], [b""])

    assert received == 1 and app.scope["headers"] == []  # the app itself read the one empty message
    assert sent[0]["status"] == 200
