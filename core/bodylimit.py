"""An ASGI wrapper that bounds HTTP request bodies before the application reads them, and hands chunked bodies
(no Content-Length) to Django whole.

Django sizes a request by its Content-Length: without one (Transfer-Encoding: chunked) it sees an empty body, so a
chunked multipart upload arrived as a form without fields ("prompt: Field required"). This wrapper reads such a
body with a running count, answers 413 as soon as it passes the limit, and otherwise passes it on with the
Content-Length it turned out to have. A declared Content-Length over the limit is answered 413 without reading.

Under daphne the same limits already hold before Twisted buffers the body (querynox/server.py); this wrapper keeps
them under any other ASGI server or test client, and is the one that makes chunked bodies readable.
"""

import json
from collections.abc import Callable


def _header(scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value
    return None


async def send_too_large(send, message: str) -> None:
    body = json.dumps({"error": message, "code": "body_too_large"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestBodyLimit:
    """Wraps the HTTP application. limit_for_path(path) gives the most bytes a body to that path may have;
    too_large(size or None, limit) the message a refused client reads."""

    def __init__(self, app, limit_for_path: Callable[[str], int], too_large: Callable[[int | None, int], str]):
        self.app = app
        self.limit_for_path = limit_for_path
        self.too_large = too_large

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit_for_path(scope.get("raw_path", b"").decode("latin-1") or scope["path"])
        declared = _header(scope, b"content-length")
        if declared is not None:
            if declared.isdigit() and int(declared) > limit:
                return await send_too_large(send, self.too_large(int(declared), limit))
            return await self.app(scope, receive, send)
        if _header(scope, b"transfer-encoding") is None:
            return await self.app(scope, receive, send)  # neither header: HTTP/1.1 says there is no body
        return await self._with_measured_body(scope, receive, send, limit)

    async def _with_measured_body(self, scope, receive, send, limit):
        # The messages are kept as they came (the server already holds these bytes; nothing is copied) and replayed.
        messages, size = [], 0
        while True:  # bounded: each message adds its bytes to size, and more than `limit` ends the loop
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            size += len(message.get("body", b""))
            if size > limit:
                return await send_too_large(send, self.too_large(None, limit))
            messages.append(message)
            if not message.get("more_body", False):
                break
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in (b"transfer-encoding", b"content-length")]
        headers.append((b"content-length", str(size).encode()))
        replay = iter(messages)

        async def replayed_receive():
            # After the body, whatever the server sends next (a disconnect) is the app's to hear.
            return next(replay, None) or await receive()

        return await self.app(dict(scope, headers=headers), replayed_receive, send)
