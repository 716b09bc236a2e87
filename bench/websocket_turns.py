"""Concurrent streaming turns over the chat WebSocket: handshakes/s, memory per open connection, streams held.

A real server (testsupport.live.LiveServer: daphne as deployed, or uvicorn / granian serving the same
querynox.asgi:application) whose only provider is the provider emulator (testsupport/emulator.py, its own process,
so its threads do not share the client's interpreter), and one asyncio load client (the `websockets` library):

1. N sockets are opened with `Authorization: Bearer <API key>`, at most --handshake-concurrency handshakes in
   flight: handshakes/s (wall) and the server's CPU time per handshake (its utime+stime from /proc, which the rest
   of a shared machine hardly disturbs).
2. The server's resident memory (VmRSS) with the N sockets idle, minus before they opened: KiB per idle socket.
3. Every socket sends a turn at once. The emulator streams --words words over --stream-seconds, so all N turns
   are in flight together; each must end with all its content (the emulator's reply, exactly) and a `complete`
   event. A socket that closes or gets an `error` first is *dropped*; one that gets no frame for --stall-seconds
   is *stalled*. Peak RSS while streaming, minus before the sockets opened: KiB per streaming connection.

Each size runs on a freshly started server, so one size's memory is not another's leftover.

    .venv/bin/python bench/websocket_turns.py                              # N = 100, 500, 2000 under daphne
    .venv/bin/python bench/websocket_turns.py --sizes 2000 --server uvicorn # see bench/requirements-servers.txt
    .venv/bin/python bench/websocket_turns.py --sizes 500 --profile-handshakes out.txt   # py-spy, as root
    .venv/bin/python bench/websocket_turns.py --sizes 120 --handshake-concurrency 5 --stream-seconds 100 \
        --memory-probe /tmp/mp          # tracemalloc snapshots in the server; bench/memprobe/compare.py reads them

(Not named websockets.py: run as a script, bench/ comes first on sys.path and would shadow the library.)
"""

import argparse
import asyncio
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

import django  # noqa: E402
import websockets  # noqa: E402

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "querynox.settings")
django.setup()  # testsupport.scripted imports the models; nothing here touches a database

from testsupport.http import free_port  # noqa: E402
from testsupport.live import HOST, LiveServer  # noqa: E402
from testsupport.scripted import emulator_settings  # noqa: E402

MODEL = "gpt-3.5-turbo"  # a seeded catalog model of the openai provider, answered by the emulator
EMAIL = "ws-bench@example.com"
PASSWORD = "a long benchmark password"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# A product whose limits no benchmark reaches, so the quota never refuses a turn (it is still checked and charged).
_GRANT_PRODUCT = """
import os
from accounts.models import User
from billing.models import Product
big = 2_000_000_000
product, _ = Product.objects.update_or_create(
    external_id="bench-unlimited",
    defaults=dict(name="Bench", chat_limit=big, image_limit=big, web_search_limit=big, file_rag_limit=big),
)
User.objects.filter(email=os.environ["QNX_LIVE_EMAIL"]).update(product=product)
"""

# More keys of the bench user, so that a handshake can be one whose key this server has not seen yet: clients
# reconnecting after a deploy. They were used moments ago (last_used_at), so their lookup writes nothing.
_MORE_KEYS = """
import os
from django.utils import timezone
from accounts.models import ApiKey, User
user = User.objects.get(email=os.environ["QNX_LIVE_EMAIL"])
for number in range(int(os.environ["QNX_BENCH_KEYS"])):
    key, raw = ApiKey.generate(user, f"bench {number}")
    print("QNX_KEY=" + raw)
ApiKey.objects.filter(user=user).update(last_used_at=timezone.now())
"""

SERVER_COMMANDS = {
    # querynox.server's own command line comes from LiveServer; these replace it for the comparison only.
    "uvicorn": lambda port: [
        sys.executable, "-m", "uvicorn", "--host", HOST, "--port", str(port), "--loop", "uvloop", "--http",
        "httptools", "--ws", "websockets", "--no-access-log", "--lifespan", "off",
        "--ws-max-size", str(4 * 1024 * 1024), "querynox.asgi:application",
    ],
    "granian": lambda port: [
        sys.executable, "-m", "granian", "--interface", "asginl", "--host", HOST, "--port", str(port),
        "--workers", "1", "--loop", "uvloop", "--log-level", "warning",
        "querynox.asgi:application",
    ],
}


