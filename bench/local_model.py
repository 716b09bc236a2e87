"""Benchmark the local CPU model on this machine, through QueryNox's own code paths.

Two parts:

1. The provider (chat.providers.local.LocalProvider, exactly as the pipeline uses it): model load time, first-token
   latency cold (the first turn after loading) and warm, decode speed of a ~200-token answer, resident memory.
   Each run is a fresh process, so "load" and "cold" really are cold (apart from the OS file cache).
2. End to end: a real daphne server (testsupport.live.LiveServer) over loopback; the time from POSTing a turn to
   /api/v1/chat/stream until the first `content` event arrives, and until `complete`.

Usage (from the repository root):
    .venv/bin/python bench/local_model.py                 # N=5 runs of each, medians, Markdown table
    .venv/bin/python bench/local_model.py --runs 3 --threads 1
    .venv/bin/python bench/local_model.py --skip-server   # the provider only

Not part of the test suite. Run it on an otherwise idle machine: llama.cpp's speed collapses when other processes
compete for the cores its threads spin on.
"""

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

SHORT_PROMPT = [{"role": "user", "content": "What is the capital of France?"}]
# Warm turns ask something new each time, so llama.cpp's prompt cache cannot skip the whole prompt.
WARM_QUESTIONS = [
    "Name a large animal that lives in the sea.",
    "Which planet is closest to the Sun?",
    "What colour is a ripe banana?",
    "How many legs does a spider have?",
    "What is the capital of Japan?",
]
LONG_PROMPT = [{"role": "user", "content": "Write a long story about a dragon who guards a mountain library."}]
LONG_TOKENS = 200
WARM_RUNS = 3


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# --- one provider run (in a child process) -------------------------------------------------------------------


async def _timed_stream(provider, messages, max_tokens):
    """(seconds to the first Delta, seconds to the end, deltas, Usage) for one stream through the provider."""
    from chat.providers.base import Delta, Usage

    started = time.perf_counter()
    first = None
    last = None
    deltas = 0
    usage = None
    async for item in provider.stream("SmolLM2-135M-Instruct", messages, max_tokens=max_tokens):
        if isinstance(item, Delta):
            last = time.perf_counter()
            if first is None:
                first = last
            deltas += 1
        elif isinstance(item, Usage):
            usage = item
    ended = time.perf_counter()
    return (first - started) if first else None, ended - started, last, first, deltas, usage


