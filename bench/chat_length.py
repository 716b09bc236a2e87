"""Cost as chats grow, before and after, in one run: first-token time by turn number in one chat, and chat list /
chat history reads per second.

"Before" is the last commit (exported with `git archive HEAD`, nothing in the working tree changes); "after" is the
working tree. Both run side by side as deployed (testsupport.live.LiveServer: daphne, its own SQLite file, DEBUG
off), against one provider emulator (bench/gateway.py's helpers: model gpt-3.5-turbo, a 50-word answer streamed as
fast as it can), and every measurement alternates between them, so the machine's noise falls on both alike.

- turns: chats seeded straight into each server's database with 0, 9, 49 and 199 answered turns of realistic size
  (a 300-character prompt, a 900-character answer: ~410 estimated tokens a turn, about 35 fit gpt-3.5-turbo's
  window), the older ones covered by a stored summary as a long chat has (summary_until 30 turns back); then
  `--turns` new turns in each (POST /api/v1/chat/{id}/stream; turn 1 is a new chat), the time to the first
  `content` event, median. The "short" rows do the same with 40-character turns that all fit (no summary).
- reads: GET /api/v1/chat/user (a user with 200 chats), GET /api/v1/chat/{id} (a chat of 200 turns: the newest
  page where the tree pages it) and the same with ?limit=200 (all of it, in both trees), 10 keep-alive connections
  for `--seconds` each, requests/s and the server's CPU per request (utime+stime from /proc).

    .venv/bin/python bench/chat_length.py                 # about 2 minutes
    .venv/bin/python bench/chat_length.py --turns 9 --seconds 8
"""

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gateway import (  # noqa: E402 (gateway sets up the path and Django)
    _SETUP_USERS,
    BASE_DIR,
    MODEL,
    HttpConnection,
    Target,
    cpu_seconds,
    emulator_settings,
    machine,
    open_all,
    settle_cpu,
    start_emulator,
    versions,
)

from testsupport.live import LiveServer  # noqa: E402

MARKS = (1, 10, 50, 200)
SUMMARY_BACK = 30  # turns after the stored summary: what a long chat's history holds once summarised

_SEED = """
import datetime as dt, json, os
from django.db import transaction
from django.utils import timezone
from accounts.models import User
from chat.models import Chat, ChatQuery
try:  # the branch's end stored on the chat, as the product's turns leave it (trees from before it have none)
    from chat.branches import refresh_shown_leaf
except ImportError:
    refresh_shown_leaf = None
user = User.objects.get(email=os.environ["QNX_BENCH_EMAIL"])
model, marks = os.environ["QNX_BENCH_MODEL"], json.loads(os.environ["QNX_BENCH_MARKS"])
back = int(os.environ["QNX_BENCH_BACK"])
out = {"long": {}, "short": {}}
def chat_of(title, turns, prompt, answer, summarise):
    chat = Chat.objects.create(owner=user, title=title, model=model)
    previous = None
    for n in range(turns):
        previous = ChatQuery.objects.create(chat=chat, parent=previous, prompt=prompt(n), model=model,
                                            response=answer(n), status="complete")
        if summarise and n == turns - 1 - back:
            Chat.objects.filter(pk=chat.pk).update(summary="They talked about the plan at length. " * 8,
                                                   summary_until=previous.created_at)
    if refresh_shown_leaf is not None:
        refresh_shown_leaf(chat.pk)
    return str(chat.pk)
with transaction.atomic():
    for mark in marks:
        if mark > 1:
            out["long"][mark] = chat_of(f"long {mark}", mark - 1, lambda n: f"Question {n}: " + "p" * 288,
                                        lambda n: f"Answer {n}: " + "a" * 888, True)
            out["short"][mark] = chat_of(f"short {mark}", mark - 1, lambda n: f"Question {n}?",
                                         lambda n: f"Answer {n} is short.", False)
    out["history"] = chat_of("history", 200, lambda n: f"Question {n}: " + "p" * 88,
                             lambda n: f"Answer {n}: " + "a" * 388, False)
    Chat.objects.bulk_create(Chat(owner=user, title=f"Listed {n}", model=model) for n in range(200 - len(marks) * 2))
print("QNX_SEED=" + json.dumps(out))
"""


