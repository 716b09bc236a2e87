"""Benchmark the local embedder (rag.embeddings.LocalEmbedder: all-MiniLM-L6-v2, int8 ONNX, onnxruntime on the CPU).

Each configuration runs in a fresh process, so the load time is cold (the OS file cache aside):

* load: tokenizer + InferenceSession, and RSS before / after;
* ingest throughput: chunks/s embedding N chunks of ~200 word pieces (English sentences), in the embedder's
  batches, as `rag.service.ingest` calls it;
* query latency: one short question at a time, p50 / p99.

Usage (from the repository root):
    .venv/bin/python bench/rag_embeddings.py                 # 1 and 2 threads, batch 1, 256 chunks, 100 queries
    .venv/bin/python bench/rag_embeddings.py --threads 1 --batch 1 --batch 4 --batch 16
    .venv/bin/python bench/rag_embeddings.py --threads 1 --chunks 512 --json

Not part of the test suite; run it on an otherwise idle machine.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

SENTENCES = [
    "The committee approved the budget for the new library after a long discussion.",
    "Employees must submit travel expenses within thirty days of returning.",
    "The river flooded the lower fields twice during the wet season last year.",
    "Our support team answers tickets in the order they arrive, urgent ones first.",
    "Regular maintenance of the ventilation system reduces energy costs noticeably.",
    "The museum's new wing shows sculptures from the early twentieth century.",
    "Passwords must be changed every ninety days and may not repeat the last five.",
    "The recipe calls for two cups of flour, a pinch of salt and three eggs.",
    "Solar panels on the warehouse roof now cover most of the daytime demand.",
    "Students can borrow laptops from the front desk for up to one week.",
]
QUESTIONS = [
    "What is the wifi password?",
    "When are travel expenses due?",
    "Who owns locker 17?",
    "How often must passwords be changed?",
    "What does the recipe need?",
]


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def chunk_texts(count: int) -> list[str]:
    """~200 word pieces each: ten sentences, rotated so no two neighbouring chunks are identical."""
    texts = []
    for i in range(count):
        rotated = SENTENCES[i % len(SENTENCES) :] + SENTENCES[: i % len(SENTENCES)]
        texts.append(" ".join(rotated) + f" Reference {i}.")
    return texts


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def run(threads: int, chunks: int, queries: int, batch: int) -> dict:
    """In a fresh process: one JSON line."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "querynox.settings")
    import django

    django.setup()
    from rag.embeddings import LocalEmbedder

    result = {"threads": threads, "batch": batch, "rss_before_load_mib": rss_mib()}
    embedder = LocalEmbedder(threads)
    embedder.inference_batch = batch
    started = time.perf_counter()
    embedder.load()
    result["load_s"] = time.perf_counter() - started
    result["rss_after_load_mib"] = rss_mib()
    texts = chunk_texts(chunks)
    result["tokens_per_chunk"] = statistics.mean(
        len(e.ids) for e in embedder._tokenizer.encode_batch(texts[: min(32, chunks)])
    )
    embedder.embed(texts[:8])  # warm-up
    started = time.perf_counter()
    embedder.embed(texts)
    result["chunks_per_s"] = chunks / (time.perf_counter() - started)
    result["rss_after_batches_mib"] = rss_mib()
    latencies = []
    for i in range(queries):
        started = time.perf_counter()
        embedder.embed([QUESTIONS[i % len(QUESTIONS)]])
        latencies.append((time.perf_counter() - started) * 1000)
    result["query_p50_ms"] = percentile(latencies, 50)
    result["query_p99_ms"] = percentile(latencies, 99)
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, action="append", help="onnxruntime intra-op threads (repeatable)")
    parser.add_argument("--chunks", type=int, default=256)
    parser.add_argument("--batch", type=int, action="append", help="texts per onnxruntime call (repeatable)")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run(args.threads[0], args.chunks, args.queries, args.batch[0])))
        return
    results = []
    for threads in args.threads or [1, 2]:
        for batch in args.batch or [1]:  # LocalEmbedder.inference_batch
            command = [sys.executable, __file__, "--child", "--threads", str(threads), "--batch", str(batch)]
            command += ["--chunks", str(args.chunks), "--queries", str(args.queries)]
            output = subprocess.run(command, check=True, capture_output=True, text=True, cwd=BASE_DIR).stdout
            results.append(json.loads(output.strip().splitlines()[-1]))
    header = "| measurement | " + " | ".join(f"{r['threads']} thread(s), batch {r['batch']}" for r in results) + " |"
    lines = [header, "|---|" + "---|" * len(results)]
    for label, key, fmt in (
        ("Load (tokenizer + ONNX session)", "load_s", "{:.2f} s"),
        ("Ingest throughput (~{:.0f} word pieces per chunk)", "chunks_per_s", "{:.1f} chunks/s"),
        ("Query embedding, p50", "query_p50_ms", "{:.1f} ms"),
        ("Query embedding, p99", "query_p99_ms", "{:.1f} ms"),
        ("RSS before load / after load / after the batches", None, None),
    ):
        if key is None:
            cells = [
                f"{r['rss_before_load_mib']:.0f} / {r['rss_after_load_mib']:.0f} / {r['rss_after_batches_mib']:.0f} MiB"
                for r in results
            ]
        else:
            cells = [fmt.format(r[key]) for r in results]
        lines.append(f"| {label.format(results[0]['tokens_per_chunk'])} | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
