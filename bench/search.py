"""Benchmark chat search (chat/search.py) over 10,000 chats and 200,000 turns, through our own code.

One user owns every chat (the worst case for one person's search: every match is theirs). The data are generated
straight into the database (bulk_create, then chat.search.bulk_index, the index's own bulk path): each chat has
TURNS/CHATS turns on one branch, a title of a few words, prompts of ~10 and answers of ~60 pseudo-words drawn from
a Zipf distribution (so some words are in nearly every turn, most in a few). Then searches of several kinds:

* rare / mid / common: one whole word from the tail, the middle, the head of the distribution;
* two words: two words of one random turn (the common case of a remembered phrase);
* prefix 2, 3, 4: what as-you-type sends: the first 2, 3 or 4 letters of a word (the last word is a prefix);
* none: a word no chat has;

each timed as the service call (`chat.search.search`: the ranked SQL, reading the page's chats and turns, and the
snippets) and, unless --skip-http, as `GET /api/v1/chat/search?q=` on a real daphne (testsupport.live.LiveServer,
over loopback, one keep-alive connection, API key auth): p50 and p99 of each kind and overall.

Usage (from the repository root):
    .venv/bin/python bench/search.py                                    # SQLite (FTS5), in a temp directory
    .venv/bin/python bench/search.py --database-url postgres://postgres@127.0.0.1:5432/qnx_bench   # empty DB
    .venv/bin/python bench/search.py --chats 1000 --turns 20000 --queries 100 --skip-http --json
    .venv/bin/python bench/search.py --reuse /tmp/qnx-search-bench-…/bench.sqlite3 --compare /tmp/base   # again,
        # on that data, with another tree's chat/search.py timed interleaved with this one's (before / after)
    .venv/bin/python bench/search.py --database-url postgres://…/qnx_bench --reuse --compare /tmp/base

Not part of the test suite.
"""

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

VOCABULARY = 20_000
TITLE_WORDS, PROMPT_WORDS, ANSWER_WORDS = 4, 10, 60
KINDS = ("rare", "mid", "common", "two words", "prefix 2", "prefix 3", "prefix 4", "none")


def pseudo_words(rng: random.Random, count: int) -> list[str]:
    consonants, vowels = "bcdfghjklmnprstvwz", "aeiou"
    words, seen = [], set()
    while len(words) < count:
        word = "".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(rng.randint(1, 4)))
        if rng.random() < 0.3:
            word += rng.choice(consonants)
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


class Zipf:
    def __init__(self, rng: random.Random, words: list[str], exponent: float = 1.07):
        self.rng, self.words = rng, words
        weights = [1 / (rank**exponent) for rank in range(1, len(words) + 1)]
        total = 0.0
        self.cumulative = []
        for weight in weights:
            total += weight
            self.cumulative.append(total)

    def text(self, count: int) -> str:
        return " ".join(self.rng.choices(self.words, cum_weights=self.cumulative, k=count))


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def summary(times_by_kind: dict[str, list[float]]) -> dict:
    every = [t for times in times_by_kind.values() for t in times]
    rows = {kind: times for kind, times in times_by_kind.items() if times}
    rows["all"] = every
    return {
        kind: {"n": len(times), "p50": statistics.median(times), "p99": percentile(times, 0.99), "max": max(times)}
        for kind, times in rows.items()
    }


