"""Gateway benchmark: what a QueryNox turn adds on top of its provider, next to LiteLLM's proxy and a bare relay.

One command starts, on loopback only:
- the provider emulator (bench/gateway_emulator.py → testsupport/emulator.py, its own process), streaming a
  50-word answer (50 chunks) as fast as it can;
- QueryNox as deployed (testsupport.live.LiveServer: `python -m querynox.server` = daphne, its own SQLite file,
  DEBUG off; auth, quota, persistence, ledger, metrics and logs all on), with every cloud provider pointed at the
  emulator (testsupport.scripted.emulator_settings) and the model gpt-3.5-turbo, so the local CPU model never runs;
  or uvicorn (uvloop + httptools) / granian serving the same querynox.asgi:application (--servers);
- a bare aiohttp relay (bench/bare_relay.py) and LiteLLM's proxy (litellm[proxy]==1.108.7, one worker, in its own
  venv bench/.venv-litellm from bench/requirements-litellm.txt), both forwarding to the same emulator;
- one asyncio load client in this process (a minimal keep-alive HTTP/1.1 client, `websockets` for the socket).

It measures, in one run:
- latency: added time to first token (p50/p95/p99 through X minus straight to the emulator; each block of turns
  through X is paired with a block sent straight to the emulator just before it, same concurrency, same client) at
  1, 50 and 200 concurrent streams, for QueryNox SSE (`POST /api/v1/chat/stream`, a new chat each turn),
  WebSocket (`/ws/chat/`, API key in the Authorization header, JSON frames), `POST /api/v1/chat` (not streamed:
  time to the whole answer, against the emulator's non-streamed answer), `/v1/chat/completions` streamed and not,
  LiteLLM (streamed) and the bare relay (streamed); the server's CPU per turn (utime+stime of its process tree from
  /proc, which a busy machine hardly disturbs) and turns/s;
- turns: first-token time by turn number in one chat (real turns, sequential, each paired with a direct request);
- reads: chat list (`GET /api/v1/chat/user`, a user with 200 chats) and chat history (`GET /api/v1/chat/{id}`,
  a chat of 200 turns), requests/s at 10 concurrent; both seeded straight into the server's database;
- wsscale: WebSocket handshakes/s (N sockets opened as fast as the in-flight bound allows), server memory per idle
  socket, then N concurrent streaming turns ramped up (the emulator paced so that streams overlap): peak held,
  dropped and stalled streams, server memory per streaming connection.

    .venv/bin/pip install -r bench/requirements-bench.txt               # aiohttp, uvicorn, uvloop, httptools, granian
    python3 -m venv bench/.venv-litellm && bench/.venv-litellm/bin/pip install -r bench/requirements-litellm.txt
    .venv/bin/python bench/gateway.py --quick                           # smoke run, under a minute
    .venv/bin/python bench/gateway.py                                   # full run, daphne, everything
    .venv/bin/python bench/gateway.py --only sse,ws --levels 1,50       # a part of it
    .venv/bin/python bench/gateway.py --servers daphne,uvicorn,granian --only sse,ws,v1s,wsscale
    .venv/bin/python bench/gateway.py --readme after                    # also write the tables into bench/README.md
    .venv/bin/python bench/gateway.py --only sse --levels 50 --profile /tmp/prof   # py-spy (root) over each block

--only takes: sse, ws, json, v1s, v1j, litellm, relay (latency targets), turns, reads, wsscale. Every loop is bounded
in count and in time; a block cut short by its time bound is marked with its count.
"""

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

import httpx  # noqa: E402
import websockets  # noqa: E402
from websockets.asyncio.client import connect as ws_connect  # noqa: E402

# testsupport.scripted imports the chat models: Django's app registry must be ready (no database is touched here).
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "querynox.settings")
import django  # noqa: E402

django.setup()

from testsupport.http import free_port  # noqa: E402
from testsupport.live import LiveServer  # noqa: E402
from testsupport.scripted import emulator_settings  # noqa: E402

HOST = "127.0.0.1"
MODEL = "gpt-3.5-turbo"
# 50 words: the emulator streams one chunk per word.
REPLY = " ".join(f"token{index}" for index in range(50))
LITELLM_DIR = BASE_DIR / "bench" / ".venv-litellm"
README = BASE_DIR / "bench" / "README.md"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

APP_TARGETS = ("sse", "ws", "json", "v1s", "v1j")
RELAY_TARGETS = ("litellm", "relay")
SECTIONS = ("turns", "reads", "wsscale")
ALL_PARTS = (*APP_TARGETS, *RELAY_TARGETS, *SECTIONS)
SERVERS = ("daphne", "uvicorn", "granian")


@dataclass(frozen=True)
class Plan:
    levels: dict  # concurrency -> (turns per block, rounds)
    block_seconds: float  # bound on one block
    turn_marks: tuple  # turn numbers reported
    turn_chats: int  # chats walked in parallel-by-turn-number
    reads_chats: int
    history_turns: int
    reads_requests: int
    reads_seconds: float
    ws_sockets: int
    ws_in_flight: int
    ws_stream_seconds: float  # how long the emulator takes over one paced answer
    ws_ramp_seconds: float  # turns are started over this long
    ws_bound_seconds: float  # the whole streaming phase


FULL = Plan(
    levels={1: (30, 2), 50: (100, 2), 200: (300, 1)},
    block_seconds=100,
    turn_marks=(1, 10, 50, 200),
    turn_chats=2,
    reads_chats=200,
    history_turns=200,
    reads_requests=600,
    reads_seconds=30,
    ws_sockets=2000,
    ws_in_flight=50,
    ws_stream_seconds=120,
    ws_ramp_seconds=30,
    ws_bound_seconds=240,
)
QUICK = Plan(
    levels={1: (4, 1), 10: (10, 1)},
    block_seconds=15,
    turn_marks=(1, 5, 10),
    turn_chats=1,
    reads_chats=20,
    history_turns=10,
    reads_requests=30,
    reads_seconds=5,
    ws_sockets=20,
    ws_in_flight=20,
    ws_stream_seconds=2,
    ws_ramp_seconds=0.5,
    ws_bound_seconds=15,
)
# LiteLLM takes 30-60 s just to import on this machine: --quick leaves it out unless --only names it.
QUICK_PARTS = tuple(part for part in ALL_PARTS if part != "litellm")

TARGET_LABELS = {
    "sse": "QueryNox SSE `POST /api/v1/chat/stream` (new chat each turn)",
    "ws": "QueryNox WebSocket `/ws/chat/` (new chat each turn)",
    "json": "QueryNox `POST /api/v1/chat` (not streamed)",
    "v1s": "QueryNox `/v1/chat/completions` streamed",
    "v1j": "QueryNox `/v1/chat/completions` not streamed",
    "litellm": "LiteLLM proxy 1.108.7, 1 worker, streamed",
    "relay": "bare aiohttp relay (bench/bare_relay.py), streamed",
}


# --- processes ----------------------------------------------------------------------------------------------------


