"""QueryNox's production server: uvicorn (uvloop event loop, httptools parser) serving querynox.asgi:application.

    python -m querynox.uvicorn_server --host 0.0.0.0 --port 8000 [--proxy-headers]

The Dockerfile and compose.yaml run this; `make run` and the live-server tests keep daphne (querynox/server.py),
which stays supported. Measured on the same harness, uvicorn spent less CPU per request and per streamed turn
than daphne (bench/README.md, "Request overhead"). What daphne got from querynox/server.py, this gets too:

- request bodies: bounded by querynox/asgi.py (core/bodylimit.py) before Django reads them; uvicorn itself never
  buffers more than its flow-control high-water mark (64 KiB) of a body the application has not asked for;
- no access log: it would print raw paths and query strings; the JSON `querynox.request` line (core/middleware.py)
  describes each request by its route instead;
- WebSocket messages up to querynox.body_limits.WEBSOCKET_MAX_MESSAGE_BYTES, above the chat consumer's own limit, so a
  message over ours reaches the consumer and gets its `message_too_large` error frame; no per-message compression
  (a zlib context per socket costs more memory than the socket itself);
- client addresses from X-Forwarded-For / X-Forwarded-Proto only with --proxy-headers (behind nginx in compose,
  whose replicas publish no port), from any peer then; without it the TCP peer is the client, as with daphne;
- no `Server` header;
- the orphan sweeper from start-up, and on SIGTERM running generations get GENERATION_SHUTDOWN_GRACE_SECONDS in all
  (counted from the signal) to finish before the rest are saved as `stopped`: daphne does this from Twisted's
  hooks (querynox/asgi.py), here it is the ASGI lifespan protocol, which Channels' router does not speak.
"""

import argparse
import asyncio
import contextvars
import time

import uvicorn

from querynox.body_limits import WEBSOCKET_MAX_MESSAGE_BYTES


class LifespanApp:
    """The application, plus the lifespan protocol: the sweeper on start-up, generations wound down on shutdown."""

    def __init__(self, app, server_holder: dict):
        self.app = app
        self.server_holder = server_holder
        self.sweeper: asyncio.Task | None = None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "lifespan":
            return await self.app(scope, receive, send)
        from django.conf import settings

        from chat import generations

        while True:  # ends with the shutdown message, the last one uvicorn sends
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.sweeper = asyncio.get_running_loop().create_task(
                    generations.run_sweeper(), context=contextvars.Context()
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                server = self.server_holder.get("server")
                asked = getattr(server, "exit_requested_at", None) or time.monotonic()
                remaining = max(0.0, settings.GENERATION_SHUTDOWN_GRACE_SECONDS - (time.monotonic() - asked))
                await generations.shutdown(grace_seconds=remaining)
                if self.sweeper is not None:
                    self.sweeper.cancel()
                await send({"type": "lifespan.shutdown.complete"})
                return


class Server(uvicorn.Server):
    """uvicorn's server, noting when it was asked to stop (the generations' grace is counted from then)."""

    exit_requested_at: float | None = None

    def handle_exit(self, sig, frame) -> None:
        if self.exit_requested_at is None:
            self.exit_requested_at = time.monotonic()
        super().handle_exit(sig, frame)


def build_config(host: str, port: int, proxy_headers: bool) -> uvicorn.Config:
    from django.conf import settings

    from querynox.asgi import application

    holder: dict = {}
    config = uvicorn.Config(
        LifespanApp(application, holder),
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        ws="websockets",
        ws_max_size=WEBSOCKET_MAX_MESSAGE_BYTES,
        ws_per_message_deflate=False,
        lifespan="on",
        access_log=False,
        server_header=False,
        proxy_headers=proxy_headers,
        forwarded_allow_ips="*" if proxy_headers else None,
        # Streamed answers in flight finish within the generations' grace before uvicorn cancels what is left.
        timeout_graceful_shutdown=settings.GENERATION_SHUTDOWN_GRACE_SECONDS,
        backlog=4096,
        log_config=None,  # Django's LOGGING (JSON lines) stays the process's logging configuration
    )
    config.holder = holder
    return config


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--proxy-headers",
        action="store_true",
        help="take the client address and scheme from X-Forwarded-For / X-Forwarded-Proto (only behind a proxy)",
    )
    args = parser.parse_args(argv)
    config = build_config(args.host, args.port, args.proxy_headers)
    server = Server(config)
    config.holder["server"] = server
    server.run()


if __name__ == "__main__":
    main()
