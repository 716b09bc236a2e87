"""Benchmark RAG ingestion up to the chunks: rag.files.check_upload → rag.extract.extract → rag.chunking.chunk_pages.

Three documents, generated in memory with testsupport.files (the same helpers the tests use):

1. A dense 100-page text PDF (A4, 10 pt, a heading and ~4,000 characters of prose per page): end-to-end pages/s
   of intake + extraction + chunking, and each step's share. Target: at least 100 pages/s.
2. A 20-page PDF with a ruled table on every page: the pdfplumber path (tables as "a | b | c" rows).
3. A 10-page scanned PDF (no text layer; 200 dpi, 12 pt text, ~40 lines a page): OCR pages/s through Tesseract,
   one process at a time and RAG_OCR_WORKERS at a time, and Tesseract's CPU time per page (which, unlike the
   wall time, hardly depends on what else the machine is doing). Target: at least 1 page/s.

Usage (from the repository root):
    .venv/bin/python bench/rag_ingest.py                # N=5 runs of the text PDFs, 3 of the OCR, medians
    .venv/bin/python bench/rag_ingest.py --runs 9 --ocr-runs 1 --ocr-pages 5
    .venv/bin/python bench/rag_ingest.py --skip-ocr             # the text and table PDFs only
    .venv/bin/python bench/rag_ingest.py --ocr-dpi 100          # cheaper OCR, for comparison

Not part of the test suite. Run it on an otherwise idle machine; the table's header line prints the load average.
"""

import argparse
import difflib
import os
import platform
import random
import resource
import statistics
import sys
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

WORDS = (
    "the of and to in a is that for it as was with be by on not he this are or his from at which but have an "
    "they you were her she there been one all we their has would when if so no out up into more other its time "
    "only new some could these two may first then do any like my now over such our man me even most made after "
    "also did many before must through back years where much your way well down should because each just those "
    "people how too little state good very make world still own see men work long get here between both life "
    "being under never day same another know while last might us great old year off come since against go came "
    "right used take three system report analysis customer invoice contract payment delivery warranty section "
    "agreement liability schedule quarterly revenue department employee procedure maintenance installation"
).split()


def sentence(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(8, 22))]
    return " ".join(words).capitalize() + rng.choice([".", ".", ".", "?", "!"])


def paragraph(rng: random.Random, sentences: int) -> str:
    return " ".join(sentence(rng) for _ in range(sentences))


def dense_page(rng: random.Random, number: int, target_chars: int = 4000) -> str:
    parts = [f"# {number}. {rng.choice(WORDS).capitalize()} {rng.choice(WORDS)} {rng.choice(WORDS)}"]
    size = 0
    while size < target_chars:
        text = paragraph(rng, rng.randint(3, 6))
        parts += [text, ""]
        size += len(text)
    return "\n".join(parts)


def median_range(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def measure(name: str, data: bytes, runs: int, truth: list[str] | None = None) -> dict:
    """Median-ready timings of `runs` ingestions; with `truth` (the text drawn into a scan), also the share of its
    words that OCR got right."""
    from rag.chunking import chunk_pages
    from rag.extract import extract
    from rag.files import check_upload

    totals, intakes, extracts, chunkings, child_cpu = [], [], [], [], []
    pages = chunks = characters = 0
    for _ in range(runs):
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        upload = check_upload(name, data)
        accepted = time.perf_counter()
        extraction = extract(upload)
        extracted = time.perf_counter()
        drafts = chunk_pages(extraction.pages)
        finished = time.perf_counter()
        children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        totals.append(finished - started)
        intakes.append(accepted - started)
        extracts.append(extracted - accepted)
        chunkings.append(finished - extracted)
        child_cpu.append(
            children_after.ru_utime - children_before.ru_utime + children_after.ru_stime - children_before.ru_stime
        )
        pages, chunks = len(extraction.pages), len(drafts)
        characters = sum(len(page.text) for page in extraction.pages)
        text = "\n".join(page.text for page in extraction.pages)
    return {
        "pages": pages,
        "chunks": chunks,
        "characters": characters,
        "total": totals,
        "intake": intakes,
        "extract": extracts,
        "chunk": chunkings,
        "pages_per_second": [pages / seconds for seconds in totals],
        "tesseract_cpu_per_page": [seconds / max(pages, 1) for seconds in child_cpu],
        "word_accuracy": word_accuracy(text, truth) if truth else None,
    }


def word_accuracy(text: str, truth: list[str]) -> float:
    """Matching words / words drawn (difflib's longest matching blocks, in order)."""
    expected = " ".join(truth).split()
    matcher = difflib.SequenceMatcher(None, expected, text.split(), autojunk=False)
    return sum(block.size for block in matcher.get_matching_blocks()) / max(len(expected), 1)


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f} ms"


