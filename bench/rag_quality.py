"""Retrieval quality and ingest speed of each embedder option, through our own pipeline.

For every option: a fresh chat in a throwaway SQLite database gets the three PDFs of `testsupport.rag_questions`
(a tenant handbook, an espresso machine manual, a travel policy: 30 pages, distinct facts per page) through the
real `rag.service.ingest` (intake, pypdfium2 extraction, chunking, embedding, storage); then each of the fixed
questions goes through `rag.retrieval.retrieve` (BM25 + cosine fusion, diversity, token budget), and we count:

* recall@1: the first hit is on the answer's page of the answer's document;
* recall@6: one of the hits (RAG_TOP_K = 6) is.

Both split by question kind ("words": shares key words with the answer; "meaning": a paraphrase).

Speed: each option also ingests a real text PDF (`--pdf`, default the 36-page libtasn1 manual Debian ships in
/usr/share/doc, 263 KB, 211 chunks; else the three test PDFs) and reports seconds per MB of PDF for the whole
ingest, the embedding part alone, chunks/s, and the process CPU seconds (which depend less on what else runs on a
shared machine than wall time).

Options (`--option NAME`, repeatable; default: all):
  minilm            the current local embedder (all-MiniLM-L6-v2 int8 ONNX), as configured
  minilm-b4/-b16    the same with 4 / 16 chunks per onnxruntime call (the default is 1)
  minilm-t2         the same with 2 intra-op threads
  minilm-128        chunks truncated at 128 word pieces (what the model was trained on) instead of 256
  lexical           BM25 alone (every vector the same): what the embeddings add
  static            a static (bag of word pieces) model distilled from the same MiniLM the way model2vec does it:
                    each of its 30,522 word pieces embedded alone, PCA to 256 dimensions, Zipf-rank SIF weights;
                    a text is the mean of its pieces' vectors. Distilling takes ~70 CPU-s (once per run).

Usage (from the repository root):
    .venv/bin/python bench/rag_quality.py
    .venv/bin/python bench/rag_quality.py --option minilm --option static --json
Not part of the test suite.
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

DEFAULT_PDF = Path("/usr/share/doc/libtasn1-doc/libtasn1.pdf")
OPTIONS = ["minilm", "minilm-b4", "minilm-b16", "minilm-t2", "minilm-128", "lexical", "static"]


def make_embedder(option: str):
    import numpy as np
    from django.conf import settings

    from rag import embeddings

    if option == "lexical":

        class SameVector(embeddings.Embedder):
            name = "bench:same-vector"
            dimensions = 8
            batch_size = 64

            def embed(self, texts):
                return np.full((len(texts), 8), 8**-0.5, dtype=np.float32)

        return SameVector()
    if option == "static":
        return DistilledStatic()
    threads = 2 if option == "minilm-t2" else settings.RAG_EMBEDDING_THREADS
    embedder = embeddings.LocalEmbedder(threads)
    if option.startswith("minilm-b"):
        embedder.inference_batch = int(option[len("minilm-b") :])
    if option == "minilm-128":
        embedder.max_tokens = 128
        embedder.name += "@128"
    return embedder


class DistilledStatic:
    name = "bench:static-minilm-pca256-sif"
    dimensions = 256
    batch_size = 256

    def __init__(self):
        import numpy as np

        from rag.embeddings import LocalEmbedder

        teacher = LocalEmbedder(2)
        teacher.load()
        tokenizer = teacher._tokenizer
        size = tokenizer.get_vocab_size()
        vectors = np.zeros((size, 384), dtype=np.float32)
        for start in range(0, size, 1024):
            ids = np.arange(start, min(size, start + 1024))
            # [CLS] piece [SEP], mean-pooled like the sentence model pools a text
            input_ids = np.stack([np.full(len(ids), 101), ids, np.full(len(ids), 102)], axis=1).astype(np.int64)
            feeds = {"input_ids": input_ids, "attention_mask": np.ones_like(input_ids)}
            feeds["token_type_ids"] = np.zeros_like(input_ids)
            (hidden,) = teacher._session.run(["last_hidden_state"], feeds)
            vectors[start : start + len(ids)] = hidden.mean(axis=1)
        words = vectors[1000:]  # past the [unused] and single-character pieces
        mean = words.mean(axis=0)
        _, _, components = np.linalg.svd(words - mean, full_matrices=False)
        table = (vectors - mean) @ components[: self.dimensions].T
        # BERT's vocabulary lists whole words by frequency from id 1996 ("the"): weight rare pieces up (SIF).
        rank = np.maximum(np.arange(size) - 1995, 1).astype(np.float64)
        probability = (1 / rank) / (1 / rank).sum()
        self.table = (table * (1e-4 / (1e-4 + probability))[:, None]).astype(np.float32)
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self.tokenizer = tokenizer

    def embed(self, texts):
        import numpy as np

        from rag.embeddings import normalize_rows

        encodings = self.tokenizer.encode_batch([text or " " for text in texts], add_special_tokens=False)
        rows = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        for row, encoding in enumerate(encodings):
            if encoding.ids:
                rows[row] = self.table[encoding.ids].mean(axis=0)
        return normalize_rows(rows)


def use_embedder(embedder) -> None:
    """Make the pipeline's get_embedder() return this one (ingest and retrieval import it by name)."""
    from rag import retrieval, service

    service.get_embedder = retrieval.get_embedder = lambda: embedder