def raise_open_file_limit(wanted: int = 65536) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(wanted, hard) if hard != resource.RLIM_INFINITY else wanted
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))  # children inherit it
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def tree_pids(root: int) -> list[int]:
    """The process and its descendants (granian and LiteLLM may fork workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def cpu_seconds(root: int | None) -> float:
    """utime+stime of a process tree, in seconds (all threads of each process)."""
    if root is None:
        return 0.0
    total = 0
    for pid in tree_pids(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def rss_bytes(root: int | None) -> int:
    if root is None:
        return 0
    total = 0
    for pid in tree_pids(root):
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE
        except OSError:
            continue
    return total


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def wait_http(url: str, timeout: float, process: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log else ""
            raise RuntimeError(f"{url}: the process exited with {process.returncode}\n{tail}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


class Child:
    """A helper process with its output in a log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, name: str, command: list[str], work: Path, env: dict | None = None):
        self.name = name
        self.log_path = work / f"{name}.log"
        self._log = open(self.log_path, "ab")  # closed in stop()
        self.process = subprocess.Popen(
            command, cwd=BASE_DIR, env=env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        self._log.close()


def start_emulator(work: Path) -> tuple[Child, str]:
    port = free_port()
    child = Child(
        "emulator",
        [sys.executable, str(BASE_DIR / "bench" / "gateway_emulator.py"), "--port", str(port), "--reply", REPLY],
        work,
    )
    url = f"http://{HOST}:{port}"
    wait_http(f"{url}/_emulator/health", 30, child.process, child.log_path)
    return child, url


def configure_emulator(url: str, **changes) -> None:
    httpx.post(f"{url}/_emulator/config", json=changes, timeout=10).raise_for_status()


def start_relay(work: Path, upstream: str) -> tuple[Child, str]:
    port = free_port()
    child = Child(
        "relay",
        [sys.executable, str(BASE_DIR / "bench" / "bare_relay.py"), "--port", str(port), "--upstream", upstream],
        work,
    )
    url = f"http://{HOST}:{port}"
    wait_http(f"{url}/health", 30, child.process, child.log_path)
    return child, url


def litellm_version() -> str | None:
    python = LITELLM_DIR / "bin" / "python"
    if not python.exists():
        return None
    out = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return out.stdout.strip() or None


def start_litellm(work: Path, upstream: str) -> tuple[Child, str, str]:
    """Started, not waited for (it takes tens of seconds to import): `wait_http` its /health/liveliness later."""
    config = work / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: {upstream}/v1\n"
        "      api_key: sk-emulator-openai\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
    )
    port = free_port()
    env = {
        key: value for key, value in os.environ.items() if not key.endswith("_API_KEY") and key != "DATABASE_URL"
    }
    # A master key, as any deployment has (LiteLLM refuses to start without one); no database, so no virtual keys.
    master_key = "sk-bench-" + os.urandom(16).hex()
    env.update(
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        LITELLM_TELEMETRY_DISABLED="true",
        LITELLM_MASTER_KEY=master_key,
        NO_PROXY="*",
    )
    child = Child(
        "litellm",
        [
            str(LITELLM_DIR / "bin" / "litellm"),
            "--config",
            str(config),
            "--host",
            HOST,
            "--port",
            str(port),
            "--num_workers",
            "1",
        ],
        work,
        env,
    )
    return child, f"http://{HOST}:{port}", master_key


SERVER_COMMANDS = {
    # As deployed (querynox/server.py sets the body limits, access log off, WebSocket message limits).
    "daphne": None,
    # uvicorn: no access log (daphne's is off too), WebSocket messages as large as daphne's, no lifespan (Channels'
    # ProtocolTypeRouter has none), a backlog as large as the kernel allows.
    "uvicorn": lambda port: [
        sys.executable, "-m", "uvicorn", "--host", HOST, "--port", str(port), "--loop", "uvloop", "--http",
        "httptools", "--ws", "websockets", "--ws-max-size", str(4 * 1024 * 1024), "--lifespan", "off",
        "--no-access-log", "--backlog", "4096", "--timeout-graceful-shutdown", "5", "querynox.asgi:application",
    ],  # fmt: skip
    # granian: asginl = ASGI without lifespan; backpressure bounds requests in flight per worker (default backlog/
    # workers = 1024), raised so 2,000 streaming sockets are not queued by the server itself.
    "granian": lambda port: [
        sys.executable, "-m", "granian", "--interface", "asginl", "--host", HOST, "--port", str(port),
        "--workers", "1", "--loop", "uvloop", "--backlog", "4096", "--backpressure", "8192",
        "--log-level", "warning", "querynox.asgi:application",
    ],  # fmt: skip
}


