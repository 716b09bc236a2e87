"""The provider emulator: a loopback HTTP server that speaks the wire formats our provider SDKs use.

Tests and benchmarks point the real SDKs (openai, anthropic, groq, google-genai) at it through the provider base
URL settings, so what is tested is the real client code over real HTTP, with no network and no keys.

It answers:
  OpenAI    POST …/chat/completions (SSE with the `stream_options.include_usage` usage chunk, or JSON with usage),
            GET …/models, POST …/embeddings (deterministic vectors, float or base64), POST …/images/generations
            (b64_json PNG, or a URL served by the emulator). Any prefix works: /v1 (OpenAI, self-hosted servers),
            /openai/v1 (Groq, whose final chunk also carries `x_groq.usage`), /api/v1 (OpenRouter).
  Anthropic POST /v1/messages (JSON, or SSE: message_start, content_block_start, content_block_delta,
            content_block_stop, message_delta with usage, message_stop), GET /v1/models.
  Gemini    POST /v1beta/models/{model}:generateContent and :streamGenerateContent?alt=sse (usageMetadata),
            GET /v1beta/models.
  Google Custom Search JSON: GET /customsearch/v1?key=…&cx=…&q=… (items with title, snippet, link; the key as
            `key=` or an X-Goog-Api-Key header).
  Web search APIs, told apart by path and method, under any prefix (e.g. /searxng, /tavily, /brave):
            SearXNG GET …/search?q=…&format=json (results[].title/content/url; no key),
            Tavily  POST …/search {"query", "max_results"} with Authorization: Bearer (401 without),
            Brave   GET …/res/v1/web/search?q=…&count=… with X-Subscription-Token (422 without, as Brave answers),
            all with the same deterministic results as Custom Search (or `search_items`, mapped to each format);
            the log entry's `search_query` is what was searched.
  Control   POST /_emulator/config (the JSON that `configure()` takes), POST /_emulator/reset,
            GET /_emulator/requests (the request log and the early-close count), GET /_emulator/health.

Configuration (`configure(**changes)` or the control endpoint; `reset()` restores these defaults):
  reply              the answer text (streamed as one chunk per word)
  tokens_per_second  pacing of the streamed words (0: as fast as possible)
  latency            seconds before every response's first byte
  api_key            when set, any other key gets HTTP 401 in the provider's error format
  models             ids listed by the model-list endpoints
  embedding_dimensions  vector length when the request does not ask for one
  search_items       search results as Custom Search items {title, snippet, link}, served by every search API in
                     its own format (default: generated from the query)
  fault              None, a kind, or {"kind": …, "times": K, "after_chunks": N, "delay": s, "retry_after": s,
                     "match": "path substring"}. Kinds:
                       http_500 / http_429 / http_NNN   an error status in the provider's format (429 carries
                                                         Retry-After: retry_after, default 1 s)
                       drop               read the request, close the connection before the first byte
                       cut                streams: after N text chunks, close without ending the chunked body;
                                          JSON: send half the body, then close
                       truncate           streams: after N text chunks, end the body cleanly, without the
                                          provider's closing events; JSON: a 200 with half the body
                       malformed          streams: after N text chunks, send a chunk that is not JSON;
                                          JSON: a 200 whose body is not JSON
                       slow_first_byte    wait `delay` seconds before the status line
                       stall              streams: after N text chunks, wait `delay` seconds before the next
                     `times` limits the fault to the next K matching requests (then the emulator answers
                     normally), so "fail once, then succeed" is `{"kind": "http_500", "times": 1}`.

Token accounting is deterministic and visible: input tokens = `count_tokens` over every message (and system)
text (plus IMAGE_TOKENS per image), output tokens = the number of reply words sent. Each request log entry records
what was asked (path, api, model, messages, system, stream, max_tokens, api_key; `sampling`: the temperature, top_p
and stop sequences it was sent, under the provider's own names; `images`: the image parts received, decoded, in each
format — OpenAI image_url data URLs, Anthropic base64 image blocks, Gemini inlineData — see `images_in`) and the
usage the emulator reported. An image part a provider would refuse (bad base64, no data) is answered 400.

In process:    emulator = ProviderEmulator().start(); emulator.url; emulator.configure(reply="Hi"); emulator.stop()
As a command:  python -m testsupport.emulator --port 8765 [--reply TEXT] [--tokens-per-second N] [--config JSON]

Only the standard library is used, and only loopback addresses are accepted.
"""

import argparse
import base64
import copy
import hashlib
import ipaddress
import json
import math
import re
import select
import signal
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from testsupport.png import solid_png

DEFAULT_REPLY = "Hello from the provider emulator. This answer is streamed one word at a time."
DEFAULT_MODELS = ["gpt-3.5-turbo", "emulator-model"]
FAULT_KINDS = ("drop", "cut", "truncate", "malformed", "slow_first_byte", "stall")
_HTTP_FAULT = re.compile(r"^http_(\d{3})$")
IMAGE_TOKENS = 85  # input tokens the emulator counts per image part received
_GEMINI_PATH = re.compile(r"/models/([^/:]+):(generateContent|streamGenerateContent)$")
_TOKEN = re.compile(r"\w+|[^\w\s]")
_WORD = re.compile(r"\s*\S+")


def count_tokens(text: str) -> int:
    """The emulator's token count: words and punctuation marks."""
    return len(_TOKEN.findall(text or ""))


def reply_pieces(reply: str) -> list[str]:
    """How a reply is streamed: one piece per word, each with its leading whitespace."""
    return _WORD.findall(reply or "")


