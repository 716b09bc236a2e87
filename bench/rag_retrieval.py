"""Benchmark hybrid retrieval (rag.retrieval) over many chunks in ONE chat, through our own code.

A throwaway SQLite database (in a temp directory) gets N synthetic chunks (default 100k) in one chat: pseudo-words
drawn from a Zipf distribution with a topic mixed in, and 384-dimension unit vectors clustered around the same
topics, stored as the float16 bytes ingest writes, under the local embedder's name. Then:

* insert time (bulk_create), index build time (the first `chat_index`: reading every row, BM25 postings, the
  float32 matrix) and its memory (the index's arrays, and the process RSS before and after);
* retrieval latency over Q queries (a few words of a random chunk, and that chunk's vector plus noise):
  - "precomputed vector": `chat_index` (the one cheap freshness query, cache hit) + `search` (BM25, the
    matrix-vector product, rank fusion, diversity, token budget, reading the chosen chunks' text by id);
  - "end to end": `retrieve()`, which also embeds the query with the local model;
  - the local query embedding alone;
* float16 storage: how much of the float32 top 10 (by cosine) the stored float16 vectors keep.

Usage (from the repository root):
    .venv/bin/python bench/rag_retrieval.py                    # 100k chunks, 200 queries
    .venv/bin/python bench/rag_retrieval.py --chunks 20000 --queries 100 --json

Not part of the test suite. The machine should be otherwise idle: the matrix-vector product is memory-bound.
"""

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

DIMENSIONS = 384
TOPICS = 300
VOCABULARY = 30_000
WORDS_PER_CHUNK = 150
DOCUMENTS = 50  # the chunks are spread over this many documents of the one chat


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pseudo_words(rng: np.random.Generator, count: int) -> list[str]:
    consonants, vowels = list("bcdfghjklmnprstvwz"), list("aeiou")
    words, seen = [], set()
    while len(words) < count:
        syllables = rng.integers(1, 4)
        word = "".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(syllables))
        if rng.random() < 0.3:
            word += rng.choice(consonants)
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