class AppServer(LiveServer):
    """LiveServer (its own database, migrate, collectstatic, health wait), under daphne or another ASGI server."""

    def __init__(self, work_dir: Path, extra_env: dict, kind: str):
        super().__init__(work_dir, extra_env=extra_env)
        self.kind = kind

    def _spawn(self) -> None:
        command = SERVER_COMMANDS[self.kind]
        if command is None:
            super()._spawn()
            return
        self._log_file = open(self.log_path, "ab")  # closed in stop()
        self.process = subprocess.Popen(
            command(self.port),
            cwd=BASE_DIR,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.process.pid


_SETUP_USERS = """
import os
from accounts.models import ApiKey, User
from billing.models import Product
big = 2_000_000_000
product, _ = Product.objects.update_or_create(
    external_id="bench-gateway",
    defaults=dict(name="Bench (no practical limit)", chat_limit=big, image_limit=big, web_search_limit=big,
                  file_rag_limit=big, files_per_request=10),
)
for email in os.environ["QNX_BENCH_EMAILS"].split(","):
    user = User.objects.create_user(email, "a bench password 9431")
    user.product = product
    user.save(update_fields=["product"])
    print("QNX_KEY=" + email + " " + ApiKey.generate(user, "bench")[1])
"""

_SEED_CHATS = """
import os
from django.db import transaction
from accounts.models import User
from chat.models import Chat, ChatQuery
user = User.objects.get(email=os.environ["QNX_BENCH_EMAIL"])
chats, turns, reply, model = (int(os.environ["QNX_BENCH_CHATS"]), int(os.environ["QNX_BENCH_TURNS"]),
                              os.environ["QNX_BENCH_REPLY"], os.environ["QNX_BENCH_MODEL"])
with transaction.atomic():
    for index in range(chats - 1):
        chat = Chat.objects.create(owner=user, title=f"Bench chat {index}", model=model)
        ChatQuery.objects.create(chat=chat, prompt=f"Question {index}?", model=model, response=reply, status="complete")
    long_chat = Chat.objects.create(owner=user, title="A long chat", model=model)
    previous = None
    for index in range(turns):
        previous = ChatQuery.objects.create(chat=long_chat, parent=previous, prompt=f"Question {index}?",
                                            model=model, response=reply, status="complete")
print("QNX_CHAT=" + str(long_chat.pk))
"""


def setup_users(server: AppServer, emails: list[str]) -> dict[str, str]:
    out = server.manage("shell", "-c", _SETUP_USERS, env={"QNX_BENCH_EMAILS": ",".join(emails)})
    keys = {}
    for line in out.splitlines():
        if line.startswith("QNX_KEY="):
            email, key = line[len("QNX_KEY=") :].split(" ", 1)
            keys[email] = key
    return keys


def seed_chats(server: AppServer, email: str, chats: int, turns: int) -> str:
    env = {
        "QNX_BENCH_EMAIL": email,
        "QNX_BENCH_CHATS": str(chats),
        "QNX_BENCH_TURNS": str(turns),
        "QNX_BENCH_REPLY": REPLY,
        "QNX_BENCH_MODEL": MODEL,
    }
    out = server.manage("shell", "-c", _SEED_CHATS, env=env, timeout=600)
    return next(line.split("=", 1)[1] for line in out.splitlines() if line.startswith("QNX_CHAT="))


def start_app(kind: str, work: Path, emulator_url: str, naming: bool) -> AppServer:
    env = {name: str(value) for name, value in emulator_settings(emulator_url).items()}
    env.update(
        {
            "DEFAULT_MODEL": MODEL,
            "FALLBACK_MODELS": "",  # a failing turn must show as an error, not as an answer from the local model
            "UTILITY_MODELS": MODEL,  # chat names come from the emulator too, never from the local model
            "CHAT_NAMING": "true" if naming else "false",
            "LOCAL_MODEL_PRELOAD": "false",
            "OPENAI_COMPATIBLE_BASE_URL": "",  # one OpenAI provider: the emulator lists gpt-3.5-turbo too
            "PROVIDER_READ_TIMEOUT_MS": "60000",
            "PROVIDER_CONNECT_TIMEOUT_MS": "10000",
        }
    )
    server = AppServer(work / kind, env, kind)
    server.start(timeout=120)
    return server


# --- the load client ----------------------------------------------------------------------------------------------

OPENAI_FIRST = re.compile(rb'"content":\s*"(?!")')
SSE_FIRST = b'"type": "content"'
SSE_CHAT_ID = re.compile(rb'"chatId": "([0-9a-f-]{36})"')


@dataclass
class Result:
    ok: bool
    ttft: float | None  # seconds from sending the request to the first token (or the whole answer)
    total: float
    error: str = ""
    chat_id: str | None = None


class Watch:
    """Looks at a response's bytes as they arrive: when the first token came, and whether it ended well."""

    def __init__(self, kind: str, started: float):
        self.kind = kind
        self.started = started
        self.first: float | None = None
        self.head = bytearray()  # everything up to the first token
        self.tail = b""
        self.chat_id: str | None = None

    def feed(self, data: bytes) -> None:
        if self.first is None and self.kind in ("sse", "openai_stream"):
            self.head += data
            hit = SSE_FIRST in self.head if self.kind == "sse" else OPENAI_FIRST.search(self.head)
            if hit:
                self.first = time.perf_counter()
                match = SSE_CHAT_ID.search(self.head)
                self.chat_id = match.group(1).decode() if match else None
        self.tail = (self.tail + data)[-16384:]

    def ended_well(self, status: int) -> tuple[bool, str]:
        if self.kind == "sse":
            good = status == 200 and b'"type": "complete"' in self.tail and b'"status": "complete"' in self.tail
        elif self.kind == "openai_stream":
            good = status == 200 and b"[DONE]" in self.tail and self.first is not None
        elif self.kind == "json":
            good = status in (200, 201) and b'"status": "complete"' in self.tail
        elif self.kind == "openai_json":
            good = status == 200 and b'"choices"' in self.tail
        else:  # read: any JSON page
            good = status == 200
        return good, "" if good else f"HTTP {status}: {self.tail[-300:].decode(errors='replace')}"


class HttpConnection:
    """One keep-alive HTTP/1.1 connection: a worker of a block owns one, opened before the block's clock starts."""

    def __init__(self, base_url: str):
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname, parts.port
        self.reader = self.writer = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 22)
        self.writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except (OSError, ConnectionError):
                pass
            self.writer = None

    async def request(self, method: str, path: str, headers: dict, body: bytes | None, kind: str) -> Result:
        if self.writer is None:
            await self.open()
        body = body or b""
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        started = time.perf_counter()
        watch = Watch(kind, started)
        try:
            self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
            status, close = await self._read_response(watch)
        except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError) as exc:
            await self.close()
            return Result(False, None, time.perf_counter() - started, f"connection: {exc!r}")
        ended = time.perf_counter()
        if close:
            await self.close()
        ok, error = watch.ended_well(status)
        first = watch.first if kind in ("sse", "openai_stream") else ended
        ttft = (first - started) if (ok and first is not None) else None
        return Result(ok, ttft, ended - started, error, watch.chat_id)

    async def _read_response(self, watch: Watch) -> tuple[int, bool]:
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("closed before the status line")
        status = int(status_line.split()[1])
        headers = {}
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip().lower()
        if headers.get(b"transfer-encoding") == b"chunked":
            while True:
                size = int((await self.reader.readline()).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while (await self.reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                watch.feed(await self.reader.readexactly(size))
                await self.reader.readexactly(2)
        elif b"content-length" in headers:
            length = int(headers[b"content-length"])
            if length:
                watch.feed(await self.reader.readexactly(length))
        else:
            watch.feed(await self.reader.read())
            return status, True
        return status, headers.get(b"connection") == b"close"


class WsConnection:
    def __init__(self, ws_url: str, key: str):
        self.url = f"{ws_url}/ws/chat/"
        self.key = key
        self.socket = None

    async def open(self) -> None:
        self.socket = await ws_connect(
            self.url,
            additional_headers={"Authorization": f"Bearer {self.key}"},
            compression=None,  # daphne (autobahn) offers none; uvicorn's websockets would accept it: keep it equal
            max_size=1 << 24,
            ping_interval=None,
            open_timeout=60,
            close_timeout=2,
        )

    async def close(self) -> None:
        if self.socket is not None:
            try:
                await self.socket.close()
            except (OSError, websockets.WebSocketException):
                pass
            self.socket = None

    async def turn(self, prompt: str, frame_timeout: float = 60) -> Result:
        if self.socket is None:
            await self.open()
        started = time.perf_counter()
        first = None
        chat_id = None
        try:
            await self.socket.send(json.dumps({"prompt": prompt, "model": MODEL}))
            while True:
                frame = await asyncio.wait_for(self.socket.recv(), frame_timeout)
                if first is None:
                    if '"type": "content"' in frame:
                        first = time.perf_counter()
                    elif '"type": "metadata"' in frame:
                        chat_id = json.loads(frame).get("chatId")
                if '"type": "complete"' in frame:
                    ended = time.perf_counter()
                    ok = '"status": "complete"' in frame and first is not None
                    return Result(ok, first - started if ok else None, ended - started, "" if ok else frame[:300],
                                  chat_id)  # fmt: skip
                if '"type": "error"' in frame:
                    return Result(False, None, time.perf_counter() - started, frame[:300], chat_id)
        except (TimeoutError, OSError, websockets.WebSocketException) as exc:
            await self.close()
            return Result(False, None, time.perf_counter() - started, f"socket: {exc!r}", chat_id)


# --- what one turn is, per target ---------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    base_url: str
    key: str | None
    kind: str  # sse | ws | json | openai_stream | openai_json
    path: str
    pid: int | None  # the server process whose CPU a turn costs
    ws_url: str = ""

    def connection(self):
        return WsConnection(self.ws_url, self.key) if self.kind == "ws" else HttpConnection(self.base_url)

    def headers(self) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        return headers

    def body(self, prompt: str) -> bytes:
        if self.kind in ("sse", "json"):
            return json.dumps({"prompt": prompt, "model": MODEL}).encode()
        payload = {"model": MODEL, "messages": [{"role": "user", "content": prompt}]}
        if self.kind == "openai_stream":
            payload.update(stream=True, stream_options={"include_usage": True})
        return json.dumps(payload).encode()

    async def turn(self, connection, prompt: str, path: str | None = None) -> Result:
        if self.kind == "ws":
            return await connection.turn(prompt)
        return await connection.request("POST", path or self.path, self.headers(), self.body(prompt), self.kind)


def direct_for(target: Target, emulator_url: str, emulator_pid: int) -> Target:
    """Straight to the emulator, the same shape of answer (streamed or not) as `target`."""
    streamed = target.kind in ("sse", "ws", "openai_stream")
    kind = "openai_stream" if streamed else "openai_json"
    return Target("direct", emulator_url, "sk-emulator-openai", kind, "/v1/chat/completions", emulator_pid)


@dataclass
class Block:
    target: str
    concurrency: int
    results: list = field(default_factory=list)
    wall: float = 0.0
    cpu: float = 0.0  # the target server's CPU seconds over the block
    client_cpu: float = 0.0
    planned: int = 0

    @property
    def ok(self) -> list:
        return [r for r in self.results if r.ok]

    @property
    def ttfts(self) -> list[float]:
        return [r.ttft for r in self.results if r.ok and r.ttft is not None]


async def open_all(connections: list, in_flight: int = 25) -> None:
    gate = asyncio.Semaphore(in_flight)

    async def one(connection):
        async with gate:
            await connection.open()

    await asyncio.gather(*(one(c) for c in connections))


def settle_cpu(pid: int | None, limit: float = 5.0) -> None:
    """Wait until the server is idle again (background work a turn started, such as naming its chat, is part of
    that turn's cost), at most `limit` seconds."""
    if pid is None:
        return
    deadline = time.monotonic() + limit
    previous = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = cpu_seconds(pid)
        if now - previous < 0.011:  # at most one clock tick in 200 ms
            return
        previous = now


async def run_block(target: Target, concurrency: int, turns: int, bound: float, label: str) -> Block:
    block = Block(label, concurrency, planned=turns)
    connections = [target.connection() for _ in range(concurrency)]
    await open_all(connections)
    taken = 0
    deadline = time.monotonic() + bound

    async def worker(connection):
        nonlocal taken
        while taken < turns and time.monotonic() < deadline:
            taken += 1
            block.results.append(await target.turn(connection, f"Bench question {taken} of {label}: say 50 words."))

    await asyncio.to_thread(settle_cpu, target.pid, 2.0)
    cpu_before, client_before = cpu_seconds(target.pid), own_cpu_seconds()
    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in connections))
    block.wall = time.perf_counter() - started
    block.client_cpu = own_cpu_seconds() - client_before
    await asyncio.to_thread(settle_cpu, target.pid)
    block.cpu = cpu_seconds(target.pid) - cpu_before
    await asyncio.gather(*(c.close() for c in connections))
    return block


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def ms(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value * 1000:.{digits}f}"