def print_rows(label: str, result: dict, runs: int) -> None:
    speed = median_range(result["pages_per_second"])
    total = median_range(result["total"])
    print(
        f"| {label} ({result['pages']} pages, {result['characters'] // max(result['pages'], 1):,} characters a page, "
        f"{result['chunks']} chunks; N={runs}) | **{speed[0]:.1f} pages/s** | {speed[1]:.1f} – {speed[2]:.1f} |"
    )
    print(
        f"| … whole file: intake {ms(result['intake'])}, extract {ms(result['extract'])}, chunk {ms(result['chunk'])}"
        f" | {total[0]:.2f} s | {total[1]:.2f} – {total[2]:.2f} s |"
    )
    cpu = result["tesseract_cpu_per_page"]
    if max(cpu) > 0:
        low, high = min(cpu), max(cpu)
        print(f"| … Tesseract CPU time per page | {statistics.median(cpu):.2f} s | {low:.2f} – {high:.2f} s |")
    if result["word_accuracy"] is not None:
        print(f"| … words read right | {result['word_accuracy']:.1%} | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="runs of the text and table PDFs (default 5)")
    parser.add_argument("--ocr-runs", type=int, default=3, help="runs of the scanned PDF (default 3)")
    parser.add_argument("--pages", type=int, default=100, help="pages of the text PDF (default 100)")
    parser.add_argument("--ocr-pages", type=int, default=10, help="pages of the scanned PDF (default 10)")
    parser.add_argument("--ocr-dpi", type=int, default=None, help="RAG_OCR_DPI for the scan (default: the setting)")
    parser.add_argument("--skip-ocr", action="store_true", help="measure the text and table PDFs only")
    parser.add_argument("--skip-text", action="store_true", help="measure the scanned PDF only")
    parser.add_argument("--scan-font", type=int, default=33, help="text size in the scan, px at 200 dpi (33 = 12 pt)")
    args = parser.parse_args()
    if args.ocr_dpi:
        os.environ["RAG_OCR_DPI"] = str(args.ocr_dpi)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "querynox.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.test import override_settings

    from rag import extract as extract_module
    from testsupport import files as testing

    rng = random.Random(42)
    print(f"Generating the documents (fpdf2 takes a few seconds for {args.pages} pages)…", file=sys.stderr)
    text_pdf = testing.make_text_pdf([dense_page(rng, number) for number in range(1, args.pages + 1)], font_size=10)
    table_pages = []
    for _ in range(20):
        header = [["Item", "Quantity", "Unit price", "Notes"]]
        rows = [
            [f"{rng.choice(WORDS)} {rng.choice(WORDS)}", str(rng.randint(1, 99)), f"{rng.randint(1, 999)}.00", "ok"]
            for _ in range(12)
        ]
        table_pages.append(testing.make_table_pdf(header + rows, before=paragraph(rng, 4), after=paragraph(rng, 4)))
    table_pdf = testing.merge_pdfs(*table_pages)
    # 25 sentences wrap to ~40 lines of 12 pt text: a full A4 page at 200 dpi.
    scan_pages = ["\n".join(sentence(rng) for _ in range(25)) for _ in range(args.ocr_pages)]
    scanned_pdf = testing.make_scanned_pdf(scan_pages, dpi=200, font_size=args.scan_font)

    load_before = os.getloadavg()[0]
    print("Measuring…", file=sys.stderr)
    if not args.skip_text:
        text = measure("dense.pdf", text_pdf, args.runs)
        tables = measure("tables.pdf", table_pdf, args.runs)
    if not args.skip_ocr:
        with override_settings(RAG_OCR_WORKERS=1):
            ocr_one = measure("scan.pdf", scanned_pdf, args.ocr_runs, truth=scan_pages)
        ocr_default = measure("scan.pdf", scanned_pdf, args.ocr_runs, truth=scan_pages)
    load_after = os.getloadavg()[0]

    print()
    print(
        f"{os.cpu_count()} cores, Python {platform.python_version()}, OCR at {settings.RAG_OCR_DPI} dpi "
        f"({extract_module.OCR_CONFIG}, one Tesseract thread per process), RAG_OCR_WORKERS={settings.RAG_OCR_WORKERS};"
        f" load average {load_before:.1f} before, {load_after:.1f} after"
    )
    print()
    print("| measurement | median | min – max |")
    print("|---|---|---|")
    if not args.skip_text:
        print_rows("Text PDF: intake + extract + chunk", text, args.runs)
        print_rows("PDF with a ruled table on every page (pdfplumber)", tables, args.runs)
    if not args.skip_ocr:
        print_rows("Scanned PDF: OCR + chunk, 1 Tesseract at a time", ocr_one, args.ocr_runs)
        print_rows(f"Scanned PDF: OCR + chunk, {settings.RAG_OCR_WORKERS} at a time", ocr_default, args.ocr_runs)


if __name__ == "__main__":
    main()