class TreeServer(LiveServer):
    """LiveServer for another checkout of the project (`root`): its manage.py, its code, its own database."""

    def __init__(self, root: Path, work_dir: Path, extra_env: dict):
        super().__init__(work_dir, extra_env={**extra_env, "PYTHONPATH": str(root)})
        self.root = root

    def manage(self, *args, env=None, timeout: float = 300) -> str:
        result = subprocess.run(
            [sys.executable, str(self.root / "manage.py"), *args],
            cwd=self.root,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {args[0]} failed in {self.root}:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def _spawn(self) -> None:
        self._log_file = open(self.log_path, "ab")  # closed in stop()
        command = [sys.executable, "-m", "querynox.server", "-b", "127.0.0.1", "-p", str(self.port)]
        self.process = subprocess.Popen(
            [*command, "--application-close-timeout", "5", "querynox.asgi:application"],
            cwd=self.root,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )


def export_head(into: Path) -> Path:
    """The last commit's files (no .git, nothing of the working tree), for the "before" server."""
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=BASE_DIR, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def start(root: Path, work: Path, emulator_url: str) -> tuple[TreeServer, str, dict]:
    env = {name: str(value) for name, value in emulator_settings(emulator_url).items()}
    env.update(
        DEFAULT_MODEL=MODEL,
        FALLBACK_MODELS="",
        UTILITY_MODELS=MODEL,
        CHAT_NAMING="false",
        LOCAL_MODEL_PRELOAD="false",
        OPENAI_COMPATIBLE_BASE_URL="",
    )
    server = TreeServer(root, work, env)
    server.start(timeout=120)
    out = server.manage("shell", "-c", _SETUP_USERS, env={"QNX_BENCH_EMAILS": "bench@example.com"})
    key = next(line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("QNX_KEY="))
    seed_env = {
        "QNX_BENCH_EMAIL": "bench@example.com",
        "QNX_BENCH_MODEL": MODEL,
        "QNX_BENCH_MARKS": json.dumps(MARKS),
        "QNX_BENCH_BACK": str(SUMMARY_BACK),
    }
    out = server.manage("shell", "-c", _SEED, env=seed_env, timeout=600)
    seeded = json.loads(next(line for line in out.splitlines() if line.startswith("QNX_SEED="))[len("QNX_SEED=") :])
    return server, key, seeded


async def first_tokens(servers: dict, turns: int) -> dict:
    """{(label, kind, mark): [seconds to the first token, ...]}, turns alternating between the servers."""
    results: dict = {}
    connections = {label: HttpConnection(server.url) for label, (server, _, _) in servers.items()}
    await open_all(list(connections.values()))
    for kind in ("long", "short"):
        for mark in MARKS:
            for index in range(turns):
                for label, (server, key, seeded) in servers.items():
                    chat_id = seeded[kind].get(str(mark)) if mark > 1 else None
                    target = Target(label, server.url, key, "sse", "/api/v1/chat/stream", server.process.pid)
                    path = f"/api/v1/chat/{chat_id}/stream" if chat_id else None
                    cpu_before = cpu_seconds(server.process.pid)
                    result = await target.turn(connections[label], f"Next question {index}: say 50 words.", path)
                    cpu = cpu_seconds(server.process.pid) - cpu_before
                    if not result.ok:
                        print(f"  [{label}] {kind} turn {mark} failed: {result.error[:300]}", flush=True)
                        continue
                    if index:  # the first turn of each chat warms it (and any cache); the rest are measured
                        results.setdefault((label, kind, mark), []).append(result.ttft)
                        results.setdefault((label, kind, mark, "cpu"), []).append(cpu)
    for connection in connections.values():
        await connection.close()
    return results


async def reads(server: TreeServer, key: str, path: str, seconds: float) -> dict:
    connections = [HttpConnection(server.url) for _ in range(10)]
    await open_all(connections)
    headers = {"Authorization": f"Bearer {key}"}
    done, failed = [0], [0]
    deadline = time.monotonic() + seconds

    async def worker(connection):
        for _ in range(1_000_000):
            if time.monotonic() > deadline:
                return
            result = await connection.request("GET", path, headers, None, "read")
            if result.ok:
                done[0] += 1
            else:
                failed[0] += 1

    pid = server.process.pid
    await asyncio.to_thread(settle_cpu, pid, 2.0)
    cpu_before, started = cpu_seconds(pid), time.perf_counter()
    await asyncio.gather(*(worker(c) for c in connections))
    wall, cpu = time.perf_counter() - started, cpu_seconds(pid) - cpu_before
    for connection in connections:
        await connection.close()
    return {"per_second": done[0] / wall, "cpu_ms": 1000 * cpu / max(1, done[0] + failed[0]), "failed": failed[0]}


def render(ttfts: dict, read_rows: dict, args) -> str:
    lines = [
        f"{time.strftime('%Y-%m-%d %H:%M')}, {machine()}; shared with other engineers' work (noisy: compare the "
        "ratios within a column pair).",
        f"Command: `.venv/bin/python bench/chat_length.py --turns {args.turns} --seconds {args.seconds}`; "
        f"versions: {json.dumps(versions())}.",
        "",
        "| first token (POST → first `content`), median; server CPU per turn, median | before | after |",
        "|---|---|---|",
    ]
    for kind, what in (("long", "~410-token turns, summary 30 turns back"), ("short", "short turns, all fit")):
        for mark in MARKS:
            cells = []
            for label in ("before", "after"):
                values, cpu = ttfts.get((label, kind, mark), []), ttfts.get((label, kind, mark, "cpu"), [])
                cells.append(
                    f"{1000 * statistics.median(values):.1f} ms; CPU {1000 * statistics.median(cpu):.0f} ms"
                    if values
                    else "–"
                )
            lines.append(f"| turn {mark} ({what}) | {cells[0]} | {cells[1]} |")
        for label in ("before", "after"):
            first, last = ttfts.get((label, kind, 1)), ttfts.get((label, kind, 200))
            cpu_first, cpu_last = ttfts.get((label, kind, 1, "cpu")), ttfts.get((label, kind, 200, "cpu"))
            if first and last:
                growth = 1000 * (statistics.median(last) - statistics.median(first))
                cpu_growth = 1000 * (statistics.median(cpu_last) - statistics.median(cpu_first))
                lines.append(
                    f"| turn 200 − turn 1 ({kind}, {label}) | first token {growth:+.1f} ms, "
                    f"CPU {cpu_growth:+.0f} ms | |"
                )
    lines += ["", "| reads, 10 connections | before | after |", "|---|---|---|"]
    for what in read_rows["before"]:
        b, a = read_rows["before"][what], read_rows["after"][what]
        lines.append(
            f"| {what} | {b['per_second']:.0f}/s, {b['cpu_ms']:.2f} ms CPU/request | "
            f"{a['per_second']:.0f}/s, {a['cpu_ms']:.2f} ms CPU/request |"
        )
    return "\n".join(lines)


async def main(args) -> None:
    with tempfile.TemporaryDirectory(prefix="qnx-chat-length-") as tmp:
        work = Path(tmp)
        emulator, emulator_url = start_emulator(work)
        servers = {}
        try:
            before_root = export_head(work / "before-tree")
            for label, root in (("before", before_root), ("after", BASE_DIR)):
                print(f"starting {label} ({root}) …", flush=True)
                servers[label] = start(root, work / label, emulator_url)
            print("turns …", flush=True)
            ttfts = await first_tokens(servers, args.turns + 1)
            read_rows = {label: {} for label in servers}
            for what, path_of in (
                ("chat list `GET /api/v1/chat/user` (200 chats)", lambda seeded: "/api/v1/chat/user"),
                ("chat history `GET /api/v1/chat/{id}` (200 turns; after: its newest page)",
                 lambda s: f"/api/v1/chat/{s['history']}"),
                ("chat history, all 200 turns in one answer (`?limit=200`)",
                 lambda s: f"/api/v1/chat/{s['history']}?limit=200"),
            ):
                for label, (server, key, seeded) in servers.items():
                    read_rows[label][what] = await reads(server, key, path_of(seeded), args.seconds)
                    print(f"  [{label}] {what}: {read_rows[label][what]}", flush=True)
            print(render(ttfts, read_rows, args))
        finally:
            for server, _, _ in servers.values():
                server.stop()
            emulator.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=5, help="measured turns per chat and server (one more warms)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds of load per read endpoint and server")
    asyncio.run(main(parser.parse_args()))