class Profiler:
    """py-spy over a block (needs root and the py-spy binary): raw stacks for flame graphs / grep."""

    def __init__(self, out_dir: Path | None):
        self.out_dir = out_dir
        self.process = None

    def start(self, pid: int | None, name: str, seconds: float) -> None:
        if self.out_dir is None or pid is None:
            return
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [spy, "record", "-p", str(pid), "-d", str(int(seconds)), "-f", "raw", "-o",
             str(self.out_dir / f"{name}.txt"), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def stop(self) -> None:
        if self.process is not None:
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
            self.process = None


async def latency(targets: dict[str, Target], direct: dict, plan: Plan, levels: list[int], profiler: Profiler,
                  server_kind: str, rows: list) -> list[dict]:  # fmt: skip
    """Appends one row per target and level to `rows` as soon as it is measured."""
    for concurrency in levels:
        turns, rounds = plan.levels[concurrency]
        for name, target in targets.items():
            through, straight = [], []
            for round_index in range(rounds):
                base = direct[name]
                straight.append(await run_block(base, concurrency, turns, plan.block_seconds, f"direct-{name}"))
                profiling = round_index == 0 and profiler.out_dir is not None
                if profiling:
                    profiler.start(target.pid, f"{server_kind}-{name}-c{concurrency}", 20)
                through.append(await run_block(target, concurrency, turns, plan.block_seconds, name))
                if profiling:
                    profiler.stop()
                b = through[-1]
                print(
                    f"  [{server_kind}] {name:8} c={concurrency:<4} round {round_index + 1}: "
                    f"{len(b.ok)}/{b.planned} ok, "
                    f"TTFT p50 {ms(pct(b.ttfts, 50))} ms (direct {ms(pct(straight[-1].ttfts, 50))} ms), "
                    f"{len(b.results) / b.wall:.1f} turns/s, CPU {ms(b.cpu / max(1, len(b.results)))} ms/turn",
                    flush=True,
                )
            rows.append(summarize(name, server_kind, concurrency, through, straight))
    return rows


def summarize(name, server_kind, concurrency, through: list[Block], straight: list[Block]) -> dict:
    t_ttft = [x for b in through for x in b.ttfts]
    d_ttft = [x for b in straight for x in b.ttfts]
    results = [r for b in through for r in b.results]
    wall = sum(b.wall for b in through)
    added = {q: (None if pct(t_ttft, q) is None or pct(d_ttft, q) is None else pct(t_ttft, q) - pct(d_ttft, q))
             for q in (50, 95, 99)}  # fmt: skip
    errors = [r.error for r in results if not r.ok]
    return {
        "target": name,
        "server": server_kind if name in APP_TARGETS else "",
        "concurrency": concurrency,
        "turns": len(results),
        "planned": sum(b.planned for b in through),
        "ok": len(t_ttft),
        "errors": len(errors),
        "error_sample": errors[:3],
        "ttft": {q: pct(t_ttft, q) for q in (50, 95, 99)},
        "direct_ttft": {q: pct(d_ttft, q) for q in (50, 95, 99)},
        "added": added,
        "cpu_per_turn": sum(b.cpu for b in through) / max(1, len(results)),
        "direct_emulator_cpu_per_turn": sum(b.cpu for b in straight) / max(1, sum(len(b.results) for b in straight)),
        "client_cpu_per_turn": sum(b.client_cpu for b in through) / max(1, len(results)),
        "turns_per_second": len(results) / wall if wall else None,
        "direct_turns_per_second": sum(len(b.results) for b in straight) / max(1e-9, sum(b.wall for b in straight)),
    }


async def turns_by_number(app: Target, direct: Target, plan: Plan, server_kind: str) -> dict:
    """Real turns, one after another, in `turn_chats` chats walked side by side; each turn paired with a request
    straight to the emulator just before it."""
    count = max(plan.turn_marks)
    connection, direct_connection = app.connection(), direct.connection()
    await connection.open()
    await direct_connection.open()
    chat_ids = [None] * plan.turn_chats
    through: dict[int, list[float]] = {}
    straight: dict[int, list[float]] = {}
    failures = 0
    deadline = time.monotonic() + plan.block_seconds * 4
    for number in range(1, count + 1):
        if time.monotonic() > deadline:
            break
        for index in range(plan.turn_chats):
            d = await direct.turn(direct_connection, f"Direct question {number}.")
            path = "/api/v1/chat/stream" if chat_ids[index] is None else f"/api/v1/chat/{chat_ids[index]}/stream"
            r = await app.turn(connection, f"Question {number} in this chat: say 50 words.", path)
            if not r.ok:
                failures += 1
                print(f"  [{server_kind}] turn {number} failed: {r.error[:200]}", flush=True)
                continue
            chat_ids[index] = chat_ids[index] or r.chat_id
            through.setdefault(number, []).append(r.ttft)
            if d.ok:
                straight.setdefault(number, []).append(d.ttft)
        if number in plan.turn_marks:
            print(f"  [{server_kind}] turn {number}: TTFT {ms(statistics.median(through.get(number, [0])))} ms",
                  flush=True)  # fmt: skip
    await connection.close()
    await direct_connection.close()
    marks = {}
    for mark in plan.turn_marks:
        window = [n for n in range(mark - 2, mark + 3) if n in through] if mark > 1 else [1]
        t = [x for n in window for x in through.get(n, [])]
        d = [x for n in window for x in straight.get(n, [])]
        marks[mark] = {
            "ttft": statistics.median(t) if t else None,
            "direct": statistics.median(d) if d else None,
            "samples": len(t),
        }
    return {"server": server_kind, "marks": marks, "failures": failures, "reached": max(through, default=0)}


async def reads(server: AppServer, key: str, chat_id: str, plan: Plan, server_kind: str, rows: list) -> list[dict]:
    headers = {"Authorization": f"Bearer {key}"}
    for label, path in (
        (f"chat list `GET /api/v1/chat/user` ({plan.reads_chats} chats)", "/api/v1/chat/user"),
        (f"chat history `GET /api/v1/chat/{{id}}` ({plan.history_turns} turns)", f"/api/v1/chat/{chat_id}"),
    ):
        connections = [HttpConnection(server.url) for _ in range(10)]
        await open_all(connections)
        latencies, failures, taken = [], [], 0
        deadline = time.monotonic() + plan.reads_seconds

        async def worker(connection, path=path, deadline=deadline, latencies=latencies, failures=failures):
            nonlocal taken
            while taken < plan.reads_requests and time.monotonic() < deadline:
                taken += 1
                r = await connection.request("GET", path, headers, None, "read")
                if r.ok:
                    latencies.append(r.total)
                else:
                    failures.append(r.error[:200])

        await asyncio.to_thread(settle_cpu, server.pid, 2.0)
        cpu_before = cpu_seconds(server.pid)
        started = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in connections))
        wall = time.perf_counter() - started
        cpu = cpu_seconds(server.pid) - cpu_before
        await asyncio.gather(*(c.close() for c in connections))
        done = len(latencies) + len(failures)
        rows.append(
            {
                "server": server_kind,
                "what": label,
                "requests": done,
                "failures": len(failures),
                "failure_sample": failures[:2],
                "per_second": len(latencies) / wall if wall else None,
                "p50": pct(latencies, 50),
                "p95": pct(latencies, 95),
                "cpu_per_request": cpu / max(1, done),
            }
        )
        r = rows[-1]
        print(f"  [{server_kind}] {label}: {r['per_second']:.1f}/s, p50 {ms(r['p50'])} ms, {len(failures)} failed",
              flush=True)  # fmt: skip
    return rows


