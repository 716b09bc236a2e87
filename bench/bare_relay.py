"""A bare OpenAI-format relay: the floor a gateway is compared with in bench/gateway.py.

No auth, no database, no quota: `POST /v1/chat/completions` is forwarded to the upstream as it came and the answer
(SSE or JSON) is copied back chunk by chunk. aiohttp on both sides, one process, one keep-alive pool.

    .venv/bin/python bench/bare_relay.py --port 8766 --upstream http://127.0.0.1:8765
"""

import argparse
import ipaddress
from urllib.parse import urlsplit

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

FORWARDED_HEADERS = ("Authorization", "Content-Type")


def make_app(upstream: str) -> web.Application:
    app = web.Application()

    async def start(app):
        # No pool limit: a bounded pool would queue streams that the relay should pass straight through.
        app["session"] = ClientSession(connector=TCPConnector(limit=0), timeout=ClientTimeout(total=600))

    async def stop(app):
        await app["session"].close()

    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {name: request.headers[name] for name in FORWARDED_HEADERS if name in request.headers}
        async with request.app["session"].post(f"{upstream}/v1/chat/completions", data=body, headers=headers) as up:
            content_type = up.headers.get("Content-Type", "application/json")
            if not content_type.startswith("text/event-stream"):
                return web.Response(status=up.status, body=await up.read(), headers={"Content-Type": content_type})
            response = web.StreamResponse(
                status=up.status, headers={"Content-Type": content_type, "Cache-Control": "no-cache"}
            )
            await response.prepare(request)
            async for chunk in up.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app.router.add_post("/v1/chat/completions", completions)
    app.router.add_get("/health", health)
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the emulator's base URL, e.g. http://127.0.0.1:8765")
    args = parser.parse_args()
    for host in (args.host, urlsplit(args.upstream).hostname):
        if not ipaddress.ip_address(host).is_loopback:
            parser.error(f"{host} is not a loopback address: the relay runs on loopback only")
    web.run_app(make_app(args.upstream.rstrip("/")), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