def _defaults() -> dict:
    return {
        "reply": DEFAULT_REPLY,
        "tokens_per_second": 0.0,
        "latency": 0.0,
        "api_key": None,
        "models": list(DEFAULT_MODELS),
        "embedding_dimensions": 1536,
        "search_items": None,
        "fault": None,
    }


def _normalize_fault(fault) -> dict | None:
    if fault is None or fault == "" or fault == {}:
        return None
    if isinstance(fault, str):
        fault = {"kind": fault}
    if not isinstance(fault, dict) or "kind" not in fault:
        raise ValueError("fault must be a kind or a dict with a 'kind'")
    unknown = set(fault) - {"kind", "times", "after_chunks", "delay", "retry_after", "match"}
    if unknown:
        raise ValueError(f"unknown fault fields: {sorted(unknown)}")
    kind = fault["kind"]
    if kind not in FAULT_KINDS and not _HTTP_FAULT.match(str(kind)):
        raise ValueError(f"unknown fault kind {kind!r}")
    normalized = {
        "kind": kind,
        "times": None if fault.get("times") is None else int(fault["times"]),
        "after_chunks": int(fault.get("after_chunks", 2)),
        "delay": float(fault.get("delay", 5.0)),
        "retry_after": float(fault.get("retry_after", 1.0)),
        "match": fault.get("match"),
    }
    if normalized["times"] is not None and normalized["times"] < 0:
        raise ValueError("fault times must be >= 0")
    return normalized


class ClientGone(Exception):
    """The client closed the connection before the emulator finished answering."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    # socketserver's default backlog of 5 drops SYNs when a benchmark opens a thousand streams at once.
    request_queue_size = 1024

    def handle_error(self, request, client_address):
        """A client that resets its connection is normal here (faults, early closes): stay quiet about it."""
        import sys

        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)

    def __init__(self, address, emulator: "ProviderEmulator"):
        self.emulator = emulator
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.address_family = family
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "QueryNoxProviderEmulator/1"
    sys_version = ""

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.emulator._track(self.connection, True)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.emulator._track(self.connection, False)

    def log_message(self, format, *args):  # noqa: A002 - quiet: tests and benchmarks read the request log instead
        pass

    def do_GET(self):
        self.server.emulator._handle(self)

    def do_POST(self):
        self.server.emulator._handle(self)

    def do_DELETE(self):
        self.server.emulator._handle(self)


class _Exchange:
    """One request being answered: parsed input, the fault it drew, and the response writers."""

    def __init__(self, emulator: "ProviderEmulator", handler: _Handler, config: dict):
        self.emulator = emulator
        self.handler = handler
        self.config = config
        parts = urlsplit(handler.path)
        self.path = parts.path
        self.query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        self.headers = handler.headers
        self.body_bytes = self._read_body()
        self.body: dict = {}
        if self.body_bytes:
            try:
                self.body = json.loads(self.body_bytes)
            except ValueError:
                self.body = {}
        self.api = self._api()
        self.fault: dict | None = None
        self.entry: dict = {}
        self.started = False  # response headers sent

    # --- input --------------------------------------------------------------------------------------------
    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.handler.rfile.readline()
                    return data
                data += self.handler.rfile.read(size)
                self.handler.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.handler.rfile.read(length) if length else b""

    def _api(self) -> str:
        if self.path.startswith("/_emulator"):
            return "control"
        if self.path.startswith("/customsearch/"):
            return "search"
        if self.path.rstrip("/").endswith("/res/v1/web/search"):
            return "brave"
        if self.path.rstrip("/").endswith("/search"):
            return "tavily" if self.handler.command == "POST" else "searxng"
        if (
            _GEMINI_PATH.search(self.path)
            or self.path.startswith(("/v1beta", "/v1alpha"))
            or self.headers.get("x-goog-api-key")
        ):
            return "gemini"
        if self.headers.get("anthropic-version") or self.path.endswith("/messages"):
            return "anthropic"
        return "openai"

    def api_key(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        return (
            self.headers.get("x-api-key")
            or self.headers.get("x-goog-api-key")
            or self.headers.get("x-subscription-token")
            or self.query.get("key")
        )

    # --- socket helpers -----------------------------------------------------------------------------------
    def client_gone(self) -> bool:
        """True when the client has closed its side (EOF is readable) or the socket failed."""
        sock = self.handler.connection
        try:
            # poll, not select: select() cannot watch a descriptor numbered 1,024 or more, i.e. any stream past
            # about the thousandth one at once (bench/websocket_turns.py streams 2,000).
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            if not poller.poll(0):
                return False
            return sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def sleep(self, seconds: float) -> None:
        """Sleep, noticing a client that goes away (or an emulator that stops) meanwhile."""
        deadline = time.monotonic() + seconds
        while True:
            if self.client_gone():
                raise ClientGone
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.emulator._stopping.is_set():
                return
            time.sleep(min(remaining, 0.02))

    def write(self, data: bytes) -> None:
        if self.client_gone():
            raise ClientGone
        try:
            self.handler.wfile.write(data)
            self.handler.wfile.flush()
        except OSError as exc:
            raise ClientGone from exc

    def abort(self) -> None:
        """Close the connection abruptly (no more bytes, no end of body)."""
        self.handler.close_connection = True
        try:
            self.handler.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def send_head(self, status: int, content_type: str, length: int | None, extra: dict | None = None) -> None:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
        headers = {"Content-Type": content_type, "Date": self.handler.date_time_string(), **(extra or {})}
        if length is None:
            headers["Transfer-Encoding"] = "chunked"
            headers["Cache-Control"] = "no-cache"
        else:
            headers["Content-Length"] = str(length)
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.started = True

    # --- response writers ---------------------------------------------------------------------------------
    def send_json(self, status: int, payload, extra_headers: dict | None = None) -> None:
        body = json.dumps(payload).encode()
        fault = self.fault["kind"] if self.fault else None
        if fault == "malformed" and status == 200:
            body = b'{"id": "emulator-malformed", "choices": [ {"oops"'
        if fault == "truncate" and status == 200:
            body = body[: len(body) // 2]  # a body that ends cleanly, half-way through the JSON
        if fault == "stall" and status == 200:
            self.send_head(status, "application/json", len(body), extra_headers)
            self.sleep(self.fault["delay"])
            self.write(body)
            return
        if fault == "cut" and status == 200:
            self.send_head(status, "application/json", len(body), extra_headers)
            self.write(body[: len(body) // 2])
            self.entry["outcome"] = "cut"
            self.abort()
            return
        self.send_head(status, "application/json", len(body), extra_headers)
        self.write(body)

    def send_bytes(self, status: int, content_type: str, body: bytes) -> None:
        self.send_head(status, content_type, len(body))
        self.write(body)

    def send_stream(self, events: list[tuple[bytes, bool]], malformed: bytes) -> None:
        """Send SSE events as a chunked body; the bool marks text chunks (paced, and counted for faults)."""
        self.send_head(200, "text/event-stream; charset=utf-8", None)
        rate = float(self.config["tokens_per_second"] or 0)
        fault = self.fault or {}
        kind = fault.get("kind")
        after = fault.get("after_chunks", 0)
        sent_text = 0
        fired = kind not in ("cut", "truncate", "malformed", "stall")
        for data, is_text in events:
            # The fault fires before text chunk number `after` (or, when the reply has only `after` chunks,
            # before the closing events, so the client never sees the end of the answer).
            if not fired and sent_text == after and (is_text or sent_text > 0):
                fired = True
                if kind == "cut":
                    self.entry["outcome"] = "cut"
                    self.abort()
                    return
                if kind == "truncate":
                    self.entry["outcome"] = "truncated"
                    self.write(b"0\r\n\r\n")
                    return
                if kind == "malformed":
                    self.write_chunk(malformed)
                    self.entry["outcome"] = "malformed"
                if kind == "stall":
                    self.sleep(fault["delay"])
            if is_text:
                if rate > 0 and sent_text > 0:
                    self.sleep(1.0 / rate)
                sent_text += 1
            self.write_chunk(data)
        self.write(b"0\r\n\r\n")

    def write_chunk(self, data: bytes) -> None:
        self.write(b"%x\r\n%s\r\n" % (len(data), data))


_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    529: "Overloaded",
}


def _sse(data, event: str | None = None) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data)
    prefix = f"event: {event}\n" if event else ""
    return f"{prefix}data: {text}\n\n".encode()


def _text_of(content) -> str:
    """Text of a message content: a string, or a list of parts/blocks with text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(_text_of(part) for part in content)
    if isinstance(content, dict):
        if "text" in content:
            return str(content["text"] or "")
        if "parts" in content:
            return _text_of(content["parts"])
        if "content" in content:
            return _text_of(content["content"])
    return ""