async def wsscale(server: AppServer, key: str, emulator_url: str, plan: Plan, server_kind: str) -> dict:
    n = plan.ws_sockets
    pid = server.pid
    await asyncio.to_thread(settle_cpu, pid, 3.0)
    rss_before = rss_bytes(pid)
    # 1. Handshakes, as fast as the in-flight bound allows.
    connections = [WsConnection(server.ws_url, key) for _ in range(n)]
    gate = asyncio.Semaphore(plan.ws_in_flight)
    failed_handshakes = []

    async def handshake(connection):
        async with gate:
            try:
                await connection.open()
            except (TimeoutError, OSError, websockets.WebSocketException) as exc:
                failed_handshakes.append(repr(exc)[:200])

    cpu_before = cpu_seconds(pid)
    started = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(handshake(c) for c in connections)), plan.ws_bound_seconds)
    handshake_wall = time.perf_counter() - started
    await asyncio.to_thread(settle_cpu, pid, 3.0)
    handshake_cpu = cpu_seconds(pid) - cpu_before
    opened = [c for c in connections if c.socket is not None]
    rss_idle = rss_bytes(pid)
    idle_kib = (rss_idle - rss_before) / max(1, len(opened)) / 1024
    print(f"  [{server_kind}] {len(opened)}/{n} sockets in {handshake_wall:.2f} s "
          f"({len(opened) / handshake_wall:.0f}/s), idle RSS +{idle_kib:.1f} KiB/socket", flush=True)  # fmt: skip

    # 2. Streaming turns on every socket, started over ws_ramp_seconds, the emulator paced so that they overlap.
    configure_emulator(emulator_url, tokens_per_second=(len(REPLY.split()) - 1) / plan.ws_stream_seconds)
    state = {"streaming": 0, "peak": 0, "peak_rss": rss_idle, "peak_at": None}
    outcomes = []
    error_samples: list[str] = []
    stall_after = max(10.0, 5 * plan.ws_stream_seconds / 49)
    phase_started = time.monotonic()
    phase_deadline = phase_started + plan.ws_bound_seconds

    async def stream(index, connection):
        await asyncio.sleep(plan.ws_ramp_seconds * index / max(1, len(opened)))
        sent = time.perf_counter()
        first, last_frame, longest_gap, contents = None, None, 0.0, 0
        outcome = "unfinished"
        try:
            await connection.socket.send(json.dumps({"prompt": f"Scale question {index}: say 50 words.",
                                                     "model": MODEL}))  # fmt: skip
            while time.monotonic() < phase_deadline:
                timeout = min(stall_after, max(0.1, phase_deadline - time.monotonic()))
                try:
                    frame = await asyncio.wait_for(connection.socket.recv(), timeout)
                except TimeoutError:
                    continue  # a gap is measured when the next frame comes (or the phase ends): keep waiting
                now = time.perf_counter()
                if '"type": "content"' in frame:
                    contents += 1
                    if first is None:
                        first = now
                        state["streaming"] += 1
                        state["peak"] = max(state["peak"], state["streaming"])
                    elif last_frame is not None:
                        longest_gap = max(longest_gap, now - last_frame)
                    last_frame = now
                if '"type": "complete"' in frame:
                    outcome = "complete" if '"status": "complete"' in frame else "not complete"
                    break
                if '"type": "error"' in frame:
                    outcome = "error"
                    if len(error_samples) < 3:
                        error_samples.append(frame[:300])
                    break
        except (OSError, websockets.WebSocketException) as exc:
            outcome = f"closed: {type(exc).__name__}"
        finally:
            if first is not None:
                state["streaming"] -= 1
        if outcome == "unfinished" and last_frame is not None:
            longest_gap = max(longest_gap, time.perf_counter() - last_frame)
        outcomes.append({"outcome": outcome, "ttft": None if first is None else first - sent, "gap": longest_gap,
                         "contents": contents, "stalled": longest_gap > stall_after})  # fmt: skip

    async def sample():
        while time.monotonic() < phase_deadline:
            rss = rss_bytes(pid)
            if state["streaming"] >= state["peak"] and rss > state["peak_rss"]:
                state["peak_rss"] = rss
            await asyncio.sleep(0.5)

    sampler = asyncio.create_task(sample())
    cpu_before = cpu_seconds(pid)
    await asyncio.gather(*(stream(i, c) for i, c in enumerate(opened)))
    stream_wall = time.monotonic() - phase_started
    sampler.cancel()
    stream_cpu = cpu_seconds(pid) - cpu_before
    configure_emulator(emulator_url, tokens_per_second=0)
    await asyncio.gather(*(c.close() for c in opened))
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o["outcome"]] = counts.get(o["outcome"], 0) + 1
    # A started stream with a gap between two frames (or before the phase's end) longer than stall_after.
    counts[f"stalled (a gap > {stall_after:.0f} s)"] = sum(1 for o in outcomes if o["stalled"])
    ttfts = [o["ttft"] for o in outcomes if o["ttft"] is not None]
    result = {
        "server": server_kind,
        "sockets": n,
        "opened": len(opened),
        "failed_handshakes": len(failed_handshakes),
        "handshake_sample": failed_handshakes[:2],
        "handshakes_per_second": len(opened) / handshake_wall if handshake_wall else None,
        "cpu_per_handshake": handshake_cpu / max(1, len(opened)),
        "idle_kib_per_socket": (rss_idle - rss_before) / max(1, len(opened)) / 1024,
        "peak_streaming": state["peak"],
        "streaming_kib_per_connection": (state["peak_rss"] - rss_before) / max(1, state["peak"] or 1) / 1024,
        "outcomes": counts,
        "ttft_p50": pct(ttfts, 50),
        "ttft_p99": pct(ttfts, 99),
        "stream_seconds": plan.ws_stream_seconds,
        "phase_wall": stream_wall,
        "cpu_per_turn": stream_cpu / max(1, len(outcomes)),
        "longest_gap": max((o["gap"] for o in outcomes), default=0.0),
        "error_sample": error_samples,
    }
    print(f"  [{server_kind}] streams: peak {state['peak']} concurrent, {counts}, first token p50 "
          f"{ms(result['ttft_p50'], 0)} ms / p99 {ms(result['ttft_p99'], 0)} ms", flush=True)  # fmt: skip
    return result


