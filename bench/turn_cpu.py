"""CPU per streamed turn and added time to first token, on the hot path (`POST /api/v1/chat/stream`).

Starts the provider emulator (a subprocess, streaming a 50-word answer as fast as it can), a real daphne
(testsupport.live.LiveServer: its own SQLite file, DEBUG off, auth, quota, persistence, ledger, metrics and logs
all on) pointed at it, and one load client on loopback. Each turn starts a new chat, as the issue's figures do.

Phase 1 (one stream): N turns through the gateway interleaved with N identical requests sent straight to the
emulator; the added time to first token is gateway TTFT minus direct TTFT (p50 of each, and p50 of the pairwise
differences). The server's CPU (utime+stime from /proc/PID/stat) over the phase, divided by the gateway turns, is
the CPU per turn (direct requests cost the server nothing; background work a turn starts, such as naming the
chat, is included because it is waited for before the CPU is read).

Phase 2 (concurrency C): M turns by C concurrent clients: turns/s, CPU per turn, first-token p50/p95.

    .venv/bin/python bench/turn_cpu.py                       # N=100 at 1 stream, M=300 at 20 streams
    .venv/bin/python bench/turn_cpu.py --turns 200 --concurrency 50 --total 500
    .venv/bin/python bench/turn_cpu.py --py-spy /tmp/turn.txt   # py-spy record (raw) over phase 2 (run as root)
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from testsupport import live  # noqa: E402
from testsupport.live import LiveServer  # noqa: E402

MODEL = "gpt-3.5-turbo"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat: whether a run was starved by other load."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14 and 15)


def start_emulator(words: int) -> tuple[subprocess.Popen, str]:
    reply = " ".join(f"w{i}" for i in range(words))
    process = subprocess.Popen(
        [sys.executable, "-m", "testsupport.emulator", "--port", "0", "--reply", reply, "--tokens-per-second", "0"],
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = process.stdout.readline()
    return process, line.rsplit(" ", 1)[1].strip()


async def gateway_turn(client: httpx.AsyncClient, url: str, key: str, prompt: str) -> tuple[float, float]:
    """(time to the first content event, time to [DONE]) of one new-chat streamed turn."""
    started = time.perf_counter()
    first = None
    body = {"prompt": prompt, "model": MODEL}
    async with client.stream(
        "POST", f"{url}/api/v1/chat/stream", json=body, headers={"Authorization": f"Bearer {key}"}
    ) as response:
        if response.status_code != 200:
            raise RuntimeError(f"gateway answered {response.status_code}: {(await response.aread())[:300]}")
        async for chunk in response.aiter_raw():
            if first is None and b'"type": "content"' in chunk:
                first = time.perf_counter() - started
            if b'"type": "error"' in chunk:
                raise RuntimeError(f"the turn failed: {chunk[:300]}")
    if first is None:
        raise RuntimeError("the turn streamed no content")
    return first, time.perf_counter() - started


async def direct_turn(client: httpx.AsyncClient, url: str, prompt: str) -> tuple[float, float]:
    started = time.perf_counter()
    first = None
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with client.stream(
        "POST", f"{url}/v1/chat/completions", json=body, headers={"Authorization": "Bearer sk-emulator-openai"}
    ) as response:
        async for chunk in response.aiter_raw():
            if first is None and b'"content": "w' in chunk:
                first = time.perf_counter() - started
    return first, time.perf_counter() - started


async def sql_statements(client: httpx.AsyncClient, url: str) -> float:
    """SQL statements the server has run so far (django-prometheus's counter on /metrics)."""
    response = await client.get(f"{url}/metrics", auth=("bench", "bench-metrics-password"))
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in response.text.splitlines()
        if line.startswith("django_db_execute_total{")
    )


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


async def settle(pid: int, seconds: float = 0.5, rounds: int = 40) -> None:
    """Wait until the server is idle (background naming tasks done): CPU unchanged over `seconds`."""
    for _ in range(rounds):
        before = cpu_seconds(pid)
        await asyncio.sleep(seconds)
        if cpu_seconds(pid) - before < 0.01:
            return


def start_server(tree: Path, env: dict) -> tuple[LiveServer, str]:
    """A LiveServer running the code of `tree` (a checkout of this repository), and an API key on it."""
    live.BASE_DIR = tree  # LiveServer runs manage.py and daphne from this directory
    server = LiveServer(Path(tempfile.mkdtemp(prefix="qnx-turn-cpu-")), extra_env=env).start()
    return server, server.create_user_with_key("bench@example.com", "a long bench password")


