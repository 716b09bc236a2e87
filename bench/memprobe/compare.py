"""Compare two snapshots of bench/websocket_turns.py --memory-probe: what the server holds per connection.

    .venv/bin/python bench/memprobe/compare.py DIR 1 3 --per 500 [--by filename|lineno|traceback] [--top 40]

prints the allocation sites (tracemalloc) that grew between snapshot 1 and 3, in bytes per connection (--per), and
the object types whose count grew, per connection."""

import argparse
import json
import tracemalloc
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dir")
    parser.add_argument("before", type=int)
    parser.add_argument("after", type=int)
    parser.add_argument("--per", type=int, default=1, help="divide by this many connections")
    parser.add_argument("--by", default="lineno", choices=["filename", "lineno", "traceback"])
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--frames", type=int, default=6, help="frames shown per traceback (--by traceback)")
    args = parser.parse_args()
    root = Path(args.dir)
    for number in (args.before, args.after):
        label = root / f"label-{number}"
        print(f"snapshot {number}: {label.read_text() if label.exists() else '?'}")
    ignore = [
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
    ]
    before = tracemalloc.Snapshot.load(str(root / f"snapshot-{args.before}.tracemalloc")).filter_traces(ignore)
    after = tracemalloc.Snapshot.load(str(root / f"snapshot-{args.after}.tracemalloc")).filter_traces(ignore)
    total_before = sum(t.size for t in before.traces)
    total_after = sum(t.size for t in after.traces)
    print(f"traced: {total_before / 2**20:.1f} MiB -> {total_after / 2**20:.1f} MiB, "
          f"{(total_after - total_before) / args.per / 1024:.1f} KiB per connection\n")
    stats = after.compare_to(before, args.by)
    for stat in stats[: args.top]:
        if stat.size_diff <= 0:
            continue
        where = stat.traceback.format(limit=args.frames) if args.by == "traceback" else [str(stat.traceback[0])]
        print(f"{stat.size_diff / args.per:9.0f} B {stat.count_diff / args.per:7.1f} blocks  " + where[0].strip())
        for line in where[1:]:
            print(" " * 30 + line.strip())
    types_before = json.loads((root / f"types-{args.before}.json").read_text())
    types_after = json.loads((root / f"types-{args.after}.json").read_text())
    grown = sorted(((types_after[k] - types_before.get(k, 0), k) for k in types_after), reverse=True)
    print("\nobjects per connection (gc-tracked, by type):")
    for diff, name in grown[:40]:
        if diff > 0:
            print(f"{diff / args.per:8.2f}  {name}")


if __name__ == "__main__":
    main()