# --- the report ---------------------------------------------------------------------------------------------------


def versions() -> dict:
    import importlib.metadata as metadata

    found = {"python": platform.python_version()}
    for package in ("django", "channels", "daphne", "twisted", "uvicorn", "uvloop", "httptools", "granian",
                    "websockets", "openai", "aiohttp"):  # fmt: skip
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    found["litellm"] = litellm_version() or "not installed"
    return found


def machine() -> str:
    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.processor()
    )  # fmt: skip
    mem = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024
    return f"{os.cpu_count()} cores ({model}), {mem:.0f} GiB RAM, {platform.system()} {platform.release()}"


def render(report: dict) -> str:
    out = []
    meta = report["meta"]
    out.append(
        f"{meta['date']}, {meta['machine']}; load average {meta['load_before']} before, {meta['load_after']} after "
        "(the machine is shared with other sessions: prefer the CPU columns and ratios within a run).  \n"
        f"Command: `{meta['command']}`  \n"
        "Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".  \n"
        f"Upstream: the provider emulator, {len(REPLY.split())} chunks as fast as it can; QueryNox model {MODEL}, "
        f"chat naming {'on' if meta['naming'] else 'off'}, SQLite, in-memory channel layer; one load client."
    )
    if report["latency"]:
        levels = sorted({row["concurrency"] for row in report["latency"]})
        mid = 50 if 50 in levels else levels[-1]
        out.append("")
        out.append(
            "| through | server | "
            + " | ".join(f"added TTFT p50 / p95 / p99 at {c} (ms)" for c in levels)
            + f" | CPU per turn at 1 / {mid} (ms) | turns/s at {mid} | TTFT p50 at {mid} (ms) | failed |"
        )
        out.append("|---|---|" + "---|" * (len(levels) + 4))
        by_key = {}
        for row in report["latency"]:
            by_key.setdefault((row["target"], row["server"]), {})[row["concurrency"]] = row
        for (target, server), per_level in by_key.items():
            cells = []
            for c in levels:
                row = per_level.get(c)
                cells.append("–" if row is None else " / ".join(ms(row["added"][q]) for q in (50, 95, 99)))
            low, high = per_level.get(min(levels)), per_level.get(mid)
            cpu = f"{ms(low['cpu_per_turn']) if low else '–'} / {ms(high['cpu_per_turn']) if high else '–'}"
            rate = f"{high['turns_per_second']:.1f}" if high and high["turns_per_second"] else "–"
            first = ms(high["ttft"][50]) if high else "–"
            failed = sum(r["errors"] for r in per_level.values())
            total = sum(r["turns"] for r in per_level.values())
            out.append(f"| {TARGET_LABELS[target]} | {server or '–'} | " + " | ".join(cells)
                       + f" | {cpu} | {rate} | {first} | {failed}/{total} |")  # fmt: skip
        direct_rows = {}
        for row in report["latency"]:
            direct_rows.setdefault(row["concurrency"], []).append(row)
        out.append("")
        out.append(
            "Straight to the emulator (the baseline subtracted above), TTFT p50 / p95 / p99 over all its blocks: "
            + "; ".join(
                f"{c} streams {' / '.join(ms(statistics.median([r['direct_ttft'][q] for r in rows if r['direct_ttft'][q] is not None] or [0])) for q in (50, 95, 99))} ms"  # noqa: E501
                for c, rows in sorted(direct_rows.items())
            )
            + ". Load client CPU per turn at the highest level: "
            + ", ".join(f"{r['target']} {ms(r['client_cpu_per_turn'])} ms" for r in report["latency"]
                        if r["concurrency"] == max(levels))  # fmt: skip
            + "."
        )
    if report["turns"]:
        out.append("")
        marks = sorted(report["turns"][0]["marks"])
        out.append("| first token by turn number in one chat (SSE) | server | "
                   + " | ".join(f"turn {m}" for m in marks) + " |")  # fmt: skip
        out.append("|---|---|" + "---|" * len(marks))
        for row in report["turns"]:
            cells = [
                f"{ms(v['ttft'])} ms (+{ms(None if v['ttft'] is None or v['direct'] is None else v['ttft'] - v['direct'])})"  # noqa: E501
                for v in (row["marks"][m] for m in marks)
            ]
            out.append(f"| TTFT (+ added over direct), median of turns n±2 in {report['meta']['turn_chats']} chat(s) "
                       f"| {row['server']} | " + " | ".join(cells) + " |")  # fmt: skip
    if report["reads"]:
        out.append("")
        out.append("| reads, 10 concurrent | server | requests/s | p50 (ms) | p95 (ms) | CPU per request (ms) "
                   "| failed |")  # fmt: skip
        out.append("|---|---|---|---|---|---|---|")
        for row in report["reads"]:
            out.append(f"| {row['what']} | {row['server']} | {row['per_second']:.1f} | {ms(row['p50'])} | "
                       f"{ms(row['p95'])} | {ms(row['cpu_per_request'])} | "
                       f"{row['failures']}/{row['requests']} |")  # fmt: skip
    if report["wsscale"]:
        out.append("")
        out.append("| WebSocket scale | server | sockets opened | handshakes/s | CPU per handshake (ms) | "
                   "idle KiB/socket | peak concurrent streams | KiB per streaming connection | outcomes | "
                   "first token p50 / p99 (ms) | CPU per turn (ms) |")  # fmt: skip
        out.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for row in report["wsscale"]:
            outcomes = ", ".join(f"{k} {v}" for k, v in sorted(row["outcomes"].items()))
            out.append(
                f"| {row['sockets']} sockets, a {row['stream_seconds']:g} s paced answer each | {row['server']} | "
                f"{row['opened']} | {row['handshakes_per_second']:.0f} | {ms(row['cpu_per_handshake'], 2)} | "
                f"{row['idle_kib_per_socket']:.1f} | {row['peak_streaming']} | "
                f"{row['streaming_kib_per_connection']:.1f} | {outcomes} | {ms(row['ttft_p50'], 0)} / "
                f"{ms(row['ttft_p99'], 0)} | {ms(row['cpu_per_turn'])} |"
            )
    for row in report["wsscale"]:
        if row.get("error_sample"):
            out.append("")
            out.append(f"WebSocket scale, first error frame under {row['server']}: `{row['error_sample'][0][:240]}`")
    samples = [(r["target"], r["server"], r["concurrency"], r["error_sample"][0]) for r in report["latency"]
               if r["error_sample"]]  # fmt: skip
    if samples:
        out.append("")
        out.append("Failed turns, first error of each: " + "; ".join(
            f"{target} ({server or '–'}, {c} streams): `{error[:160].strip()}`" for target, server, c, error in samples
        ) + ".")  # fmt: skip
    for failure in report["failures"]:
        out.append("")
        out.append(f"**Part not measured**: {failure['part']} under {failure['server']}: `{failure['error'][:300]}`")
    return "\n".join(out)