class BadImage(ValueError):
    """An image part the provider would refuse (400): not base64, or not where the format puts an image."""


def _decode_base64(data) -> bytes:
    if not isinstance(data, str) or not data:
        raise BadImage("image data must be a non-empty base64 string")
    # google-genai sends bytes as URL-safe base64; OpenAI and Anthropic as standard base64.
    standard = data.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    except ValueError:
        raise BadImage("image data is not valid base64") from None


# The image types each API takes (its documentation), and the bytes each type starts with: an image of another
# type, or whose bytes are not what its declared type says, is refused (400) as the provider would.
ACCEPTED_IMAGE_TYPES = {
    "openai": ("image/png", "image/jpeg", "image/webp", "image/gif"),
    "anthropic": ("image/png", "image/jpeg", "image/webp", "image/gif"),
    "gemini": ("image/png", "image/jpeg", "image/webp", "image/heic", "image/heif"),
}
_IMAGE_MAGIC = {
    "image/png": lambda data: data.startswith(b"\x89PNG\r\n\x1a\n"),
    "image/jpeg": lambda data: data.startswith(b"\xff\xd8\xff"),
    "image/gif": lambda data: data[:6] in (b"GIF87a", b"GIF89a"),
    "image/webp": lambda data: data.startswith(b"RIFF") and data[8:12] == b"WEBP",
}


def _image(index: int, mime, data: bytes, api: str | None = None) -> dict:
    if api is not None:
        if mime not in ACCEPTED_IMAGE_TYPES.get(api, ACCEPTED_IMAGE_TYPES["openai"]):
            raise BadImage(f"{api} does not accept images of type {mime}")
        if mime in _IMAGE_MAGIC and not _IMAGE_MAGIC[mime](data):
            raise BadImage(f"the image's bytes are not {mime}")
    return {"message": index, "mime": mime, "data": base64.b64encode(data).decode(), "bytes": len(data)}


