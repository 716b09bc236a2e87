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
  minilm-s8/-u8     MiniLM with real dynamic int8 MatMuls: the shipped weights folded back to float32, then
                    onnxruntime.quantization.quantize_dynamic (per-channel, s8 / u8 weights; needs `onnx`)
  static            the static model alone (rag.embeddings.StaticEmbedder, distilled from the same MiniLM the way
                    model2vec does it: each of its 30,522 word pieces embedded alone, PCA to 256 dimensions,
                    Zipf-rank SIF weights; a text is the mean of its pieces' vectors), without re-ranking
  hybrid            what the local embedder is now: the static model at ingest, and at query time MiniLM re-scores
                    the best RERANK_DEPTH (20) candidates (rag.retrieval); hybrid-d6/-d10/-d30: other depths

Besides recall, each option reports the CPU per question (the 40 of the set, in one chat: with a reranker,
including the candidates it embeds) and, after the speed upload, the first and a second question over that
document (the first builds the index; with a reranker, both embed their candidates).

Usage (from the repository root):
    .venv/bin/python bench/rag_quality.py
    .venv/bin/python bench/rag_quality.py --option minilm --option static --json
    .venv/bin/python bench/rag_quality.py --option minilm --option hybrid --option minilm --option hybrid --misses
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
FIRST_QUESTION = "How do I decode a DER encoded value into a structure?"
SECOND_QUESTION = "Which function reports why parsing the ASN.1 definitions failed?"
SHIPPED = {}  # rag.retrieval's own RERANK_DEPTH, before an option changes it
OPTIONS = ["minilm", "minilm-b4", "minilm-b16", "minilm-t2", "minilm-128", "lexical", "static", "hybrid",
           "hybrid-d6", "hybrid-d10", "hybrid-d30", "minilm-s8", "minilm-u8"]


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
    from rag import retrieval

    SHIPPED.setdefault("depth", retrieval.RERANK_DEPTH)
    retrieval.RERANK_DEPTH = int(option.split("-d")[1]) if option.startswith("hybrid-d") else SHIPPED["depth"]
    if option == "static":
        static = embeddings.StaticEmbedder(embeddings.local_embedder())
        static.name = "bench:static-alone"  # not the shipped name: reranker_for() does not re-rank it
        static.reranker = None
        return static
    if option.startswith("hybrid"):
        return embeddings.StaticEmbedder(embeddings.local_embedder())
    threads = 2 if option == "minilm-t2" else settings.RAG_EMBEDDING_THREADS
    embedder = embeddings.LocalEmbedder(threads)
    if option.startswith("minilm-b"):
        embedder.inference_batch = int(option[len("minilm-b") :])
    if option == "minilm-128":
        embedder.max_tokens = 128
        embedder.name += "@128"
    if option in ("minilm-s8", "minilm-u8"):
        embedder.model_path = quantized_model(option[-2:])
        embedder.name += f"@{option[-2:]}"
    return embedder


def quantized_model(kind: str) -> str:
    """The shipped model with real dynamic int8 MatMuls (MatMulInteger after DynamicQuantizeLinear, per-channel
    weights), derived here: its int8 weights are first folded back into float32 initialisers (the shipped graph
    dequantises them with Cast and Mul at load), then onnxruntime.quantization.quantize_dynamic re-quantises them.
    Needs the `onnx` package (bench only: pip install onnx==1.23.2)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from rag.embeddings import shipped_model_path

    out = Path(tempfile.gettempdir()) / f"qnx-minilm-dynamic-{kind}.onnx"
    if out.exists():
        return str(out)
    model = onnx.load(shipped_model_path())
    initializers = {item.name: item for item in model.graph.initializer}
    producers = {output: node for node in model.graph.node for output in node.output}
    folded, dropped = [], []
    for node in model.graph.node:
        cast = producers.get(node.input[0]) if node.op_type == "Mul" and len(node.input) == 2 else None
        constant = cast is not None and cast.input[0] in initializers and node.input[1] in initializers
        if constant and cast.op_type == "Cast":
            weights = numpy_helper.to_array(initializers[cast.input[0]]).astype(np.float32)
            scale = numpy_helper.to_array(initializers[node.input[1]]).astype(np.float32)
            folded.append(numpy_helper.from_array(weights * scale, node.output[0]))
            dropped += [node, cast]
    for node in dropped:
        model.graph.node.remove(node)
    used = {name for node in model.graph.node for name in node.input}
    kept = [item for item in model.graph.initializer if item.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept + folded)
    fp32 = out.with_suffix(".fp32.onnx")
    onnx.save(model, str(fp32))
    weight_type = QuantType.QInt8 if kind == "s8" else QuantType.QUInt8
    quantize_dynamic(str(fp32), str(out), per_channel=True, weight_type=weight_type)
    fp32.unlink()
    return str(out)


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
    if embedder.reranker is not None:
        embedder.reranker.embed(["warm up: load the model"])
    result = {"option": option, "embedder": embedder.name, "load_s": time.perf_counter() - started}

    # A user of its own: ingest reuses the vectors of a file the same user uploaded with the same embedder name.
    user = User.objects.create_user(f"quality-{User.objects.count()}@example.com", "bench password 123")
    chat = Chat.objects.create(owner=user, title=f"quality {option}", model="smollm2-135m")
    for name, data in document_pdfs().items():
        ingest(chat, check_upload(name, data))
    retrieval.clear_cache()
    found = {"words": [0, 0, 0], "meaning": [0, 0, 0]}  # questions, recall@1, recall@6
    misses = []
    query_cpu = time.process_time()
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
    # Per question, the index built on the first; with a reranker, chunks embedded at query time are included.
    result["query_cpu_ms"] = (time.process_time() - query_cpu) / len(QUESTIONS) * 1000
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
        # What the first turn after the upload then pays for retrieval (index build; with a reranker, embedding
        # its RERANK_DEPTH candidates), and a second, different question over the same document.
        for key, question in (("first_query", FIRST_QUESTION), ("second_query", SECOND_QUESTION)):
            cpu, wall = time.process_time(), time.perf_counter()
            retrieval.retrieve(speed_chat.id, question)
            result[f"{key}_s"], result[f"{key}_cpu_s"] = time.perf_counter() - wall, time.process_time() - cpu
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
    header = "| option | recall@1 | recall@6 | words r@1 / r@6 | meaning r@1 / r@6 | CPU per question |"
    if pdf is not None:
        header += " ingest s/MB | CPU s/MB | embedding chunks/s | 1st / 2nd query after upload, s (CPU) |"
    print(header)
    print("|" + "---|" * header.count(" |"))
    for r in results:
        words, meaning = r["by_kind"]["words"], r["by_kind"]["meaning"]
        line = (
            f"| {r['option']} | {r['recall_at_1']:.1%} | {r['recall_at_6']:.1%} | "
            f"{words['r1']:.0%} / {words['r6']:.0%} | {meaning['r1']:.0%} / {meaning['r6']:.0%} |"
            f" {r['query_cpu_ms']:.0f} ms |"
        )
        if pdf is not None:
            line += (
                f" {r['s_per_mb']:.1f} | {r['cpu_s_per_mb']:.1f} | {r['chunks_per_s']:.1f} |"
                f" {r['first_query_s']:.2f} ({r['first_query_cpu_s']:.2f}) /"
                f" {r['second_query_s']:.2f} ({r['second_query_cpu_s']:.2f}) |"
            )
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