def generate(args, user) -> dict:
    from django.db import connection, transaction

    from chat import search
    from chat.models import Chat, ChatQuery

    rng = random.Random(7)
    vocabulary = pseudo_words(rng, VOCABULARY)
    zipf = Zipf(rng, vocabulary)
    per_chat = max(1, args.turns // args.chats)
    started = time.perf_counter()
    for first in range(0, args.chats, 500):
        chats, queries = [], []
        for _ in range(first, min(first + 500, args.chats)):
            title = zipf.text(TITLE_WORDS).capitalize()
            chat = Chat(id=uuid.uuid4(), owner=user, title=title, name=title, model="bench")
            chats.append(chat)
            parent = None
            for _turn in range(per_chat):
                query = ChatQuery(
                    id=uuid.uuid4(),
                    chat=chat,
                    parent_id=parent,
                    prompt=zipf.text(PROMPT_WORDS).capitalize() + "?",
                    response=zipf.text(ANSWER_WORDS).capitalize() + ".",
                    model="bench",
                    status=ChatQuery.Status.COMPLETE,
                )
                parent = query.id
                queries.append(query)
        with transaction.atomic():
            Chat.objects.bulk_create(chats, batch_size=500)
            ChatQuery.objects.bulk_create(queries, batch_size=2000)
            search.bulk_index(
                [(user.pk, c.id, c.title, c.name) for c in chats],
                [(user.pk, q.chat_id, q.id, q.prompt, q.response) for q in queries],
            )
        print(f"  {first + len(chats)} chats", file=sys.stderr, end="\r")
    loaded = time.perf_counter() - started
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE chat_searchdocument")
            cursor.execute("VACUUM ANALYZE chat_chat")
            cursor.execute("VACUUM ANALYZE chat_chatquery")
    else:
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    return {"load_s": loaded, "vocabulary": vocabulary}


def make_queries(args, vocabulary: list[str], user) -> list[tuple[str, str]]:
    from chat.models import ChatQuery

    rng = random.Random(11)
    per_kind = max(1, args.queries // len(KINDS))
    head, middle, tail = vocabulary[:20], vocabulary[200:2000], vocabulary[8000:]
    turns = list(ChatQuery.objects.filter(chat__owner=user).values_list("prompt", flat=True)[:5000])
    queries = []
    for _ in range(per_kind):
        queries += [
            ("rare", rng.choice(tail)),
            ("mid", rng.choice(middle)),
            ("common", rng.choice(head)),
            ("two words", " ".join(rng.sample(rng.choice(turns).rstrip("?").lower().split(), 2))),
            ("prefix 2", rng.choice(vocabulary)[:2]),
            ("prefix 3", rng.choice([w for w in middle if len(w) > 3])[:3]),
            ("prefix 4", rng.choice([w for w in middle if len(w) > 4])[:4]),
            ("none", f"zzq{rng.randint(0, 10**6)}x"),
        ]
    rng.shuffle(queries)
    return queries


def load_search_module(tree: Path):
    """Another tree's chat/search.py (the "before" of a change), run against this tree's models and database."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("compared_search", tree / "chat" / "search.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bench_service(user, queries, modules: dict) -> dict:
    """Each search run by every module in `modules` (name -> a chat.search), one after the other, their order
    alternating from one search to the next (so both see the same load), timed as wall and CPU of this process."""
    for module in modules.values():
        for _, q in queries[:20]:
            module.search(user, q)  # warm-up: connection, caches
    times = {name: {kind: [] for kind in KINDS} for name in modules}
    cpu = {name: {kind: [] for kind in KINDS} for name in modules}
    found = {name: 0 for name in modules}
    names = list(modules)
    for number, (kind, q) in enumerate(queries):
        for name in names if number % 2 == 0 else reversed(names):
            wall, process = time.perf_counter(), time.process_time()
            page = modules[name].search(user, q)
            times[name][kind].append((time.perf_counter() - wall) * 1000)
            cpu[name][kind].append((time.process_time() - process) * 1000)
            found[name] += bool(page.results)
    return {
        name: {"wall": summary(times[name]), "cpu": summary(cpu[name]), "found": found[name] / len(queries)}
        for name in modules
    }


def bench_http(args, workdir: Path, user, queries) -> tuple[dict, float]:
    import httpx

    from accounts.models import ApiKey
    from testsupport.live import LiveServer

    _, key = ApiKey.generate(user, "bench")
    server = LiveServer(
        workdir / "server", extra_env={"DATABASE_URL": os.environ["DATABASE_URL"], "LOCAL_MODEL_PRELOAD": "false"}
    )
    started = time.perf_counter()
    server.start(timeout=180)
    start_s = time.perf_counter() - started
    try:
        times = {kind: [] for kind in KINDS}
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
            for _, q in queries[:20]:
                client.get("/api/v1/chat/search", params={"q": q}).raise_for_status()
            for kind, q in queries:
                wall = time.perf_counter()
                response = client.get("/api/v1/chat/search", params={"q": q})
                times[kind].append((time.perf_counter() - wall) * 1000)
                response.raise_for_status()
    finally:
        server.stop()
    return summary(times), start_s


def table(title: str, rows: dict) -> str:
    lines = [f"| {title} | n | p50 | p99 | max |", "|---|---|---|---|---|"]
    for kind, row in rows.items():
        lines.append(f"| {kind} | {row['n']} | {row['p50']:.1f} ms | {row['p99']:.1f} ms | {row['max']:.1f} ms |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chats", type=int, default=10_000)
    parser.add_argument("--turns", type=int, default=200_000)
    parser.add_argument("--queries", type=int, default=400)
    parser.add_argument("--database-url", help="an empty PostgreSQL database (default: SQLite in a temp directory)")
    parser.add_argument("--skip-http", action="store_true", help="only the in-process service call")
    parser.add_argument("--json", action="store_true", help="print the raw numbers as JSON too")
    parser.add_argument(
        "--reuse",
        nargs="?",
        const="",
        help="measure again on the data of an earlier run (no new data): its SQLite file, or, with no value, the "
        "PostgreSQL database of --database-url",
    )
    parser.add_argument(
        "--compare",
        type=Path,
        help="another tree (e.g. /tmp/base, a snapshot before a change): its chat/search.py is timed too, "
        "interleaved with this tree's, on the same data",
    )
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="qnx-search-bench-"))
    os.environ["DATABASE_URL"] = args.database_url or f"sqlite:///{args.reuse or workdir / 'bench.sqlite3'}"
    os.environ["MEDIA_ROOT"] = str(workdir / "media")
    os.environ["LOG_LEVEL"] = "WARNING"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "querynox.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from accounts.models import User
    from chat.models import Chat

    call_command("migrate", verbosity=0)
    reuse = args.reuse is not None
    if Chat.objects.exists() and not reuse:
        raise SystemExit("The database already has chats: give an empty one.")
    if reuse:
        user = User.objects.get(email="bench@example.com")
    else:
        user = User.objects.create_user("bench@example.com", "bench password 123")
    result = {
        "engine": connection.vendor,
        "chats": args.chats,
        "turns": args.turns,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    if connection.vendor == "sqlite":
        import sqlite3

        result["sqlite"] = sqlite3.sqlite_version
    else:
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            result["postgresql"] = cursor.fetchone()[0]
    if reuse:
        generated = {"load_s": float("nan"), "vocabulary": pseudo_words(random.Random(7), VOCABULARY)}
    else:
        generated = generate(args, user)
    result["load_s"] = generated["load_s"]
    queries = make_queries(args, generated["vocabulary"], user)
    from chat import search

    modules = {"this tree": search}
    if args.compare:
        modules = {f"before ({args.compare})": load_search_module(args.compare), **modules}
    result["load_average"] = os.getloadavg()
    service = bench_service(user, queries, modules)
    result["load_average_after"] = os.getloadavg()
    result["service"] = service
    mine = service["this tree"]
    result["service_ms"], result["service_cpu_ms"], result["found"] = mine["wall"], mine["cpu"], mine["found"]
    if not args.skip_http:
        connection.close()  # the server gets the database (SQLite: no writer left open here)
        result["http_ms"], result["server_start_s"] = bench_http(args, workdir, user, queries)

    print(f"\nSearch over {args.chats} chats / {args.turns} turns on {result['engine']} "
          f"({result.get('sqlite') or result.get('postgresql')}), loaded in {result['load_s']:.0f} s; "
          f"{result['found']:.0%} of the searches found something.\n")
    print(f"Load average (1, 5, 15 min) before the service calls {result['load_average']}, "
          f"after {result['load_average_after']}.\n")
    for name, measured in service.items():
        print(table(f"{name}: service call (wall)", measured["wall"]))
        print()
        print(table(f"{name}: service call (CPU of this process)", measured["cpu"]))
        print(f"\n{name}: {measured['found']:.0%} of the searches found something.\n")
    if len(service) == 2:
        before, after = (measured["wall"]["all"] for measured in service.values())
        before_cpu, after_cpu = (measured["cpu"]["all"] for measured in service.values())
        print(f"before / after, all searches: wall p50 {before['p50'] / after['p50']:.1f}x, p99 "
              f"{before['p99'] / after['p99']:.1f}x; CPU p50 {before_cpu['p50'] / after_cpu['p50']:.1f}x, p99 "
              f"{before_cpu['p99'] / after_cpu['p99']:.1f}x")
    if "http_ms" in result:
        print()
        print(table("GET /api/v1/chat/search (daphne, loopback)", result["http_ms"]))
    if args.json:
        print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