def images_in(api: str, messages: list) -> list[dict]:
    """The image parts of a request's messages, in each wire format, decoded: {"message" (its index), "mime",
    "data" (standard base64 of the bytes received), "bytes"}; a remote URL is recorded as {"message", "url"},
    never fetched. Raises BadImage for an image part the provider would refuse."""
    found: list[dict] = []
    for index, message in enumerate(messages if isinstance(messages, list) else []):
        if not isinstance(message, dict):
            continue
        parts = message.get("parts") if api == "gemini" else message.get("content")
        for part in parts if isinstance(parts, list) else []:
            if not isinstance(part, dict):
                continue
            if api == "openai" and part.get("type") == "image_url":
                url = (part.get("image_url") or {}).get("url") if isinstance(part.get("image_url"), dict) else None
                if not isinstance(url, str):
                    raise BadImage("image_url.url is required")
                match = re.fullmatch(r"data:([^;,]+);base64,(.*)", url, re.DOTALL)
                if match:
                    found.append(_image(index, match.group(1), _decode_base64(match.group(2)), api))
                elif url.startswith(("http://", "https://")):
                    found.append({"message": index, "url": url})
                else:
                    raise BadImage("image_url.url must be a data URL or an http(s) URL")
            elif api == "anthropic" and part.get("type") == "image":
                source = part.get("source") or {}
                if source.get("type") != "base64" or not source.get("media_type"):
                    raise BadImage("image source must be {type: base64, media_type, data}")
                found.append(_image(index, source["media_type"], _decode_base64(source.get("data")), api))
            elif api == "gemini" and ("inlineData" in part or "inline_data" in part):
                inline = part.get("inlineData") or part.get("inline_data") or {}
                mime = inline.get("mimeType") or inline.get("mime_type")
                if not mime:
                    raise BadImage("inlineData.mimeType is required")
                found.append(_image(index, mime, _decode_base64(inline.get("data")), api))
    return found


def _png(width: int, height: int, seed: bytes) -> bytes:
    """A solid-colour RGB PNG, colour derived from `seed` (so each prompt gets its own)."""
    return solid_png(max(1, min(width, 1024)), max(1, min(height, 1024)), tuple(seed[:3]))


def embedding_vector(text: str, dimensions: int, model: str = "") -> list[float]:
    """A deterministic unit vector for `text` (same text and model → same vector)."""
    values: list[float] = []
    counter = 0
    while len(values) < dimensions:
        digest = hashlib.sha256(f"{model}\x00{text}\x00{counter}".encode()).digest()
        values.extend((b / 127.5) - 1.0 for b in digest)
        counter += 1
    values = values[:dimensions]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


