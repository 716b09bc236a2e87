"""The chat socket in-process (channels' WebsocketCommunicator over querynox.asgi), and reading its frames."""

import json

from channels.testing import WebsocketCommunicator

from querynox.asgi import application

SITE = b"127.0.0.1:8000"
SITE_ORIGIN = b"http://" + SITE


def chat_socket(key: str | None = None, origin: bytes | None = SITE_ORIGIN, cookie: bytes | None = None,
                host: bytes = SITE) -> WebsocketCommunicator:
    """A /ws/chat/ handshake as a browser on this site (origin and host) or an API client (`key`) would make it."""
    headers = [(b"host", host)]
    if origin is not None:
        headers.append((b"origin", origin))
    if cookie:
        headers.append((b"cookie", cookie))
    if key:
        headers.append((b"authorization", f"Bearer {key}".encode()))
    return WebsocketCommunicator(application, "/ws/chat/", headers=headers)


async def frames_until(comm, marker: str, timeout: float = 10, limit: int = 500) -> list[str]:
    """Text frames up to and including the first one containing `marker`."""
    frames = []
    for _ in range(limit):
        frames.append(await comm.receive_from(timeout=timeout))
        if marker in frames[-1]:
            return frames
    raise AssertionError(f"no frame with {marker!r} in {limit} frames")


async def events_until(comm, kind: str, timeout: float = 5) -> list[dict]:
    """JSON events up to and including the first of type `kind` (or an error, which ends a turn too)."""
    received = []
    while True:
        event = json.loads(await comm.receive_from(timeout=timeout))
        received.append(event)
        if event["type"] in (kind, "error"):
            return received