def provider_run() -> dict:
    """Runs in a fresh process: load, one cold turn, warm turns, one long answer. Prints one JSON line."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "querynox.settings")
    import django

    django.setup()
    from chat.providers.local import LocalProvider

    result = {"rss_before_load_mib": rss_mib()}
    provider = LocalProvider()
    started = time.perf_counter()
    provider.load()
    result["load_s"] = time.perf_counter() - started
    result["rss_after_load_mib"] = rss_mib()

    async def turns():
        cold, *_ = await _timed_stream(provider, SHORT_PROMPT, 32)
        warm = []
        for question in WARM_QUESTIONS[:WARM_RUNS]:
            first, *_ = await _timed_stream(provider, [{"role": "user", "content": question}], 32)
            warm.append(first)
        first, total, last_at, first_at, deltas, usage = await _timed_stream(provider, LONG_PROMPT, LONG_TOKENS)
        return cold, warm, first, total, last_at, first_at, deltas, usage

    cold, warm, first, total, last_at, first_at, deltas, usage = asyncio.run(turns())
    tokens = usage.output_tokens if usage and usage.output_tokens else deltas
    result.update(
        {
            "cold_first_token_s": cold,
            "warm_first_token_s": statistics.median(warm),
            "long_tokens": tokens,
            "long_total_s": total,
            # Decode speed: tokens after the first, over the time after the first (prompt processing excluded).
            "decode_tokens_per_s": (tokens - 1) / (last_at - first_at) if tokens > 1 and last_at > first_at else None,
            "overall_tokens_per_s": tokens / total,
            "rss_after_turns_mib": rss_mib(),
            "peak_rss_mib": peak_rss_mib(),
        }
    )
    return result


# --- end to end through daphne -------------------------------------------------------------------------------


def server_runs(runs: int, threads: int) -> dict:
    import httpx

    from testsupport.http import bearer, iter_sse_events
    from testsupport.live import LiveServer

    with tempfile.TemporaryDirectory(prefix="querynox-bench-") as work_dir:
        server = LiveServer(Path(work_dir), extra_env={"LOCAL_MODEL_THREADS": str(threads)})
        started = time.perf_counter()
        server.start()
        try:
            start_s = time.perf_counter() - started
            key = server.create_user_with_key("bench@example.com", "a long benchmark password")
            first_token, complete = [], []
            for index in range(runs):
                question = WARM_QUESTIONS[index % len(WARM_QUESTIONS)]
                posted = time.perf_counter()
                first = None
                with httpx.stream(
                    "POST",
                    server.url + "/api/v1/chat/stream",
                    json={"prompt": question},
                    headers=bearer(key),
                    timeout=httpx.Timeout(300, connect=10),
                ) as response:
                    response.raise_for_status()
                    for _read, _at, event in iter_sse_events(response):
                        if event["type"] == "content" and first is None:
                            first = time.perf_counter() - posted
                        if event["type"] in ("complete", "error"):
                            complete.append(time.perf_counter() - posted)
                first_token.append(first)
            return {
                "server_start_s": start_s,
                "first_token_s": first_token,
                "complete_s": complete,
                "server_rss_mib": (server.rss_bytes() or 0) / 2**20,
            }
        finally:
            server.stop()


# --- the report ----------------------------------------------------------------------------------------------


def median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, unit: str, digits: int = 0) -> str:
    if value is None:
        return "n/a"
    if unit == "ms":
        return f"{value * 1000:.{digits}f} ms"
    return f"{value:.{digits}f} {unit}".strip()


def spread(values, unit: str, digits: int = 0) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    return f"{fmt(min(values), unit, digits)} – {fmt(max(values), unit, digits)}"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {platform.system()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="runs of each measurement (default 5)")
    parser.add_argument("--threads", type=int, default=None, help="LOCAL_MODEL_THREADS (default: the setting, 2)")
    parser.add_argument("--skip-server", action="store_true", help="measure the provider only")
    parser.add_argument(
        "--busy-core",
        action="store_true",
        help="keep one core busy with a spinning process meanwhile (how the model fares next to other work)",
    )
    parser.add_argument("--json", action="store_true", help="print the raw numbers as JSON too")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(provider_run()))
        return

    env = dict(os.environ)
    if args.threads:
        env["LOCAL_MODEL_THREADS"] = str(args.threads)
    threads = int(env.get("LOCAL_MODEL_THREADS", "2"))

    hog = None
    if args.busy_core:
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        runs, server = measure(args, env, threads)
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    report(args, threads, runs, server)


def measure(args, env, threads):
    runs = []
    for index in range(args.runs):
        out = subprocess.run(
            [sys.executable, __file__, "--child"], cwd=BASE_DIR, env=env, capture_output=True, text=True, check=True
        )
        run = json.loads(out.stdout.strip().splitlines()[-1])
        runs.append(run)
        print(f"provider run {index + 1}/{args.runs}: {json.dumps(run)}", file=sys.stderr)

    server = None if args.skip_server else server_runs(args.runs, threads)
    if server:
        print(f"server: {json.dumps(server)}", file=sys.stderr)
    return runs, server


def report(args, threads, runs, server):
    def col(name):
        return [run[name] for run in runs]

    rows = [
        ("Model load (LocalProvider.load)", fmt(median(col("load_s")), "ms"), spread(col("load_s"), "ms")),
        (
            "First token, cold (first turn after load)",
            fmt(median(col("cold_first_token_s")), "ms"),
            spread(col("cold_first_token_s"), "ms"),
        ),
        (
            f"First token, warm (median of {WARM_RUNS} turns per run)",
            fmt(median(col("warm_first_token_s")), "ms"),
            spread(col("warm_first_token_s"), "ms"),
        ),
        (
            f"Decode speed, {LONG_TOKENS}-token answer",
            fmt(median(col("decode_tokens_per_s")), "tokens/s", 1),
            spread(col("decode_tokens_per_s"), "tokens/s", 1),
        ),
        (
            f"Whole {LONG_TOKENS}-token answer (incl. prompt)",
            fmt(median(col("long_total_s")), "s", 2),
            spread(col("long_total_s"), "s", 2),
        ),
        ("RSS before load (Django set up)", fmt(median(col("rss_before_load_mib")), "MiB"), ""),
        ("RSS after load", fmt(median(col("rss_after_load_mib")), "MiB"), spread(col("rss_after_load_mib"), "MiB")),
        (
            "RSS after the turns",
            fmt(median(col("rss_after_turns_mib")), "MiB"),
            spread(col("rss_after_turns_mib"), "MiB"),
        ),
        (
            "Peak RSS of the process (VmHWM)",
            fmt(median(col("peak_rss_mib")), "MiB"),
            spread(col("peak_rss_mib"), "MiB"),
        ),
    ]
    if server:
        rows += [
            ("daphne start (migrate + collectstatic + health)", fmt(server["server_start_s"], "s", 1), ""),
            (
                "E2E: POST → first SSE content event (first request)",
                fmt(server["first_token_s"][0], "ms"),
                "",
            ),
            (
                "E2E: POST → first SSE content event",
                fmt(median(server["first_token_s"]), "ms"),
                spread(server["first_token_s"], "ms"),
            ),
            (
                "E2E: POST → complete (answer ≤ 512 tokens)",
                fmt(median(server["complete_s"]), "ms"),
                spread(server["complete_s"], "ms"),
            ),
            ("daphne RSS after the turns", fmt(server["server_rss_mib"], "MiB"), ""),
        ]
    busy = "; one core kept busy by another process" if args.busy_core else ""
    print(f"\nMachine: {machine()}; LOCAL_MODEL_THREADS={threads}; N={args.runs} runs{busy}\n")
    print("| measurement | median | min – max |")
    print("|---|---|---|")
    for name, value, rng in rows:
        print(f"| {name} | {value} | {rng} |")
    if args.json:
        print(json.dumps({"provider_runs": runs, "server": server}, indent=2))


if __name__ == "__main__":
    main()
