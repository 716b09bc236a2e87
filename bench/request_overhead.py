"""The fixed cost of an HTTP request: server CPU per request for the chat list, a chat's history, an authenticated
`GET /api/v1/user` and the unauthenticated health check, for several trees and ASGI servers, interleaved in one run.

Each configuration is a real server (testsupport.live.LiveServer: its own SQLite file, DEBUG off, auth, logs and
metrics all on) started from a checkout of this repository (--tree, repeatable: /tmp/base against . compares before
and after) under daphne (querynox.server, as deployed) or uvicorn (the Dockerfile's command). Every server gets the
same user, API key, 20 chats and one chat of 10 turns. Then, round after round, every endpoint is read by
--concurrency keep-alive clients, --requests times, on every configuration in turn (the order flips each round):
the CPU of the server's process (utime+stime from /proc, all threads) over a block divided by its requests is the
CPU per request; the figure reported is the median block. Load on the rest of the machine hardly moves CPU time,
unlike requests/s.

    .venv/bin/python bench/request_overhead.py --tree /tmp/base --tree .              # before / after, daphne
    .venv/bin/python bench/request_overhead.py --tree . --server daphne --server uvicorn
    .venv/bin/python bench/request_overhead.py --tree . --py-spy /tmp/overhead        # + a py-spy profile of each
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))
sys.path.insert(0, str(BENCH_DIR))

from gateway import _SEED_CHATS, _SETUP_USERS, MODEL, REPLY  # noqa: E402

from testsupport import live  # noqa: E402
from testsupport.live import LiveServer  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
HOST = "127.0.0.1"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def settle(pid: int, quiet_seconds: float = 0.3, rounds: int = 30) -> None:
    for _ in range(rounds):  # bounded
        before = cpu_seconds(pid)
        time.sleep(quiet_seconds)
        if cpu_seconds(pid) - before < 0.01:
            return


def uvicorn_command(port: int) -> list[str]:
    # What the Dockerfile runs (querynox.uvicorn_server: uvloop, httptools, no access log, body and message limits).
    return [sys.executable, "-m", "querynox.uvicorn_server", "--host", HOST, "--port", str(port)]


def uvicorn_plain_command(port: int) -> list[str]:
    # For trees without querynox/uvicorn_server.py: the options bench/gateway.py runs uvicorn with.
    return [
        sys.executable, "-m", "uvicorn", "--host", HOST, "--port", str(port), "--loop", "uvloop", "--http",
        "httptools", "--ws", "websockets", "--ws-max-size", str(4 * 1024 * 1024), "--lifespan", "off",
        "--no-access-log", "querynox.asgi:application",
    ]  # fmt: skip


class BenchServer(LiveServer):
    def __init__(self, work_dir: Path, extra_env: dict, kind: str, tree: Path):
        super().__init__(work_dir, extra_env=extra_env)
        self.kind = kind
        self.tree = tree

    def _spawn(self) -> None:
        if self.kind == "daphne":
            super()._spawn()
            return
        has_module = (self.tree / "querynox" / "uvicorn_server.py").exists()
        command = (uvicorn_command if has_module else uvicorn_plain_command)(self.port)
        self._log_file = open(self.log_path, "ab")  # closed in stop()
        self.process = subprocess.Popen(
            command, cwd=self.tree, env=self.env, stdin=subprocess.DEVNULL, stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )  # fmt: skip


def start(tree: Path, kind: str, env: dict) -> tuple[BenchServer, dict[str, str]]:
    live.BASE_DIR = tree  # LiveServer runs manage.py (and daphne) from this directory
    server = BenchServer(Path(tempfile.mkdtemp(prefix="qnx-overhead-")), env, kind, tree).start()
    out = server.manage("shell", "-c", _SETUP_USERS, env={"QNX_BENCH_EMAILS": "reader@example.com"})
    key = next(line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("QNX_KEY="))
    seed_env = {"QNX_BENCH_EMAIL": "reader@example.com", "QNX_BENCH_CHATS": "20", "QNX_BENCH_TURNS": "10",
                "QNX_BENCH_REPLY": REPLY, "QNX_BENCH_MODEL": MODEL}  # fmt: skip
    out = server.manage("shell", "-c", _SEED_CHATS, env=seed_env, timeout=300)
    chat_id = next(line.split("=", 1)[1] for line in out.splitlines() if line.startswith("QNX_CHAT="))
    paths = {
        "list (20 chats)": "/api/v1/chat/user",
        "history (10 turns)": f"/api/v1/chat/{chat_id}",
        "GET /api/v1/user (auth)": "/api/v1/user",
        "health (no auth)": "/api/v1/health",
    }
    return server, {"key": key, **paths}


async def block(client: httpx.AsyncClient, server: BenchServer, path: str, key: str, requests: int,
                concurrency: int) -> tuple[float, float, int]:  # fmt: skip
    """(CPU seconds per request, requests/s, failures) of `requests` GETs by `concurrency` clients."""
    headers = {"Authorization": f"Bearer {key}"}
    counter = iter(range(requests))
    failures = 0

    async def worker():
        nonlocal failures
        for _ in counter:  # bounded: the shared iterator hands out `requests` in all
            response = await client.get(server.url + path, headers=headers)
            if response.status_code != 200:
                failures += 1

    await asyncio.to_thread(settle, server.process.pid)
    cpu_before = cpu_seconds(server.process.pid)
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    return (cpu_seconds(server.process.pid) - cpu_before) / requests, requests / wall, failures


async def run(args) -> dict:
    env = {"LOCAL_MODEL_PRELOAD": "false", "CHAT_NAMING": "false"}
    configs = [(f"{Path(tree).resolve()}:{kind}", Path(tree).resolve(), kind) for tree in args.tree for kind in
               args.server]  # fmt: skip
    servers = {}
    results: dict = {"load_average_start": os.getloadavg(), "configs": {}}
    try:
        for label, tree, kind in configs:
            servers[label] = start(tree, kind, env)
        endpoints = [name for name in next(iter(servers.values()))[1] if name != "key"]
        samples = {label: {name: [] for name in endpoints} for label in servers}
        rates = {label: {name: [] for name in endpoints} for label in servers}
        failed = {label: 0 for label in servers}
        limits = httpx.Limits(max_connections=args.concurrency * 2, max_keepalive_connections=args.concurrency * 2)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            for server, info in servers.values():  # warm-up: imports, caches, the key cache
                for name in endpoints:
                    await block(client, server, info[name], info["key"], 20, 2)
            for round_index in range(args.rounds):
                order = list(servers.items())
                if round_index % 2:
                    order.reverse()
                for name in endpoints:
                    for label, (server, info) in order:
                        cpu, rate, failures = await block(client, server, info[name], info["key"], args.requests,
                                                          args.concurrency)  # fmt: skip
                        samples[label][name].append(cpu)
                        rates[label][name].append(rate)
                        failed[label] += failures
            if args.py_spy:
                Path(args.py_spy).mkdir(parents=True, exist_ok=True)
                py_spy = str(Path(sys.executable).parent / "py-spy")
                for label, (server, info) in servers.items():
                    for name in ("list (20 chats)", "GET /api/v1/user (auth)"):
                        out = Path(args.py_spy) / f"{Path(label.split(':')[0]).name}-{label.split(':')[1]}-" \
                            f"{name.split()[0].replace('/', '')}.txt"  # fmt: skip
                        profiler = subprocess.Popen(
                            [py_spy, "record", "-p", str(server.process.pid), "-f", "raw", "-r", "250", "-o",
                             str(out), "--nonblocking", "--threads"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                        )  # fmt: skip
                        await asyncio.sleep(1.5)
                        await block(client, server, info[name], info["key"], args.requests * 3, args.concurrency)
                        profiler.send_signal(2)
                        profiler.wait(timeout=60)
        for label in servers:
            results["configs"][label] = {
                "failures": failed[label],
                **{
                    name: {
                        "cpu_ms_per_request": round(statistics.median(samples[label][name]) * 1000, 2),
                        "cpu_ms_min": round(min(samples[label][name]) * 1000, 2),
                        "requests_per_s": round(statistics.median(rates[label][name]), 1),
                    }
                    for name in endpoints
                },
            }
        results["load_average_end"] = os.getloadavg()
    finally:
        for server, _ in servers.values():
            server.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", default=[], help="a checkout to run (repeat to compare)")
    parser.add_argument("--server", action="append", default=[], choices=["daphne", "uvicorn"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=200, help="requests per block")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--py-spy", help="a directory for py-spy raw profiles (list and /api/v1/user, each config)")
    args = parser.parse_args()
    args.tree = args.tree or [str(BENCH_DIR.parent)]
    args.server = args.server or ["daphne"]
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