def run_option(option: str, pdf: bytes | None) -> dict:
    from accounts.models import User
    from chat.models import Chat
    from rag import retrieval
    from rag.files import check_upload
    from rag.service import ingest
    from testsupport.rag_questions import QUESTIONS, document_pdfs

    embedder = make_embedder(option)
    use_embedder(embedder)
    started = time.perf_counter()
    embedder.embed(["warm up: load the model"])
    result = {"option": option, "embedder": embedder.name, "load_s": time.perf_counter() - started}

    # A user of its own: ingest reuses the vectors of a file the same user uploaded with the same embedder name.
    user = User.objects.create_user(f"quality-{User.objects.count()}@example.com", "bench password 123")
    chat = Chat.objects.create(owner=user, title=f"quality {option}", model="smollm2-135m")
    for name, data in document_pdfs().items():
        ingest(chat, check_upload(name, data))
    retrieval.clear_cache()
    found = {"words": [0, 0, 0], "meaning": [0, 0, 0]}  # questions, recall@1, recall@6
    misses = []
    for question in QUESTIONS:
        hits = retrieval.retrieve(chat.id, question.text)
        places = [(hit.document_name, hit.page) for hit in hits]
        answer = (question.document, question.page)
        counts = found[question.kind]
        counts[0] += 1
        counts[1] += bool(places) and places[0] == answer
        counts[2] += answer in places
        if not places or places[0] != answer:
            misses.append(f"{question.text} -> {places[:3]} (want {answer}{', in top 6' if answer in places else ''})")
    total = [sum(found[kind][i] for kind in found) for i in range(3)]
    result.update(
        questions=total[0],
        recall_at_1=total[1] / total[0],
        recall_at_6=total[2] / total[0],
        by_kind={kind: {"n": n, "r1": r1 / n, "r6": r6 / n} for kind, (n, r1, r6) in found.items()},
        misses=misses,
    )

    if pdf is not None:
        speed_chat = Chat.objects.create(owner=user, title=f"speed {option}", model="smollm2-135m")
        timings = _timed_ingest(speed_chat, pdf, embedder)
        result.update(timings)
    return result