README_SECTION = """## Gateway (`bench/gateway.py`)

What a QueryNox turn adds on top of its provider, measured next to LiteLLM's proxy and a bare relay against the
same provider emulator in the same run (issue 11). See the module docstring for exactly what is measured; in short:
*added TTFT* is the time to the first token through X minus straight to the emulator (each block through X is paired
with a block straight to the emulator just before it, same concurrency); for the non-streamed endpoints it is the
time to the whole answer minus the emulator's non-streamed answer. CPU is the server process tree's utime+stime
over a block divided by its turns (background work a turn starts, such as naming its chat, is waited for).

```
.venv/bin/pip install -r bench/requirements-bench.txt     # aiohttp (relay), uvicorn + uvloop + httptools, granian
python3 -m venv bench/.venv-litellm && bench/.venv-litellm/bin/pip install -r bench/requirements-litellm.txt
.venv/bin/python bench/gateway.py --quick                 # smoke run, under a minute, prints the tables
.venv/bin/python bench/gateway.py --readme before         # full run (daphne); writes its tables below
.venv/bin/python bench/gateway.py --only sse,ws,v1s --levels 1,50        # part of it
.venv/bin/python bench/gateway.py --servers uvicorn,granian --only sse,ws,v1s --levels 1,50 --rounds 1
.venv/bin/python bench/gateway.py --servers daphne,uvicorn,granian --only wsscale --ws-sockets 500
.venv/bin/python bench/gateway.py --only sse --levels 50 --profile /tmp/prof   # py-spy raw stacks per block (root)
```
"""


def write_readme(label: str, text: str) -> None:
    content = README.read_text()
    if "## Gateway (`bench/gateway.py`)" not in content:
        content = content.rstrip("\n") + "\n\n" + README_SECTION
    start, end = f"<!-- gateway:{label} -->", f"<!-- /gateway:{label} -->"
    block = f"{start}\n### Results: {label}\n\n{text}\n{end}"
    if start in content and end in content:
        head, rest = content.split(start, 1)
        content = head + block + rest.split(end, 1)[1]
    else:
        content = content.rstrip("\n") + "\n\n" + block + "\n"
    README.write_text(content)


# --- main ---------------------------------------------------------------------------------------------------------


async def section(report: dict, name: str, server_kind: str, work):
    """Run one part; a failure is recorded and reported, and the other parts still run."""
    try:
        return await work
    except Exception as exc:  # a benchmark part failing must not lose the figures the others measured
        import traceback

        print(f"  [{server_kind}] {name} FAILED: {exc!r}\n{traceback.format_exc()[-2000:]}", flush=True)
        report["failures"].append({"server": server_kind, "part": name, "error": repr(exc)[:500]})
        return None