def raise_open_file_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children (server, emulator) inherit it
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class BenchServer(LiveServer):
    """LiveServer, optionally running another ASGI server over the same application and database."""

    def __init__(self, work_dir, extra_env, server: str):
        super().__init__(work_dir, extra_env=extra_env)
        self.server = server

    def _spawn(self) -> None:
        if self.server == "daphne":
            return super()._spawn()
        self._log_file = open(self.log_path, "ab")  # closed in stop()
        self.process = subprocess.Popen(
            SERVER_COMMANDS[self.server](self.port),
            cwd=BASE_DIR,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

    def manage(self, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> str:
        # Only the server is traced (--memory-probe): a migration under tracemalloc would take minutes.
        probe = self.env.pop("QNX_MEMPROBE_DIR", None)
        try:
            return super().manage(*args, env=env, timeout=timeout)
        finally:
            if probe is not None:
                self.env["QNX_MEMPROBE_DIR"] = probe

    def pids(self) -> list[int]:
        """The server process and its descendants (granian serves from a worker process it forks)."""
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                children.setdefault(parent, []).append(int(entry.name))
        found, todo = [], [self.process.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, []))
        return found

    def cpu_seconds(self) -> float:
        total = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
        return total / CLOCK_TICKS

    def status_kib(self, name: str) -> int:
        total = 0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith(name + ":"):
                        total += int(line.split()[1])
            except OSError:
                continue
        return total


def start_emulator(reply: str, tokens_per_second: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "testsupport.emulator", "--port", str(port), "--reply", reply,
         "--tokens-per-second", str(tokens_per_second)],
        cwd=BASE_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    line = process.stdout.readline()
    if "listening on" not in line:
        raise RuntimeError(f"the emulator did not start: {line}")
    return process, line.strip().rsplit(" ", 1)[1]


@dataclass
class Stream:
    content: list[str] = field(default_factory=list)
    outcome: str = "pending"  # complete, dropped, stalled
    detail: str = ""
    sent_at: float = 0.0
    first_content_at: float | None = None
    done_at: float | None = None
    frames: int = 0


@dataclass
class Concurrency:
    streaming: int = 0
    peak: int = 0

    def enter(self):
        self.streaming += 1
        self.peak = max(self.peak, self.streaming)

    def leave(self):
        self.streaming -= 1


async def open_sockets(url: str, keys: list[str], count: int, in_flight: int) -> tuple[list, list[str]]:
    limit = asyncio.Semaphore(in_flight)
    failures: list[str] = []

    async def one(number):
        async with limit:
            try:
                return await websockets.connect(
                    f"{url}/ws/chat/", additional_headers={"Authorization": f"Bearer {keys[number % len(keys)]}"},
                    open_timeout=60, max_size=None,
                    ping_interval=None, compression=None,
                )
            except Exception as exc:  # noqa: BLE001 (a benchmark counts failures, it does not stop at one)
                failures.append(f"{type(exc).__name__}: {exc}")
                return None

    sockets = await asyncio.gather(*(one(number) for number in range(count)))
    return [s for s in sockets if s is not None], failures


async def run_turn(socket, prompt: str, stall_seconds: float, concurrency: Concurrency) -> Stream:
    stream = Stream(sent_at=time.perf_counter())
    await socket.send(json.dumps({"prompt": prompt}))
    entered = False
    try:
        while True:
            try:
                frame = await asyncio.wait_for(socket.recv(), timeout=stall_seconds)
            except TimeoutError:
                stream.outcome, stream.detail = "stalled", f"no frame for {stall_seconds:.0f} s"
                return stream
            except websockets.ConnectionClosed as exc:
                stream.outcome, stream.detail = "dropped", f"closed: {exc}"
                return stream
            stream.frames += 1
            event = json.loads(frame)
            kind = event.get("type")
            if kind == "content":
                if stream.first_content_at is None:
                    stream.first_content_at = time.perf_counter()
                    concurrency.enter()
                    entered = True
                stream.content.append(event["content"])
            elif kind == "complete":
                stream.outcome, stream.done_at = "complete", time.perf_counter()
                return stream
            elif kind == "error":
                stream.outcome, stream.detail = "dropped", f"error {event.get('code')}: {event.get('message')}"
                return stream
    finally:
        if entered:
            concurrency.leave()


async def sample_rss(server: BenchServer, peak: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            peak[0] = max(peak[0], server.status_kib("VmRSS"))
        except (OSError, KeyError):
            return
        try:
            await asyncio.wait_for(stop.wait(), timeout=0.2)
        except TimeoutError:
            pass


async def probe_memory(server: BenchServer, args, label: str) -> None:
    """--memory-probe: have the server (bench/memprobe/sitecustomize.py) write a tracemalloc snapshot and a count of
    its live objects by type, and wait until it has."""
    if not args.memory_probe:
        return
    probe = Path(args.memory_probe)
    number = len(list(probe.glob("done-*"))) + 1
    server.process.send_signal(signal.SIGUSR1)
    for _ in range(1200):  # a snapshot of a large heap takes a while on a busy machine; at most 4 minutes
        if (probe / f"done-{number}").exists():
            break
        await asyncio.sleep(0.2)
    (probe / f"label-{number}").write_text(label)


async def probe_when_streaming(server: BenchServer, args, concurrency: Concurrency, size: int) -> None:
    """The streaming snapshot: once every socket has had its first content (or half the stream time has passed)."""
    for _ in range(int(args.stream_seconds * 5)):
        if concurrency.streaming >= size:
            break
        await asyncio.sleep(0.2)
    await probe_memory(server, args, f"streaming N={size} ({concurrency.streaming} streams live)")


async def measure(server: BenchServer, keys: list[str], size: int, args, reply: str) -> dict:
    url = server.ws_url
    # Warm-up: the first handshakes and turns load code and open the database; they are not what is measured.
    warm, _ = await open_sockets(url, keys[:1], 10, 10)
    warm_concurrency = Concurrency()
    await asyncio.gather(*(run_turn(s, "warm up", args.stall_seconds, warm_concurrency) for s in warm))
    for s in warm:
        await s.close()
    await asyncio.sleep(1.0)
    await probe_memory(server, args, "before the sockets opened")

    rss_before = server.status_kib("VmRSS")
    cpu_before = server.cpu_seconds()
    started = time.perf_counter()
    # The handshakes use keys[1:] (all of them new to this server) when --keys asked for more than one.
    sockets, failures = await open_sockets(url, keys[1:] or keys, size, args.handshake_concurrency)
    handshake_seconds = time.perf_counter() - started
    handshake_cpu = server.cpu_seconds() - cpu_before
    await asyncio.sleep(1.0)  # let the server finish each connection's bookkeeping
    rss_idle = server.status_kib("VmRSS")
    await probe_memory(server, args, f"{len(sockets)} sockets idle")
    if args.handshakes_only:
        for s in sockets:
            await s.close()
        return {"server": args.server, "size": size, "keys": args.keys, "opened": len(sockets),
                "handshake_failures": len(failures),
                "handshake_failure_examples": sorted(set(failures))[:3],
                "handshakes_per_second": len(sockets) / handshake_seconds,
                "server_cpu_ms_per_handshake": 1000 * handshake_cpu / max(1, len(sockets)),
                "idle_kib_per_socket": (rss_idle - rss_before) / max(1, len(sockets))}

    concurrency = Concurrency()
    peak = [rss_idle]
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_rss(server, peak, stop))
    prober = asyncio.create_task(probe_when_streaming(server, args, concurrency, len(sockets)))
    cpu_turns = server.cpu_seconds()
    turns_started = time.perf_counter()
    streams = await asyncio.gather(
        *(run_turn(s, f"Question number {i}", args.stall_seconds, concurrency) for i, s in enumerate(sockets))
    )
    turns_seconds = time.perf_counter() - turns_started
    turn_cpu = server.cpu_seconds() - cpu_turns
    stop.set()
    await sampler
    await prober
    rss_after_turns = server.status_kib("VmRSS")
    for s in sockets:
        await s.close()

    wrong = [s for s in streams if s.outcome == "complete" and "".join(s.content) != reply]
    first = [s.first_content_at - s.sent_at for s in streams if s.first_content_at is not None]
    outcomes = {kind: sum(1 for s in streams if s.outcome == kind) for kind in ("complete", "dropped", "stalled")}
    details = sorted({s.detail for s in streams if s.detail})[:5]
    return {
        "server": args.server,
        "size": size,
        "keys": args.keys,
        "opened": len(sockets),
        "handshake_failures": len(failures),
        "handshake_failure_examples": sorted(set(failures))[:3],
        "handshakes_per_second": len(sockets) / handshake_seconds,
        "server_cpu_ms_per_handshake": 1000 * handshake_cpu / max(1, len(sockets)),
        "rss_before_mib": rss_before / 1024,
        "idle_kib_per_socket": (rss_idle - rss_before) / max(1, len(sockets)),
        "streaming_kib_per_socket": (peak[0] - rss_before) / max(1, len(sockets)),
        "rss_peak_mib": peak[0] / 1024,
        "rss_after_turns_mib": rss_after_turns / 1024,
        "peak_concurrent_streams": concurrency.peak,
        **outcomes,
        "wrong_content": len(wrong),
        "failure_examples": details,
        "turns_wall_seconds": turns_seconds,
        "server_cpu_ms_per_turn": 1000 * turn_cpu / max(1, len(sockets)),
        "first_content_p50_ms": 1000 * statistics.median(first) if first else None,
        "first_content_max_ms": 1000 * max(first) if first else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,500,2000", help="comma-separated numbers of sockets")
    parser.add_argument("--server", choices=["daphne", *SERVER_COMMANDS], default="daphne")
    parser.add_argument("--words", type=int, default=50, help="words in the streamed answer (one chunk each)")
    parser.add_argument("--stream-seconds", type=float, default=25, help="how long each answer streams")
    parser.add_argument("--handshake-concurrency", type=int, default=100, help="handshakes in flight at once")
    parser.add_argument("--stall-seconds", type=float, default=60)
    parser.add_argument("--keys", type=int, default=1,
                        help="API keys the sockets take in turn (1: one key, as one client's reconnects; N: keys this "
                             "server has not seen, as many clients at once)")
    parser.add_argument("--handshakes-only", action="store_true", help="open and close the sockets, no turns")
    parser.add_argument("--profile-handshakes", metavar="OUT", help="py-spy raw profile of the server meanwhile")
    parser.add_argument("--memory-probe", metavar="DIR",
                        help="tracemalloc snapshots of the server before, idle and while streaming (bench/memprobe); "
                             "compare them with bench/memprobe/compare.py")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="server setting override")
    parser.add_argument("--json", action="store_true", help="print the raw results as JSON too")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    files = raise_open_file_limit()
    if max(sizes) * 3 + 200 > files:
        parser.error(f"{max(sizes)} sockets need about {max(sizes) * 3 + 200} open files; the limit is {files}")

    reply = " ".join(f"word{i}" for i in range(args.words))
    emulator, emulator_url = start_emulator(reply, max(0.01, (args.words - 1) / args.stream_seconds))
    env = {name: str(value) for name, value in emulator_settings(emulator_url).items()}
    env.update(
        {
            "DEFAULT_MODEL": MODEL,
            "FALLBACK_MODELS": "",
            "UTILITY_MODELS": "",
            "CHAT_NAMING": "false",
            "LOCAL_MODEL_PRELOAD": "false",
            # The emulator (a thread per stream) accepts 2,000 connections slowly on a busy machine: connecting may
            # take longer than the deployed 5 s, which would fail the turn before the socket is measured. The read
            # timeout covers a word every stream-seconds/words under load; a real stall still shows as one.
            "PROVIDER_CONNECT_TIMEOUT_MS": "60000",
            "PROVIDER_READ_TIMEOUT_MS": str(int(1000 * max(30.0, args.stall_seconds))),
        }
    )
    env.update(item.split("=", 1) for item in args.env)
    if args.memory_probe:
        if len(sizes) != 1 or args.server != "daphne":
            parser.error("--memory-probe takes one size, under daphne")
        Path(args.memory_probe).mkdir(parents=True, exist_ok=True)
        env["QNX_MEMPROBE_DIR"] = str(Path(args.memory_probe).resolve())
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BASE_DIR / "bench" / "memprobe"),
                                                          os.environ.get("PYTHONPATH")]))
    results = []
    with tempfile.TemporaryDirectory(prefix="qnx-ws-bench-") as work:
        server = BenchServer(Path(work), env, args.server)
        try:
            server.start()
            keys = [server.create_user_with_key(EMAIL, PASSWORD, "websocket bench")]
            server.manage("shell", "-c", _GRANT_PRODUCT, env={"QNX_LIVE_EMAIL": EMAIL})
            if args.keys > 1:
                more = {"QNX_LIVE_EMAIL": EMAIL, "QNX_BENCH_KEYS": str(args.keys)}
                out = server.manage("shell", "-c", _MORE_KEYS, env=more)
                keys += [line[len("QNX_KEY="):] for line in out.splitlines() if line.startswith("QNX_KEY=")]
            for index, size in enumerate(sizes):
                if index:
                    server.stop()
                    server.start()
                profiler = None
                if args.profile_handshakes:
                    profiler = subprocess.Popen(
                        [str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(server.process.pid),
                         "-r", "200", "-f", "raw", "-o", args.profile_handshakes, "-d", "600"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    )
                    time.sleep(1)
                result = asyncio.run(measure(server, keys, size, args, reply))
                if profiler is not None:
                    profiler.send_signal(2)
                    profiler.wait(timeout=60)
                results.append(result)
                print(json.dumps(result) if args.handshakes_only else summary_line(result), flush=True)
        finally:
            server.stop()
            emulator.terminate()
            emulator.wait(timeout=15)
    if args.handshakes_only:
        return
    print()
    print(table(results, args))
    if args.json:
        print(json.dumps(results, indent=2))


def summary_line(r: dict) -> str:
    return (
        f"{r['server']} N={r['size']}: {r['handshakes_per_second']:.0f} handshakes/s "
        f"({r['server_cpu_ms_per_handshake']:.2f} ms server CPU each), idle {r['idle_kib_per_socket']:.1f} KiB, "
        f"streaming {r['streaming_kib_per_socket']:.1f} KiB per socket, peak {r['peak_concurrent_streams']} "
        f"concurrent streams, complete {r['complete']}, dropped {r['dropped']}, stalled {r['stalled']}, "
        f"wrong {r['wrong_content']}, handshake failures {r['handshake_failures']} {r['failure_examples']}"
    )


def table(results: list[dict], args) -> str:
    rows = [
        ("sockets opened", lambda r: f"{r['opened']}" + (f" ({r['handshake_failures']} failed)"
                                                         if r["handshake_failures"] else "")),
        ("handshakes/s (wall)", lambda r: f"{r['handshakes_per_second']:.0f}"),
        ("server CPU per handshake", lambda r: f"{r['server_cpu_ms_per_handshake']:.2f} ms"),
        ("RSS per idle socket", lambda r: f"{r['idle_kib_per_socket']:.1f} KiB"),
        ("RSS per streaming socket (peak)", lambda r: f"{r['streaming_kib_per_socket']:.1f} KiB"),
        ("peak concurrent streams", lambda r: f"{r['peak_concurrent_streams']}"),
        ("complete / dropped / stalled", lambda r: f"{r['complete']} / {r['dropped']} / {r['stalled']}"),
        ("complete with wrong content", lambda r: f"{r['wrong_content']}"),
        ("first content p50 / max", lambda r: f"{r['first_content_p50_ms'] or 0:.0f} / "
                                              f"{r['first_content_max_ms'] or 0:.0f} ms"),
        ("server CPU per turn", lambda r: f"{r['server_cpu_ms_per_turn']:.1f} ms"),
        ("all turns, wall", lambda r: f"{r['turns_wall_seconds']:.1f} s"),
        ("server RSS before / peak", lambda r: f"{r['rss_before_mib']:.0f} / {r['rss_peak_mib']:.0f} MiB"),
    ]
    header = f"| {args.server}, {args.words} words over {args.stream_seconds:.0f} s | " + " | ".join(
        f"N={r['size']}" for r in results
    ) + " |"
    lines = [header, "|---|" + "---|" * len(results)]
    lines += [f"| {name} | " + " | ".join(cell(r) for r in results) + " |" for name, cell in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