def _timed_ingest(chat, pdf: bytes, embedder) -> dict:
    """Whole ingest of the PDF (wall and CPU), and the time spent inside embed() alone."""
    from rag.files import check_upload
    from rag.service import ingest

    spent = {"embed_s": 0.0, "chunks": 0}
    original = embedder.embed

    def timed_embed(texts):
        started = time.perf_counter()
        try:
            return original(texts)
        finally:
            spent["embed_s"] += time.perf_counter() - started
            spent["chunks"] += len(texts)

    embedder.embed = timed_embed
    cpu, wall = time.process_time(), time.perf_counter()
    try:
        ingest(chat, check_upload("speed.pdf", pdf))
    finally:
        embedder.embed = original
    wall = time.perf_counter() - wall
    cpu = time.process_time() - cpu
    megabytes = len(pdf) / 1_000_000
    return {
        "pdf_bytes": len(pdf),
        "chunks": spent["chunks"],
        "ingest_s": wall,
        "ingest_cpu_s": cpu,
        "s_per_mb": wall / megabytes,
        "cpu_s_per_mb": cpu / megabytes,
        "embed_s": spent["embed_s"],
        "chunks_per_s": spent["chunks"] / spent["embed_s"] if spent["embed_s"] else float("inf"),
        "load_average": os.getloadavg()[0],
    }


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--option", action="append", choices=OPTIONS)
    parser.add_argument("--pdf", type=Path, default=None, help=f"PDF for the speed figures (default {DEFAULT_PDF})")
    parser.add_argument("--no-speed", action="store_true", help="recall only")
    parser.add_argument("--misses", action="store_true", help="print the questions each option gets wrong")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    workdir = tempfile.mkdtemp(prefix="qnx-rag-quality-")
    os.environ["DATABASE_URL"] = f"sqlite:///{workdir}/bench.sqlite3"
    os.environ["MEDIA_ROOT"] = f"{workdir}/media"
    os.environ["RAG_EMBEDDINGS"] = "local"
    os.environ["LOG_LEVEL"] = "WARNING"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "querynox.settings")
    import django

    django.setup()
    from django.core.management import call_command

    from testsupport.rag_questions import document_pdfs

    call_command("migrate", verbosity=0)
    pdf = None
    if not args.no_speed:
        path = args.pdf or (DEFAULT_PDF if DEFAULT_PDF.exists() else None)
        if path is not None:
            pdf = path.read_bytes()
        else:
            from testsupport.files import make_text_pdf
            from testsupport.rag_questions import document_names, document_pages

            pdf = make_text_pdf([page for name in document_names() for page in document_pages(name)])
    results = []
    for option in args.option or OPTIONS:
        try:
            results.append(run_option(option, pdf))
        except (ImportError, AttributeError, FileNotFoundError) as exc:
            print(f"{option}: not available ({exc})", file=sys.stderr)
    print(f"{platform.node()} · {os.cpu_count()} cores · Python {platform.python_version()} · "
          f"{len(document_pdfs())} documents · load average at the end {os.getloadavg()[0]:.1f}")
    header = "| option | recall@1 | recall@6 | words r@1 / r@6 | meaning r@1 / r@6 |"
    if pdf is not None:
        header += " ingest s/MB | CPU s/MB | embedding chunks/s |"
    print(header)
    print("|" + "---|" * header.count(" |"))
    for r in results:
        words, meaning = r["by_kind"]["words"], r["by_kind"]["meaning"]
        line = (
            f"| {r['option']} | {r['recall_at_1']:.1%} | {r['recall_at_6']:.1%} | "
            f"{words['r1']:.0%} / {words['r6']:.0%} | {meaning['r1']:.0%} / {meaning['r6']:.0%} |"
        )
        if pdf is not None:
            line += f" {r['s_per_mb']:.1f} | {r['cpu_s_per_mb']:.1f} | {r['chunks_per_s']:.1f} |"
        print(line)
    if args.misses:
        for r in results:
            print(f"\n{r['option']} misses at rank 1:")
            print("\n".join("  " + miss for miss in r["misses"]))
    if args.json:
        print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