async def run(args) -> dict:
    emulator, emulator_url = start_emulator(args.words)
    env = {
        "OPENAI_API_KEY": "sk-emulator-openai",
        "OPENAI_BASE_URL": f"{emulator_url}/v1",
        "LOCAL_MODEL_PRELOAD": "false",
        "FREE_CHAT_LIMIT": "10000000",
        "CHAT_NAMING": "true" if args.naming else "false",
        "METRICS_USERNAME": "bench",
        "METRICS_PASSWORD": "bench-metrics-password",
    }
    trees = [Path(tree).resolve() for tree in args.tree] or [live.BASE_DIR]
    servers = []
    result: dict = {"words": args.words, "naming": args.naming, "trees": {}}
    try:
        for tree in trees:
            servers.append((str(tree), *start_server(tree, env)))
        limits = httpx.Limits(max_connections=args.concurrency + 8, max_keepalive_connections=args.concurrency + 8)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            for i in range(args.warmup):
                await direct_turn(client, emulator_url, f"warm-up {i}")
                for _, server, key in servers:
                    await gateway_turn(client, server.url, key, f"warm-up {i}")
            for _, server, _ in servers:
                await settle(server.process.pid)

            # Phase 1: one stream, every server and the emulator straight, interleaved turn by turn.
            direct = []
            gateway = {name: [] for name, _, _ in servers}
            totals = {name: [] for name, _, _ in servers}
            before = {}
            for name, server, _ in servers:
                before[name] = (await sql_statements(client, server.url), cpu_seconds(server.process.pid))
            for i in range(args.turns):
                direct.append((await direct_turn(client, emulator_url, f"question {i}"))[0])
                order = servers if i % 2 == 0 else servers[::-1]
                for name, server, key in order:
                    first, total = await gateway_turn(client, server.url, key, f"question {i}")
                    gateway[name].append(first)
                    totals[name].append(total)
            for _, server, _ in servers:
                await settle(server.process.pid)
            for name, server, _ in servers:
                statements = await sql_statements(client, server.url) - before[name][0]
                cpu = cpu_seconds(server.process.pid) - before[name][1]
                added = [g - d for g, d in zip(gateway[name], direct, strict=True)]
                result["trees"][name] = {
                    "one_stream": {
                        "turns": args.turns,
                        "cpu_ms_per_turn": round(cpu * 1000 / args.turns, 2),
                        "gateway_ttft_p50_ms": round(statistics.median(gateway[name]) * 1000, 2),
                        "direct_ttft_p50_ms": round(statistics.median(direct) * 1000, 2),
                        "added_ttft_p50_ms": round(statistics.median(added) * 1000, 2),
                        "added_ttft_p95_ms": round(pct(added, 0.95) * 1000, 2),
                        "turn_total_p50_ms": round(statistics.median(totals[name]) * 1000, 2),
                        "sql_statements_per_turn": round(statements / args.turns, 1),
                    }
                }
            print(json.dumps(result), file=sys.stderr, flush=True)

            # Phase 2: C concurrent streams, one server after the other.
            for name, server, key in servers:
                if not args.total:
                    break
                pid = server.process.pid
                profiler = None
                if args.py_spy:
                    py_spy = str(Path(sys.executable).parent / "py-spy")
                    out = f"{args.py_spy}.{len(result['trees'][name])}-{Path(name).name}.txt"
                    profiler = subprocess.Popen(
                        [py_spy, "record", "-p", str(pid), "-f", "raw", "-r", "200", "-o", out, "--nonblocking"],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                    await asyncio.sleep(1)
                firsts: list[float] = []
                counter = iter(range(args.total))

                async def worker(server=server, key=key, counter=counter, firsts=firsts):
                    for i in counter:  # bounded: the shared iterator hands out `total` turns in all
                        first, _ = await gateway_turn(client, server.url, key, f"load {i}")
                        firsts.append(first)

                cpu_before, machine_before = cpu_seconds(pid), machine_busy()
                started = time.perf_counter()
                await asyncio.gather(*(worker() for _ in range(args.concurrency)))
                wall = time.perf_counter() - started
                machine = machine_busy()
                await settle(pid)
                cpu = cpu_seconds(pid) - cpu_before
                result["trees"][name]["concurrent"] = {
                    "concurrency": args.concurrency,
                    "turns": args.total,
                    "turns_per_s": round(args.total / wall, 1),
                    "cpu_ms_per_turn": round(cpu * 1000 / args.total, 2),
                    "ttft_p50_ms": round(statistics.median(firsts) * 1000, 1),
                    "ttft_p95_ms": round(pct(firsts, 0.95) * 1000, 1),
                    "server_cores_busy": round(cpu / wall, 2),
                    "machine_cores_busy": round(
                        (machine[0] - machine_before[0]) / (machine[1] - machine_before[1]) * CORES, 2
                    ),
                }
                if profiler is not None:
                    profiler.send_signal(2)
                    profiler.wait(timeout=60)
            for name, server, _ in servers:
                result["trees"][name]["server_rss_mib"] = round((server.rss_bytes() or 0) / 2**20, 1)
    finally:
        for _, server, _ in servers:
            server.stop()
        emulator.terminate()
        emulator.wait(timeout=10)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=100, help="interleaved one-stream turns (phase 1)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=20, help="concurrent clients in phase 2")
    parser.add_argument("--total", type=int, default=300, help="turns in phase 2")
    parser.add_argument("--words", type=int, default=50, help="streamed chunks per answer")
    parser.add_argument("--naming", action=argparse.BooleanOptionalAction, default=True, help="CHAT_NAMING")
    parser.add_argument("--py-spy", help="py-spy raw profiles of each server over phase 2: PREFIX.N-TREE.txt")
    parser.add_argument(
        "--tree",
        action="append",
        default=[],
        help="a checkout of this repository to run the server from (repeat to compare trees in one run)",
    )
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