def synthetic_corpus(count: int, seed: int = 7):
    """(texts, float32 unit vectors, topic of each chunk)."""
    rng = np.random.default_rng(seed)
    words = np.array(pseudo_words(rng, VOCABULARY))
    ranks = np.arange(1, VOCABULARY + 1)
    zipf = (1 / ranks) / (1 / ranks).sum()
    topics = rng.integers(0, TOPICS, size=count)
    # Each topic favours its own 100 mid-frequency words (a fifth of a chunk's words come from them).
    topic_words = rng.integers(2_000, VOCABULARY, size=(TOPICS, 100))
    common = rng.choice(VOCABULARY, size=(count, WORDS_PER_CHUNK), p=zipf)
    topical = topic_words[topics[:, None], rng.integers(0, 100, size=(count, WORDS_PER_CHUNK))]
    use_topic = rng.random((count, WORDS_PER_CHUNK)) < 0.2
    ids = np.where(use_topic, topical, common)
    texts = [" ".join(words[row]) + "." for row in ids]
    centroids = rng.standard_normal((TOPICS, DIMENSIONS)).astype(np.float32)
    vectors = centroids[topics] + 1.2 * rng.standard_normal((count, DIMENSIONS)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return texts, vectors, topics


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def timed(fn, runs: int) -> list[float]:
    times = []
    for i in range(runs):
        started = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - started) * 1000)
    return times


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--json", action="store_true", help="print the raw numbers as JSON too")
    args = parser.parse_args(argv)

    workdir = tempfile.mkdtemp(prefix="qnx-rag-bench-")
    os.environ["DATABASE_URL"] = f"sqlite:///{workdir}/bench.sqlite3"
    os.environ["MEDIA_ROOT"] = f"{workdir}/media"
    os.environ["RAG_EMBEDDINGS"] = "local"
    os.environ["LOG_LEVEL"] = "WARNING"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "querynox.settings")
    import django

    django.setup()
    from django.core.management import call_command

    from accounts.models import User
    from chat.models import Chat
    from rag import retrieval
    from rag.embeddings import get_embedder
    from rag.models import Chunk, Document, decode_embedding, encode_embedding

    call_command("migrate", verbosity=0)
    result = {
        "chunks": args.chunks,
        "queries": args.queries,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }

    started = time.perf_counter()
    texts, vectors, _ = synthetic_corpus(args.chunks)
    result["generate_s"] = time.perf_counter() - started

    embedder = get_embedder()
    user = User.objects.create_user("bench@example.com", "bench password 123")
    chat = Chat.objects.create(owner=user, title="bench", model="smollm2-135m")
    started = time.perf_counter()
    per_document = -(-args.chunks // DOCUMENTS)
    for number, start in enumerate(range(0, args.chunks, per_document)):
        document = Document.objects.create(
            chat=chat,
            name=f"document-{number}.pdf",
            kind="pdf",
            mime="application/pdf",
            sha256=f"{number:064x}",
            pages=per_document // 3,
            status=Document.Status.READY,
            embedding_model=embedder.name,
        )
        Chunk.objects.bulk_create(
            (
                Chunk(
                    document=document,
                    chat=chat,
                    position=i - start,
                    page=(i - start) // 3 + 1,
                    text=texts[i],
                    tokens=200,
                    embedding=encode_embedding(vectors[i]),
                )
                for i in range(start, min(start + per_document, args.chunks))
            ),
            batch_size=2000,
        )
    result["insert_s"] = time.perf_counter() - started

    gc.collect()
    result["rss_before_index_mib"] = rss_mib()
    started = time.perf_counter()
    index = retrieval.chat_index(chat.id)
    result["index_build_s"] = time.perf_counter() - started
    gc.collect()
    result["rss_after_index_mib"] = rss_mib()
    result["index_mib"] = index.nbytes / 2**20
    result["index_matrix_mib"] = sum(g.matrix.nbytes for g in index.vectors.values()) / 2**20
    result["index_terms"] = len(index.vocabulary)
    result["index_postings"] = int(len(index.posting_rows))

    rng = np.random.default_rng(11)
    targets = rng.integers(0, args.chunks, size=args.queries)
    queries = [" ".join(rng.choice(texts[t].rstrip(".").split(), size=4, replace=False)) for t in targets]
    query_vectors = vectors[targets] + 0.05 * rng.standard_normal((args.queries, DIMENSIONS)).astype(np.float32)
    query_vectors /= np.linalg.norm(query_vectors, axis=1, keepdims=True)

    found = []

    def precomputed(i):
        current = retrieval.chat_index(chat.id)
        hits = retrieval.search(current, queries[i], query_vectors[i], embedder.name, k=6, token_budget=1500)
        found.append(int(index.chunk_ids[targets[i]]) in {h.chunk_id for h in hits})

    timed(precomputed, 10)  # warm-up: caches, allocator, BLAS threads
    found.clear()
    gc.collect()
    precomputed_ms = timed(precomputed, args.queries)
    result["target_in_top_k"] = sum(found) / len(found)

    def search_only(i):
        retrieval.search(index, queries[i], query_vectors[i], embedder.name, k=6, token_budget=1500)

    search_ms = timed(search_only, args.queries)

    def lexical_only(i):
        index.lexical_scores(retrieval.terms(queries[i]))

    lexical_ms = timed(lexical_only, args.queries)

    matrix = index.vectors[embedder.name].matrix

    def vector_only(i):
        matrix @ query_vectors[i]

    vector_ms = timed(vector_only, args.queries)

    embedder.embed(["warm up"])
    embed_ms = timed(lambda i: embedder.embed([queries[i]]), args.queries)
    end_to_end_ms = timed(lambda i: retrieval.retrieve(chat.id, queries[i], k=6, token_budget=1500), args.queries)

    for name, values in (
        ("precomputed", precomputed_ms),
        ("search_only", search_ms),
        ("lexical_only", lexical_ms),
        ("vector_product", vector_ms),
        ("query_embedding", embed_ms),
        ("end_to_end", end_to_end_ms),
    ):
        result[f"{name}_p50_ms"] = percentile(values, 50)
        result[f"{name}_p99_ms"] = percentile(values, 99)
        result[f"{name}_max_ms"] = max(values)

    # float16 storage vs the float32 vectors it came from: overlap of the top 10 by cosine.
    stored = np.stack([decode_embedding(encode_embedding(v)) for v in vectors[: min(args.chunks, 20_000)]])
    overlaps, deltas = [], []
    for vector in query_vectors[:100]:
        exact = vectors[: len(stored)] @ vector
        approx = stored @ vector
        overlaps.append(len(set(np.argsort(-exact)[:10]) & set(np.argsort(-approx)[:10])) / 10)
        deltas.append(float(np.max(np.abs(exact - approx))))
    result["float16_top10_overlap"] = statistics.mean(overlaps)
    result["float16_max_cosine_error"] = max(deltas)
    result["rss_end_mib"] = rss_mib()

    print(table(result))
    if args.json:
        print(json.dumps(result, indent=2))
    return result


def table(r: dict) -> str:
    rows = [
        ("Chunks in the one chat (documents)", f"{r['chunks']:,} ({DOCUMENTS})"),
        ("Insert (bulk_create, SQLite)", f"{r['insert_s']:.1f} s"),
        ("Index build (read rows, BM25 postings, float32 matrix)", f"{r['index_build_s']:.1f} s"),
        (
            "Index memory (arrays; matrix alone)",
            f"{r['index_mib']:.0f} MiB; {r['index_matrix_mib']:.0f} MiB "
            f"({r['index_terms']:,} terms, {r['index_postings']:,} postings)",
        ),
        (
            "Process RSS before / after the index build",
            f"{r['rss_before_index_mib']:.0f} / {r['rss_after_index_mib']:.0f} MiB",
        ),
        (
            "**Retrieval, precomputed query vector** (freshness query + search + fetch), p50 / p99",
            f"{r['precomputed_p50_ms']:.1f} / {r['precomputed_p99_ms']:.1f} ms",
        ),
        ("… `search` alone, p50 / p99", f"{r['search_only_p50_ms']:.1f} / {r['search_only_p99_ms']:.1f} ms"),
        ("… BM25 scoring alone, p50 / p99", f"{r['lexical_only_p50_ms']:.2f} / {r['lexical_only_p99_ms']:.2f} ms"),
        (
            "… matrix-vector product alone, p50 / p99",
            f"{r['vector_product_p50_ms']:.1f} / {r['vector_product_p99_ms']:.1f} ms",
        ),
        (
            "Local query embedding, p50 / p99",
            f"{r['query_embedding_p50_ms']:.1f} / {r['query_embedding_p99_ms']:.1f} ms",
        ),
        (
            "**Retrieval end to end** (`retrieve`, local query embedding), p50 / p99",
            f"{r['end_to_end_p50_ms']:.1f} / {r['end_to_end_p99_ms']:.1f} ms",
        ),
        ("Queried chunk in the top 6 (synthetic queries)", f"{r['target_in_top_k']:.0%}"),
        (
            "float16 storage: top-10 overlap with float32; max cosine error",
            f"{r['float16_top10_overlap']:.1%}; {r['float16_max_cosine_error']:.1e}",
        ),
    ]
    return "| measurement | value |\n|---|---|\n" + "\n".join(f"| {name} | {value} |" for name, value in rows)


if __name__ == "__main__":
    main()
