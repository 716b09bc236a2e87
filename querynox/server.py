"""QueryNox's server: daphne, with request bodies bounded before Twisted buffers or parses them.

    python -m querynox.server -b 127.0.0.1 -p 8000 querynox.asgi:application   (any daphne option works)

`make run`, the Dockerfile, compose.yaml and the live-server tests all start this instead of plain `daphne`.

Why a patch at this layer: Twisted's HTTP request object receives the whole body before daphne (and so Django)
sees the request, and for a POST it then parsed multipart and URL-encoded bodies into `request.args`, which daphne
never uses: a 30 MB multipart body to any path, even an unknown one and without credentials, took the process from
about 330 MB to 650 MB before Django's own size checks ran. Here:

- form parsing is off (Twisted's `parsePOSTFormSubmission=False`);
- a Content-Length over the path's limit (querynox/body_limits.py) is answered 413 as soon as the headers are in,
  before any of the body is stored;
- a chunked body is counted as it arrives and answered 413 the moment it passes the limit.

A refused body is read and thrown away until the client has sent it (for at most LINGER_SECONDS), so the client
gets to read the 413 instead of a reset connection; nothing of it is kept.
"""

import json
import os
import pprint
import sys
from urllib.parse import urlsplit

from autobahn.websocket import protocol as autobahn_protocol
from daphne import cli as daphne_cli
from daphne import http_protocol
from daphne.access import AccessLogGenerator
from daphne.cli import CommandLineInterface

from querynox.body_limits import WEBSOCKET_MAX_MESSAGE_BYTES, request_body_limit, too_large_message

# How long a refused request's connection may keep sending before it is closed.
LINGER_SECONDS = 10


def _too_large_response(message: str) -> bytes:
    body = json.dumps({"error": message, "code": "body_too_large"}).encode()
    head = (
        "HTTP/1.1 413 Content Too Large\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class BoundedWebRequest(http_protocol.WebRequest):
    """daphne's request, with the body bounded by its path's limit and never parsed by Twisted."""

    def __init__(self, *args, **kwargs):
        kwargs["parsePOSTFormSubmission"] = False
        super().__init__(*args, **kwargs)
        self.body_limit = None
        self.body_received = 0
        self.refused = False
        self._linger = None

    def gotLength(self, length):  # noqa: N802 (Twisted's name)
        # Called once the headers are in and before any of the body: the channel knows the request line already.
        path = urlsplit(self.channel._path).path.decode("latin-1")
        self.body_limit = request_body_limit(path)
        if length is not None and length > self.body_limit:
            self.refuse(too_large_message(length, self.body_limit))
            return
        super().gotLength(length)

    def handleContentChunk(self, data):  # noqa: N802
        if self.refused:
            return  # read and dropped, so the client can finish sending and read the answer
        self.body_received += len(data)
        if self.body_received > self.body_limit:  # only a chunked body can get here: a declared one was checked
            self.content.close()
            self.refuse(too_large_message(None, self.body_limit))
            return
        super().handleContentChunk(data)

    def requestReceived(self, command, path, version):  # noqa: N802
        if self.refused:
            self._close()  # the whole refused body is in: nothing more to wait for
            return
        super().requestReceived(command, path, version)

    def refuse(self, message: str) -> None:
        self.refused = True
        channel = self.channel
        # Twisted would answer `Expect: 100-continue` once this method returns; the client must not be told to send.
        expects_continue = self.requestHeaders.hasHeader(b"Expect")
        self.requestHeaders.removeHeader(b"Expect")
        channel.transport.write(_too_large_response(message))
        channel.persistent = False
        if expects_continue:
            self._close()  # the client waits for our answer before sending the body, and now has it
        else:
            self._linger = channel.callLater(LINGER_SECONDS, self._close)

    def _close(self) -> None:
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        channel = getattr(self, "channel", None)
        if channel is not None and channel.transport is not None and not channel.transport.disconnecting:
            channel.transport.loseConnection()


class _LazyPformat:
    """pprint.pformat, run only if the text is wanted. autobahn formats its whole configuration for a debug log line
    at every connection and every handshake, whether or not debug logging is on: that was 4% of a WebSocket
    handshake's CPU (bench/README.md, WebSockets). txaio renders a log argument with str() when it emits the line."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __str__(self) -> str:
        return pprint.pformat(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def _access_log_generator(stream):
    # `--access-log /dev/null` (our default) means no access log: daphne would still format every entry, then drop it.
    if getattr(stream, "name", None) == os.devnull:
        stream.close()
        return None
    return AccessLogGenerator(stream)


def install() -> None:
    """daphne's HTTPFactory builds each connection's requests from this module attribute; daphne's command line and
    autobahn take the access log and pformat from theirs."""
    http_protocol.WebRequest = BoundedWebRequest
    daphne_cli.AccessLogGenerator = _access_log_generator
    autobahn_protocol.pformat = _LazyPformat


# Options QueryNox runs daphne with unless the command line gives them:
# --access-log /dev/null: daphne's access log would print every raw path and query string (share ids,
#   ?active=<chat id>) on stdout; the JSON `querynox.request` line (core/middleware.py) describes each request by its
#   route instead.
# --websocket-max-message-size / --websocket-max-frame-size: body_limits.WEBSOCKET_MAX_MESSAGE_BYTES, shared with
#   querynox/uvicorn_server.py.
DEFAULT_OPTIONS = {
    "--access-log": "/dev/null",
    "--websocket-max-message-size": str(WEBSOCKET_MAX_MESSAGE_BYTES),
    "--websocket-max-frame-size": str(WEBSOCKET_MAX_MESSAGE_BYTES),
}


def with_default_options(argv: list[str]) -> list[str]:
    given = {arg.split("=", 1)[0] for arg in argv if arg.startswith("--")}
    defaults = [part for option, value in DEFAULT_OPTIONS.items() if option not in given for part in (option, value)]
    return [*defaults, *argv]


def main() -> None:
    install()
    sys.argv[1:] = with_default_options(sys.argv[1:])
    CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()