class ProviderEmulator:
    """The emulator server; see the module docstring. Thread-safe; use one per test session or benchmark."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **config):
        host = "127.0.0.1" if host == "localhost" else host
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(f"the provider emulator only listens on loopback addresses, not {host}")
        self.host = host
        self.port = port
        self._lock = threading.Condition()
        self._config = _defaults()
        self._requests: list[dict] = []
        self._closed_early = 0
        self._images: dict[str, bytes] = {}
        self._sockets: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._counter = 0  # request log ids
        self._ids = 0  # response ids
        if config:
            self.configure(**config)

    # --- lifecycle ----------------------------------------------------------------------------------------
    def start(self) -> str:
        """Listen and serve in a background thread; returns the base URL (http://127.0.0.1:PORT)."""
        if self._server is not None:
            return self.url
        self._stopping.clear()
        self._server = _Server((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="provider-emulator", daemon=True
        )
        self._thread.start()
        return self.url

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def _track(self, sock: socket.socket, add: bool) -> None:
        with self._lock:
            (self._sockets.add if add else self._sockets.discard)(sock)

    # --- configuration and observation --------------------------------------------------------------------
    def configure(self, **changes) -> dict:
        """Change part of the configuration (see the module docstring); returns the whole configuration."""
        unknown = set(changes) - set(_defaults())
        if unknown:
            raise ValueError(f"unknown emulator settings: {sorted(unknown)}")
        if "fault" in changes:
            changes["fault"] = _normalize_fault(changes["fault"])
        for key in ("tokens_per_second", "latency"):
            if key in changes:
                changes[key] = float(changes[key] or 0)
                if changes[key] < 0:
                    raise ValueError(f"{key} must be >= 0")
        with self._lock:
            self._config.update(changes)
            return copy.deepcopy(self._config)

    def reset(self) -> None:
        """Default configuration, empty request log, zero counters."""
        with self._lock:
            self._config = _defaults()
            self._requests = []
            self._closed_early = 0
            self._images = {}
            self._lock.notify_all()

    @property
    def config(self) -> dict:
        with self._lock:
            return copy.deepcopy(self._config)

    @property
    def requests(self) -> list[dict]:
        """What was asked, oldest first (control requests excluded)."""
        with self._lock:
            return copy.deepcopy(self._requests)

    @property
    def closed_early(self) -> int:
        """Responses the client closed before the emulator had finished sending them."""
        with self._lock:
            return self._closed_early

    def wait_closed_early(self, count: int = 1, timeout: float = 5.0) -> bool:
        """Block until at least `count` responses were closed early by the client (True), or the timeout (False)."""
        with self._lock:
            return self._lock.wait_for(lambda: self._closed_early >= count, timeout)

    def wait_requests(self, count: int, timeout: float = 5.0) -> bool:
        with self._lock:
            return self._lock.wait_for(lambda: len(self._requests) >= count, timeout)

    def _take_fault(self, exchange: _Exchange) -> dict | None:
        with self._lock:
            fault = self._config["fault"]
            if not fault or (fault["match"] and fault["match"] not in exchange.path):
                return None
            if fault["times"] is not None:
                if fault["times"] <= 0:
                    return None
                fault["times"] -= 1
            return dict(fault)

    def _record(self, entry: dict) -> None:
        with self._lock:
            self._counter += 1
            entry["id"] = self._counter
            self._requests.append(entry)
            self._lock.notify_all()

    def _count_closed_early(self) -> None:
        with self._lock:
            self._closed_early += 1
            self._lock.notify_all()

    # --- dispatch -----------------------------------------------------------------------------------------
    def _handle(self, handler: _Handler) -> None:
        config = self.config
        exchange = _Exchange(self, handler, config)
        if exchange.api == "control":
            self._control(exchange)
            return
        entry = exchange.entry
        entry.update(
            method=handler.command,
            path=exchange.path,
            query=exchange.query,
            api=exchange.api,
            api_key=exchange.api_key(),
            model=None,
            messages=[],
            images=[],
            system=None,
            stream=False,
            max_tokens=None,
            fault=None,
            usage=None,
            outcome="ok",
            body=exchange.body,
            time=time.time(),
        )
        self._record(entry)
        try:
            self._answer(exchange)
        except ClientGone:
            entry["outcome"] = "client_closed"
            self._count_closed_early()
            exchange.abort()
        except Exception as exc:  # a bug in the emulator: answer 500 rather than hang the client
            entry["outcome"] = f"emulator_error: {exc!r}"
            if not exchange.started:
                try:
                    exchange.fault = None
                    exchange.send_json(500, {"error": {"message": f"emulator error: {exc!r}", "type": "emulator"}})
                except ClientGone:
                    pass
            else:
                exchange.abort()

    def _answer(self, ex: _Exchange) -> None:
        ex.fault = self._take_fault(ex)
        ex.entry["fault"] = ex.fault["kind"] if ex.fault else None
        if ex.config["latency"]:
            ex.sleep(ex.config["latency"])
        kind = ex.fault["kind"] if ex.fault else None
        if kind == "drop":
            ex.entry["outcome"] = "dropped"
            ex.abort()
            return
        if kind == "slow_first_byte":
            ex.sleep(ex.fault["delay"])
        expected_key = ex.config["api_key"]
        if expected_key and ex.api_key() != expected_key:
            ex.entry["outcome"] = "unauthorized"
            self._error(ex, 401, "Invalid API key.")
            return
        status = _HTTP_FAULT.match(kind or "")
        if status:
            code = int(status.group(1))
            ex.entry["outcome"] = f"http_{code}"
            headers = {}
            if code == 429:
                headers["Retry-After"] = f"{ex.fault['retry_after']:g}"
            self._error(ex, code, f"Emulated HTTP {code}.", headers)
            return
        if ex.fault and kind in ("cut", "truncate", "malformed", "stall") and ex.entry["outcome"] == "ok":
            ex.entry["outcome"] = kind
        route = self._route(ex)
        if route is None:
            ex.entry["outcome"] = "not_found"
            self._error(ex, 404, f"The emulator does not serve {ex.handler.command} {ex.path}.")
            return
        route(ex)

    def _route(self, ex: _Exchange):
        path, method = ex.path, ex.handler.command
        if ex.api == "search":
            return self._search if path.rstrip("/").endswith("/customsearch/v1") and method == "GET" else None
        if ex.api in ("searxng", "tavily", "brave"):  # _api() matched path and method already
            return {"searxng": self._searxng_search, "tavily": self._tavily_search, "brave": self._brave_search}[ex.api]
        if ex.api == "gemini":
            if _GEMINI_PATH.search(path) and method == "POST":
                return self._gemini_generate
            if path.endswith("/models") and method == "GET":
                return self._gemini_models
            return None
        if ex.api == "anthropic":
            if path.endswith("/messages") and method == "POST":
                return self._anthropic_messages
            if path.endswith("/models") and method == "GET":
                return self._anthropic_models
            return None
        if path.endswith("/chat/completions") and method == "POST":
            return self._openai_chat
        if path.endswith("/models") and method == "GET":
            return self._openai_models
        if path.endswith("/embeddings") and method == "POST":
            return self._openai_embeddings
        if path.endswith("/images/generations") and method == "POST":
            return self._openai_images
        return None

    def _error(self, ex: _Exchange, status: int, message: str, headers: dict | None = None) -> None:
        ex.fault = None  # an error body is never itself cut or malformed
        if ex.api == "anthropic":
            kinds = {
                400: "invalid_request_error",
                401: "authentication_error",
                404: "not_found_error",
                429: "rate_limit_error",
                529: "overloaded_error",
            }
            payload = {"type": "error", "error": {"type": kinds.get(status, "api_error"), "message": message}}
        elif ex.api == "tavily":
            payload = {"detail": {"error": message}}
        elif ex.api == "brave":
            codes = {401: "SUBSCRIPTION_TOKEN_INVALID", 422: "VALIDATION", 429: "RATE_LIMITED"}
            error = {"id": self._next_id("brave-err-"), "status": status, "code": codes.get(status, "UNKNOWN")}
            payload = {"type": "ErrorResponse", "error": {**error, "detail": message}, "time": int(time.time())}
        elif ex.api == "searxng":
            payload = {"error": message}
        elif ex.api in ("gemini", "search"):
            statuses = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND"}
            statuses[429] = "RESOURCE_EXHAUSTED"
            payload = {"error": {"code": status, "message": message, "status": statuses.get(status, "INTERNAL")}}
        else:
            kinds = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error"}
            kinds[429] = "rate_limit_exceeded"
            code = {401: "invalid_api_key", 429: "rate_limit_exceeded"}.get(status)
            payload = {
                "error": {"message": message, "type": kinds.get(status, "server_error"), "param": None, "code": code}
            }
        ex.send_json(status, payload, headers)

    def _control(self, ex: _Exchange) -> None:
        path = ex.path.rstrip("/")
        try:
            if path == "/_emulator/config" and ex.handler.command == "POST":
                body = dict(ex.body)
                if body.pop("reset", False):
                    self.reset()
                ex.send_json(200, {"ok": True, "config": self.configure(**body)})
            elif path == "/_emulator/config":
                ex.send_json(200, {"config": self.config})
            elif path == "/_emulator/reset" and ex.handler.command == "POST":
                self.reset()
                ex.send_json(200, {"ok": True})
            elif path == "/_emulator/requests":
                ex.send_json(200, {"requests": self.requests, "closed_early": self.closed_early})
            elif path == "/_emulator/health":
                ex.send_json(200, {"ok": True})
            elif path.startswith("/_emulator/images/"):
                with self._lock:
                    image = self._images.get(path.rsplit("/", 1)[-1].removesuffix(".png"))
                if image is None:
                    ex.send_json(404, {"error": "no such image"})
                else:
                    ex.send_bytes(200, "image/png", image)
            else:
                ex.send_json(404, {"error": f"no control endpoint {path}"})
        except (ValueError, TypeError) as exc:
            ex.send_json(400, {"ok": False, "error": str(exc)})

    # --- shared generation --------------------------------------------------------------------------------
    def _generation(
        self, ex: _Exchange, messages: list[dict], system: str | None, max_tokens, images: list | None = None
    ) -> tuple:
        pieces = reply_pieces(ex.config["reply"])
        truncated = False
        if isinstance(max_tokens, int) and max_tokens >= 0 and len(pieces) > max_tokens:
            pieces, truncated = pieces[:max_tokens], True
        images = images or []
        input_tokens = count_tokens(system or "") + sum(count_tokens(m["content"]) for m in messages)
        input_tokens += IMAGE_TOKENS * len(images)
        usage = {"input_tokens": input_tokens, "output_tokens": len(pieces)}
        ex.entry.update(messages=messages, system=system, max_tokens=max_tokens, usage=usage, images=images)
        return pieces, truncated, usage

    def _received_images(self, ex: _Exchange, api: str, messages) -> list[dict] | None:
        """The request's images (images_in), or None after answering 400 as the provider would."""
        try:
            return images_in(api, messages)
        except BadImage as exc:
            ex.entry["outcome"] = f"bad_image: {exc}"
            self._error(ex, 400, f"Invalid image: {exc}")
            return None

    def _next_id(self, prefix: str) -> str:
        with self._lock:
            self._ids += 1
            return f"{prefix}{self._ids:06d}"

    # --- OpenAI (and Groq, OpenRouter, self-hosted OpenAI-compatible servers) -----------------------------
    def _openai_chat(self, ex: _Exchange) -> None:
        body = ex.body
        model = body.get("model")
        messages = [{"role": m.get("role"), "content": _text_of(m.get("content"))} for m in body.get("messages", [])]
        stream = bool(body.get("stream"))
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        sampling = {key: body[key] for key in ("temperature", "top_p", "stop") if key in body}
        ex.entry.update(model=model, stream=stream, include_usage=include_usage, sampling=sampling)
        images = self._received_images(ex, "openai", body.get("messages"))
        if images is None:
            return
        pieces, truncated, usage = self._generation(ex, messages, None, max_tokens, images)
        finish = "length" if truncated else "stop"
        openai_usage = {
            "prompt_tokens": usage["input_tokens"],
            "completion_tokens": usage["output_tokens"],
            "total_tokens": usage["input_tokens"] + usage["output_tokens"],
        }
        completion_id, created = self._next_id("chatcmpl-emu"), int(time.time())
        if not stream:
            ex.send_json(
                200,
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "system_fingerprint": "fp_emulator",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "".join(pieces), "refusal": None},
                            "logprobs": None,
                            "finish_reason": finish,
                        }
                    ],
                    "usage": openai_usage,
                },
            )
            return
        base = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_emulator",
        }

        def chunk(delta: dict, finish_reason=None, **extra) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return _sse({**base, "choices": [choice], **extra})

        events = [(chunk({"role": "assistant", "content": ""}), False)]
        events += [(chunk({"content": piece}), True) for piece in pieces]
        extra = {}
        if ex.path.startswith("/openai/"):  # Groq reports usage in x_groq on the final chunk
            extra["x_groq"] = {"id": f"req_{completion_id}", "usage": openai_usage}
        events.append((chunk({}, finish, **extra), False))
        if include_usage:
            events.append((_sse({**base, "choices": [], "usage": openai_usage}), False))
        events.append((_sse("[DONE]"), False))
        ex.send_stream(events, b'data: {"id": "emulator-malformed", "choices": [ {"delta": \n\n')

    def _openai_models(self, ex: _Exchange) -> None:
        ex.entry.update(kind="models")
        data = [
            {"id": m, "object": "model", "created": 1700000000, "owned_by": "emulator"} for m in ex.config["models"]
        ]
        ex.send_json(200, {"object": "list", "data": data})

    def _openai_embeddings(self, ex: _Exchange) -> None:
        body = ex.body
        model = body.get("model") or ""
        raw = body.get("input")
        inputs = [raw] if isinstance(raw, str) else list(raw or [])
        texts = [item if isinstance(item, str) else " ".join(map(str, item)) for item in inputs]
        dims = int(body.get("dimensions") or ex.config["embedding_dimensions"])
        encoding = body.get("encoding_format") or "float"
        tokens = sum(count_tokens(t) for t in texts)
        ex.entry.update(
            model=model, kind="embeddings", inputs=texts, usage={"input_tokens": tokens, "output_tokens": 0}
        )
        data = []
        for index, text in enumerate(texts):
            vector = embedding_vector(text, dims, model)
            if encoding == "base64":
                value = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
            else:
                value = vector
            data.append({"object": "embedding", "index": index, "embedding": value})
        ex.send_json(
            200,
            {
                "object": "list",
                "data": data,
                "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )

    def _openai_images(self, ex: _Exchange) -> None:
        body = ex.body
        prompt = body.get("prompt") or ""
        size = str(body.get("size") or "1024x1024")
        match = re.match(r"^(\d+)x(\d+)$", size)
        width, height = (int(match.group(1)), int(match.group(2))) if match else (1024, 1024)
        count = int(body.get("n") or 1)
        ex.entry.update(model=body.get("model"), kind="images", prompt=prompt, size=size, n=count)
        data = []
        for index in range(count):
            png = _png(width, height, hashlib.sha256(f"{prompt}\x00{index}".encode()).digest())
            if body.get("response_format") == "url":
                image_id = self._next_id("img")
                with self._lock:
                    self._images[image_id] = png
                data.append({"url": f"{self.url}/_emulator/images/{image_id}.png", "revised_prompt": prompt})
            else:
                data.append({"b64_json": base64.b64encode(png).decode(), "revised_prompt": prompt})
        ex.send_json(200, {"created": int(time.time()), "data": data})

    # --- Anthropic ----------------------------------------------------------------------------------------
    def _anthropic_messages(self, ex: _Exchange) -> None:
        body = ex.body
        model = body.get("model")
        system = body.get("system")
        system_text = _text_of(system) if system is not None else None
        messages = [{"role": m.get("role"), "content": _text_of(m.get("content"))} for m in body.get("messages", [])]
        stream = bool(body.get("stream"))
        sampling = {key: body[key] for key in ("temperature", "top_p", "stop_sequences") if key in body}
        ex.entry.update(model=model, stream=stream, sampling=sampling)
        images = self._received_images(ex, "anthropic", body.get("messages"))
        if images is None:
            return
        pieces, truncated, usage = self._generation(ex, messages, system_text, body.get("max_tokens"), images)
        stop_reason = "max_tokens" if truncated else "end_turn"
        message_id = self._next_id("msg_emu")
        if not stream:
            ex.send_json(
                200,
                {
                    "id": message_id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [{"type": "text", "text": "".join(pieces)}],
                    "stop_reason": stop_reason,
                    "stop_sequence": None,
                    "usage": {"input_tokens": usage["input_tokens"], "output_tokens": usage["output_tokens"]},
                },
            )
            return
        start = {
            "type": "message_start",
            "message": {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": usage["input_tokens"], "output_tokens": 1},
            },
        }
        events = [
            (_sse(start, "message_start"), False),
            (
                _sse(
                    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                    "content_block_start",
                ),
                False,
            ),
            (_sse({"type": "ping"}, "ping"), False),
        ]
        events += [
            (
                _sse(
                    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}},
                    "content_block_delta",
                ),
                True,
            )
            for piece in pieces
        ]
        events += [
            (_sse({"type": "content_block_stop", "index": 0}, "content_block_stop"), False),
            (
                _sse(
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                        "usage": {"output_tokens": usage["output_tokens"]},
                    },
                    "message_delta",
                ),
                False,
            ),
            (_sse({"type": "message_stop"}, "message_stop"), False),
        ]
        ex.send_stream(events, b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": \n\n')

    def _anthropic_models(self, ex: _Exchange) -> None:
        ex.entry.update(kind="models")
        data = [
            {"type": "model", "id": m, "display_name": m, "created_at": "2024-01-01T00:00:00Z"}
            for m in ex.config["models"]
        ]
        if str(ex.query.get("limit", "")).isdigit():
            data = data[: int(ex.query["limit"])]
        ex.send_json(
            200,
            {
                "data": data,
                "has_more": False,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            },
        )

    # --- Gemini -------------------------------------------------------------------------------------------
    def _gemini_generate(self, ex: _Exchange) -> None:
        match = _GEMINI_PATH.search(ex.path)
        model, method = match.group(1), match.group(2)
        body = ex.body
        stream = method == "streamGenerateContent"
        instruction = body.get("systemInstruction") or body.get("system_instruction")
        system_text = _text_of(instruction) if instruction else None
        messages = [
            {"role": c.get("role", "user"), "content": _text_of(c.get("parts"))} for c in body.get("contents", [])
        ]
        config = body.get("generationConfig") or {}
        sampling = {key: config[key] for key in ("temperature", "topP", "stopSequences") if key in config}
        ex.entry.update(model=model, stream=stream, sampling=sampling)
        images = self._received_images(ex, "gemini", body.get("contents"))
        if images is None:
            return
        pieces, truncated, usage = self._generation(ex, messages, system_text, config.get("maxOutputTokens"), images)
        finish = "MAX_TOKENS" if truncated else "STOP"
        response_id = self._next_id("emu")

        def response(text: str, finish_reason: str | None, output_tokens: int | None) -> dict:
            candidate = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
            if finish_reason:
                candidate["finishReason"] = finish_reason
            metadata = {"promptTokenCount": usage["input_tokens"], "totalTokenCount": usage["input_tokens"]}
            if output_tokens is not None:
                metadata["candidatesTokenCount"] = output_tokens
                metadata["totalTokenCount"] = usage["input_tokens"] + output_tokens
            return {
                "candidates": [candidate],
                "usageMetadata": metadata,
                "modelVersion": model,
                "responseId": response_id,
            }

        if not stream:
            ex.send_json(200, response("".join(pieces), finish, usage["output_tokens"]))
            return
        events = [(_sse(response(piece, None, None)), True) for piece in pieces]
        events.append((_sse(response("", finish, usage["output_tokens"])), False))
        if ex.query.get("alt") != "sse":  # without alt=sse Gemini streams one JSON array
            ex.send_json(200, [json.loads(data[len(b"data: ") :]) for data, _ in events])
            return
        ex.send_stream(events, b'data: {"candidates": [{"content": \n\n')

    def _gemini_models(self, ex: _Exchange) -> None:
        ex.entry.update(kind="models")
        models = [
            {"name": f"models/{m}", "displayName": m, "supportedGenerationMethods": ["generateContent"]}
            for m in ex.config["models"]
        ]
        ex.send_json(200, {"models": models})

    # --- web search APIs ----------------------------------------------------------------------------------------
    @staticmethod
    def _search_items(ex: _Exchange, query: str, count: int) -> list[dict]:
        """Up to `count` results as Custom Search items: the configured ones, or ones derived from the query."""
        items = ex.config["search_items"]
        if items is None:
            slug = re.sub(r"[^a-z0-9]+", "-", query.lower()).strip("-") or "result"
            items = [
                {
                    "kind": "customsearch#result",
                    "title": f"{query} — result {n}",
                    "link": f"https://example.com/{slug}/{n}",
                    "displayLink": "example.com",
                    "snippet": f"Snippet {n} about {query}.",
                }
                for n in range(1, count + 1)
            ]
        return items[: max(0, count)]

    @staticmethod
    def _count(raw, default: int, maximum: int) -> int:
        try:
            return max(1, min(int(raw), maximum))
        except (TypeError, ValueError):
            return default

    def _search(self, ex: _Exchange) -> None:
        """Google Custom Search JSON API."""
        query = ex.query.get("q", "")
        count = self._count(ex.query.get("num"), 10, 10)
        ex.entry.update(kind="search", search_query=query, cx=ex.query.get("cx"))
        if not ex.api_key():
            self._error(ex, 403, "Method doesn't allow unregistered callers. Please use an API key.")
            return
        items = self._search_items(ex, query, count)
        ex.send_json(
            200,
            {
                "kind": "customsearch#search",
                "queries": {"request": [{"searchTerms": query, "count": len(items), "startIndex": 1}]},
                "searchInformation": {"searchTime": 0.01, "totalResults": str(len(items))},
                "items": items,
            },
        )

    def _searxng_search(self, ex: _Exchange) -> None:
        """SearXNG's JSON API (a self-hosted instance with `json` among its formats; it takes no key)."""
        query = ex.query.get("q", "")
        ex.entry.update(kind="search", search_query=query)
        if ex.query.get("format") != "json":
            self._error(ex, 400, "The emulator serves SearXNG's format=json only.")
            return
        results = [
            {
                "url": item.get("link"),
                "title": item.get("title"),
                "content": item.get("snippet"),
                "engine": "emulator",
                "engines": ["emulator"],
                "positions": [position],
                "score": 1.0 / position,
                "category": "general",
            }
            for position, item in enumerate(self._search_items(ex, query, 10), start=1)
        ]
        ex.send_json(
            200,
            {
                "query": query,
                "number_of_results": len(results),
                "results": results,
                "answers": [],
                "corrections": [],
                "infoboxes": [],
                "suggestions": [],
                "unresponsive_engines": [],
            },
        )

    def _tavily_search(self, ex: _Exchange) -> None:
        """Tavily's search API (the key as a bearer token)."""
        query = str(ex.body.get("query") or "")
        count = self._count(ex.body.get("max_results"), 5, 20)
        ex.entry.update(kind="search", search_query=query, search_depth=ex.body.get("search_depth"))
        if not ex.headers.get("Authorization", "").lower().startswith("bearer "):
            self._error(ex, 401, "Unauthorized: missing or invalid API key.")
            return
        results = [
            {
                "title": item.get("title"),
                "url": item.get("link"),
                "content": item.get("snippet"),
                "score": round(1.0 / position, 4),
                "raw_content": None,
            }
            for position, item in enumerate(self._search_items(ex, query, count), start=1)
        ]
        ex.send_json(
            200,
            {"query": query, "answer": None, "images": [], "results": results, "response_time": 0.01},
        )

    def _brave_search(self, ex: _Exchange) -> None:
        """Brave's Web Search API (the key in X-Subscription-Token; descriptions carry <strong> around the query
        words, as Brave's default text decorations do)."""
        query = ex.query.get("q", "")
        count = self._count(ex.query.get("count"), 20, 20)
        ex.entry.update(kind="search", search_query=query)
        if not ex.headers.get("X-Subscription-Token"):
            self._error(ex, 422, "Unable to validate request parameter(s)")
            return
        configured = ex.config["search_items"] is not None
        results = [
            {
                "type": "search_result",
                "title": item.get("title"),
                "url": item.get("link"),
                "description": item.get("snippet")
                if configured
                else str(item.get("snippet") or "").replace(query, f"<strong>{query}</strong>", 1),
                "language": "en",
                "family_friendly": True,
            }
            for item in self._search_items(ex, query, count)
        ]
        ex.send_json(
            200,
            {
                "type": "search",
                "query": {"original": query, "more_results_available": False},
                "web": {"type": "search", "results": results, "family_friendly": True},
            },
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="QueryNox provider emulator (loopback only)")
    parser.add_argument("--host", default="127.0.0.1", help="a loopback address")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--reply", help="the answer text")
    parser.add_argument("--tokens-per-second", type=float, help="pacing of streamed words (0: unpaced)")
    parser.add_argument("--latency", type=float, help="seconds before every first byte")
    parser.add_argument("--config", help="a JSON object of settings, as POST /_emulator/config takes")
    args = parser.parse_args(argv)
    config = json.loads(args.config) if args.config else {}
    for name in ("reply", "tokens_per_second", "latency"):
        if getattr(args, name) is not None:
            config[name] = getattr(args, name)
    emulator = ProviderEmulator(args.host, args.port, **config)
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    url = emulator.start()
    print(f"provider emulator listening on {url}", flush=True)
    stopped.wait()
    emulator.stop()


if __name__ == "__main__":
    main()