async def run(args, plan: Plan, work: Path) -> dict:
    parts = set(args.only)
    levels = args.levels or sorted(plan.levels)
    chosen = {c: plan.levels.get(c, (max(c, 20) * 3, 1)) for c in levels}
    if args.rounds:
        chosen = {c: (turns, args.rounds) for c, (turns, _rounds) in chosen.items()}
    overrides = {"levels": chosen}
    if args.ws_sockets:
        overrides["ws_sockets"] = args.ws_sockets
    if args.ws_stream_seconds:
        overrides["ws_stream_seconds"] = args.ws_stream_seconds
    plan = Plan(**{**plan.__dict__, **overrides})
    report = {"latency": [], "turns": [], "reads": [], "wsscale": [], "failures": []}
    helpers = []
    profiler = Profiler(Path(args.profile) if args.profile else None)
    emulator, emulator_url = start_emulator(work)
    helpers.append(emulator)
    try:
        relay_targets = {}
        if "relay" in parts:
            relay, relay_url = start_relay(work, emulator_url)
            helpers.append(relay)
            relay_targets["relay"] = Target("relay", relay_url, "sk-emulator-openai", "openai_stream",
                                            "/v1/chat/completions", relay.pid)  # fmt: skip
        if "litellm" in parts:
            if litellm_version() is None:
                print(f"LiteLLM is not installed in {LITELLM_DIR}: skipped (see bench/requirements-litellm.txt)")
            else:
                litellm, litellm_url, litellm_key = start_litellm(work, emulator_url)
                helpers.append(litellm)
                relay_targets["litellm"] = Target("litellm", litellm_url, litellm_key, "openai_stream",
                                                  "/v1/chat/completions", litellm.pid)  # fmt: skip
        for server_index, kind in enumerate(args.servers):
            server = start_app(kind, work, emulator_url, not args.no_naming)
            try:
                emails = ["bench@example.com", "reader@example.com", "scale@example.com"]
                keys = setup_users(server, emails)
                key = keys["bench@example.com"]
                print(f"{kind}: {server.url} (pid {server.pid})", flush=True)
                app = {
                    "sse": Target("sse", server.url, key, "sse", "/api/v1/chat/stream", server.pid),
                    "ws": Target("ws", server.url, key, "ws", "", server.pid, server.ws_url),
                    "json": Target("json", server.url, key, "json", "/api/v1/chat", server.pid),
                    "v1s": Target("v1s", server.url, key, "openai_stream", "/v1/chat/completions", server.pid),
                    "v1j": Target("v1j", server.url, key, "openai_json", "/v1/chat/completions", server.pid),
                }
                targets = {name: t for name, t in app.items() if name in parts}
                if server_index == 0:
                    targets.update(relay_targets)  # LiteLLM and the relay do not depend on the app's server
                    if "litellm" in targets:
                        litellm = next(h for h in helpers if h.name == "litellm")
                        await asyncio.to_thread(wait_http, f"{targets['litellm'].base_url}/health/liveliness", 240,
                                                litellm.process, litellm.log_path)  # fmt: skip
                direct = {name: direct_for(t, emulator_url, emulator.pid) for name, t in targets.items()}
                # Seeded now, right after migrate: a shell run later would use whatever models the (shared, changing)
                # work tree has by then against the schema this server migrated at its start.
                chat_id = None
                if "reads" in parts:
                    chat_id = await section(report, "reads", kind, asyncio.to_thread(
                        seed_chats, server, "reader@example.com", plan.reads_chats, plan.history_turns))  # fmt: skip
                if targets:
                    # One warm-up turn each (imports, first connections, caches), not measured.
                    for name, target in targets.items():
                        await run_block(target, 1, 2, 30, f"warmup-{name}")
                    measured = latency(targets, direct, plan, levels, profiler, kind, report["latency"])
                    await section(report, "latency", kind, measured)
                if "turns" in parts:
                    sse = app["sse"]
                    walked = turns_by_number(sse, direct_for(sse, emulator_url, emulator.pid), plan, kind)
                    turns = await section(report, "turns", kind, walked)
                    if turns:
                        report["turns"].append(turns)
                if "reads" in parts and chat_id:
                    measured = reads(server, keys["reader@example.com"], chat_id, plan, kind, report["reads"])
                    await section(report, "reads", kind, measured)
                if "wsscale" in parts:
                    measured = wsscale(server, keys["scale@example.com"], emulator_url, plan, kind)
                    scale = await section(report, "wsscale", kind, measured)
                    if scale:
                        report["wsscale"].append(scale)
            finally:
                if report["failures"] and report["failures"][-1]["server"] == kind:
                    print(f"{kind}: server log tail:\n{server.log_tail(20)}", flush=True)
                server.stop()
    finally:
        for helper in reversed(helpers):
            helper.stop()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run in under a minute")
    parser.add_argument("--only", default="", help=f"comma-separated parts of: {','.join(ALL_PARTS)} (default: all; "
                        "--quick: all but litellm)")  # fmt: skip
    parser.add_argument("--servers", default="daphne", help="comma-separated: daphne,uvicorn,granian")
    parser.add_argument("--levels", default="", help="concurrency levels for the latency part (default 1,50,200)")
    parser.add_argument("--rounds", type=int, default=0, help="blocks per target and level (default: the plan's)")
    parser.add_argument("--ws-sockets", type=int, default=0, help="wsscale: sockets (default 2000; --quick 20)")
    parser.add_argument("--ws-stream-seconds", type=float, default=0, help="wsscale: length of one paced answer")
    parser.add_argument("--no-naming", action="store_true", help="CHAT_NAMING=false (default: on, as deployed)")
    parser.add_argument("--readme", metavar="LABEL", help="write the tables into bench/README.md under this label")
    parser.add_argument("--json", metavar="PATH", help="write the raw figures as JSON")
    parser.add_argument("--profile", metavar="DIR", help="py-spy record (raw) the target server over each block")
    args = parser.parse_args()
    args.only = [part.strip() for part in args.only.split(",") if part.strip()] or list(
        QUICK_PARTS if args.quick else ALL_PARTS
    )
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    for part in args.only:
        if part not in ALL_PARTS:
            parser.error(f"unknown part {part!r}: use {', '.join(ALL_PARTS)}")
    for server in args.servers:
        if server not in SERVERS:
            parser.error(f"unknown server {server!r}: use {', '.join(SERVERS)}")
    plan = QUICK if args.quick else FULL
    args.levels = [int(x) for x in args.levels.split(",") if x.strip()] if args.levels else None
    limit = raise_open_file_limit()
    needed = ((args.ws_sockets or plan.ws_sockets) if "wsscale" in args.only else 0) * 2 + 1000
    if limit < needed:
        parser.error(f"the open-file limit is {limit}; the WebSocket part needs {needed} (ulimit -n)")
    load_before = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    started = dt.datetime.now(dt.UTC)
    with tempfile.TemporaryDirectory(prefix="qnx-gateway-") as work_dir:
        try:
            import uvloop

            runner = uvloop.run
        except ImportError:
            runner = asyncio.run
        report = runner(run(args, plan, Path(work_dir)))
    report["meta"] = {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "command": " ".join(["python", "bench/gateway.py", *sys.argv[1:]]),
        "versions": versions(),
        "load_before": load_before,
        "load_after": " / ".join(f"{x:.2f}" for x in os.getloadavg()),
        "naming": not args.no_naming,
        "turn_chats": plan.turn_chats,
        "minutes": round((dt.datetime.now(dt.UTC) - started).total_seconds() / 60, 1),
    }
    text = render(report)
    print("\n" + text + f"\n\n(the run took {report['meta']['minutes']} min)")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))
    if args.readme:
        write_readme(args.readme, text)
        print(f"written to {README.relative_to(BASE_DIR)} under “{args.readme}”")


if __name__ == "__main__":
    main()
