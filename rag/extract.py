"""Text extraction: an accepted Upload becomes numbered pages of text.

* Text PDFs are read page by page with PDFium (pypdfium2): hundreds of pages a second. The layout of each page
  (loose character boxes) turns vertical gaps into paragraph breaks and clearly bigger lines into "# " headings,
  which the chunker splits on.
* pdfplumber is much slower, so it only looks at pages whose line and box paths draw a grid (a ruled table); its
  tables replace their cells' text as "a | b | c" rows, and the text around them is kept.
* Pages without a text layer (scans) and images are rendered and read by Tesseract, up to RAG_OCR_WORKERS pages
  at once, with a progress message as each page starts.

PDFium is not thread-safe: every pypdfium2 call holds `rag.files.pdfium_lock`, one page at a time, and OCR runs
outside it so other documents can proceed meanwhile.

Tesseract runs as `tesseract stdin stdout` with OMP_THREAD_LIMIT=1 (the binary is pytesseract's `tesseract_cmd`).
Its OpenMP threads spin-wait for each other, and on a busy 2-core machine a dense page took 13–18 s with them and
4 s without (bench/README.md); pytesseract cannot set the child's environment, so we start the process ourselves,
and get parallelism from several single-threaded processes instead.
"""

import io
import logging
import os
import re
import statistics
import subprocess
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import pdfplumber
import pypdfium2
import pypdfium2.raw as pdfium_c
import pytesseract
from django.conf import settings
from PIL import Image, ImageOps

from rag.files import pdfium_lock
from rag.types import Extraction, FileRejected, Page, Upload

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]

# Scanned pages render at settings.RAG_OCR_DPI; the pixel cap keeps odd page sizes (posters, 200-inch pages) from
# rendering gigapixel bitmaps, and shrinks huge photos before OCR.
OCR_MAX_PIXELS = 12_000_000
OCR_TIMEOUT_SECONDS = 60
OCR_LANGUAGE = "eng"
OCR_CONFIG = "--psm 3"  # fully automatic page segmentation (Tesseract's default), spelled out
# A page with less text than this and a picture over half of it is a scan with a stamp or a page number on top.
SCANNED_PAGE_MAX_TEXT_CHARS = 200
SCANNED_PAGE_MIN_IMAGE_SHARE = 0.5
# A page may hold a ruled table (worth pdfplumber's time) when its line and box paths draw at least a 2 × 2 grid:
# three different columns of vertical rules and three different rows of horizontal ones. A frame around a code
# listing (two columns of rules), a rule under a header, or bullets drawn as paths do not.
RULING_MIN_LENGTH = 8.0  # points: shorter paths are glyph-sized decorations
RULING_MAX_THICKNESS = 3.0  # points: thicker and long both ways is a box (a cell, a frame)
TABLE_MIN_RULE_POSITIONS = 3
# A line this much bigger than the page's usual line (by loose glyph height) is a heading.
HEADING_SIZE_RATIO = 1.15
HEADING_MAX_CHARS = 80

_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ufffe\uffff]")
# Text from fonts without a Unicode map comes out as replacement or private-use characters: no real text layer.
_UNREADABLE_CHARACTERS = re.compile(r"[\ufffd\ue000-\uf8ff]")


def extract(upload: Upload, progress: Progress | None = None) -> Extraction:
    """Pages with text (empty pages are left out and mentioned in `notes`). Raises FileRejected when the whole
    file has no readable text, or when OCR is needed but Tesseract is not installed. An exception raised by
    `progress` propagates, so a caller can use it to cancel."""
    report = _Report()
    if upload.kind == "pdf":
        pages = _extract_pdf(upload, progress or _ignore, report)
    elif upload.kind == "image":
        pages = _extract_image(upload, progress or _ignore, report)
    else:
        pages = _extract_text(upload)
    pages = [page for page in pages if page.text.strip()]
    if not pages:
        details = f" ({'; '.join(report.notes())})" if report.failed or report.timed_out or report.skipped_ocr else ""
        raise FileRejected(f'"{upload.name}" has no readable text{details}.', code="no_text")
    return Extraction(pages=pages, notes=report.notes())


def _ignore(message: str) -> None:
    pass


class _Report:
    """What went wrong on which pages, turned into a few user-facing notes (not one per page)."""

    def __init__(self):
        self.empty: list[int] = []
        self.failed: list[int] = []
        self.timed_out: list[int] = []
        self.skipped_ocr: list[int] = []
        self.tables_failed: list[int] = []

    def notes(self) -> list[str]:
        notes = []
        if self.empty:
            notes.append(f"{_pages_phrase(self.empty)} no readable text")
        if self.failed:
            notes.append(f"{_pages_phrase(self.failed, verb=False)} could not be read and {_was(self.failed)} skipped")
        if self.timed_out:
            notes.append(
                f"{_pages_phrase(self.timed_out, verb=False)} took too long to read and {_was(self.timed_out)} skipped"
            )
        if self.tables_failed:
            notes.append(
                f"the tables on {_pages_phrase(self.tables_failed, verb=False)} could not be laid out as rows; their "
                "text is kept as it is"
            )
        if self.skipped_ocr:
            limit = settings.RAG_MAX_OCR_PAGES
            notes.append(
                f"{_pages_phrase(self.skipped_ocr, verb=False)} {_was(self.skipped_ocr)} not read: text recognition "
                f"stops after {limit} page{'' if limit == 1 else 's'} per file"
            )
        return notes


def _was(numbers: list[int]) -> str:
    return "was" if len(numbers) == 1 else "were"


def _pages_phrase(numbers: list[int], verb: bool = True) -> str:
    """[3] → "page 3 has"; [1, 2, 3, 7] → "pages 1–3 and 7 have" (verb=False drops has/have)."""
    numbers = sorted(set(numbers))
    ranges: list[str] = []
    start = previous = numbers[0]
    for number in [*numbers[1:], None]:
        if number is not None and number == previous + 1:
            previous = number
            continue
        ranges.append(str(start) if start == previous else f"{start}–{previous}")
        if number is not None:
            start = previous = number
    listed = ranges[0] if len(ranges) == 1 else ", ".join(ranges[:-1]) + " and " + ranges[-1]
    plural = len(numbers) > 1
    phrase = f"{'pages' if plural else 'page'} {listed}"
    return f"{phrase} {'have' if plural else 'has'}" if verb else phrase


# --- PDF ---------------------------------------------------------------------------------------------------------


class _PageLayer:
    """What one PDF page's text layer and objects tell us."""

    def __init__(self, text: str, needs_ocr: bool, may_hold_table: bool, height: float, plain_geometry: bool):
        self.text = text
        self.needs_ocr = needs_ocr
        self.may_hold_table = may_hold_table
        self.height = height
        self.plain_geometry = plain_geometry  # unrotated, media box at the origin: pdfplumber's coordinates map


def _extract_pdf(upload: Upload, progress: Progress, report: _Report) -> list[Page]:
    with pdfium_lock:
        try:
            document = pypdfium2.PdfDocument(upload.data)
        except pypdfium2.PdfiumError:
            raise FileRejected(
                f'"{upload.name}" is damaged or is not a complete PDF, so it cannot be opened.', code="corrupt_file"
            ) from None
        page_count = len(document)
    tables = _TableReader(upload.data)
    pages: list[Page] = []
    ocr_pages_started = 0
    try:
        with _OcrQueue(upload.name, pages, report) as ocr_queue:
            for index in range(page_count):
                number = index + 1
                try:
                    with pdfium_lock:
                        layer = _read_page_layer(document, index)
                except Exception:
                    logger.warning("rag.extract: page failed", extra={"page": number, "kind": "pdf"}, exc_info=True)
                    report.failed.append(number)
                    continue
                text = layer.text
                if layer.may_hold_table and not layer.needs_ocr:
                    try:
                        text = _text_with_tables(document, index, layer, tables) or text
                    except Exception:  # the page's plain text is still good
                        logger.warning("rag.extract: tables failed", extra={"page": number}, exc_info=True)
                        report.tables_failed.append(number)
                if not layer.needs_ocr:
                    _add_page(pages, report, number, text, ocr=False)
                    continue
                if ocr_pages_started >= settings.RAG_MAX_OCR_PAGES:
                    report.skipped_ocr.append(number)
                    continue
                ocr_pages_started += 1
                ocr_queue.wait_for_room()
                progress(f"OCR page {number} of {page_count} in {upload.name}")
                try:
                    with pdfium_lock:
                        image, dpi = _render_page(document, index)
                except Exception:
                    logger.warning("rag.extract: render failed", extra={"page": number, "kind": "pdf"}, exc_info=True)
                    report.failed.append(number)
                    continue
                ocr_queue.submit(number, image, dpi=dpi)
    finally:
        tables.close()
        with pdfium_lock:
            document.close()
    return sorted(pages, key=lambda page: page.number)


def _add_page(pages: list[Page], report: "_Report", number: int, text: str, ocr: bool) -> None:
    if text.strip():
        pages.append(Page(number=number, text=text, ocr=ocr))
    else:
        report.empty.append(number)


def _read_page_layer(document: pypdfium2.PdfDocument, index: int) -> _PageLayer:
    page = document[index]
    try:
        textpage = page.get_textpage()
        try:
            text = _layout_text(textpage)
        finally:
            textpage.close()
        width, height = page.get_size()
        paths, rulings, images, others, largest_image_area = _count_objects(page)
        left, bottom, _, _ = page.get_mediabox()
        plain_geometry = page.get_rotation() == 0 and left == 0 and bottom == 0
    finally:
        page.close()
    stripped = text.strip()
    unreadable = bool(stripped) and len(_UNREADABLE_CHARACTERS.findall(stripped)) > len(stripped) * 0.3
    page_area = max(width * height, 1.0)
    mostly_picture = len(stripped) < SCANNED_PAGE_MAX_TEXT_CHARS and largest_image_area / page_area >= (
        SCANNED_PAGE_MIN_IMAGE_SHARE
    )
    needs_ocr = (not stripped and (paths or images or others)) or unreadable or mostly_picture
    return _PageLayer(
        text=text,
        needs_ocr=bool(needs_ocr),
        may_hold_table=rulings.may_form_a_table(),
        height=height,
        plain_geometry=plain_geometry,
    )


class _Rulings:
    """Where the page's table-like rules are: the x of every vertical rule or box side, the y of every horizontal
    one (rounded to whole points, so a rule drawn twice counts once)."""

    def __init__(self):
        self.xs: set[int] = set()
        self.ys: set[int] = set()

    def add(self, left: float, bottom: float, right: float, top: float) -> None:
        width, height = right - left, top - bottom
        if max(width, height) < RULING_MIN_LENGTH:
            return
        if height <= RULING_MAX_THICKNESS:
            self.ys.add(round((bottom + top) / 2))
        elif width <= RULING_MAX_THICKNESS:
            self.xs.add(round((left + right) / 2))
        else:
            self.xs.update((round(left), round(right)))
            self.ys.update((round(bottom), round(top)))

    def may_form_a_table(self) -> bool:
        return len(self.xs) >= TABLE_MIN_RULE_POSITIONS and len(self.ys) >= TABLE_MIN_RULE_POSITIONS


def _count_objects(page: pypdfium2.PdfPage) -> tuple[int, _Rulings, int, int, float]:
    """Path objects (all, and those that could be table rules), images and other non-text objects on the page (top
    level), and the largest image's area. Raw calls: the wrapper objects cost more than the counting."""
    paths = images = others = 0
    rulings = _Rulings()
    largest_image_area = 0.0
    for object_index in range(pdfium_c.FPDFPage_CountObjects(page.raw)):
        page_object = pdfium_c.FPDFPage_GetObject(page.raw, object_index)
        object_type = pdfium_c.FPDFPageObj_GetType(page_object)
        if object_type == pdfium_c.FPDF_PAGEOBJ_TEXT:
            continue
        if object_type == pdfium_c.FPDF_PAGEOBJ_PATH:
            paths += 1
            rulings.add(*_object_bounds(page_object))
        elif object_type == pdfium_c.FPDF_PAGEOBJ_IMAGE:
            images += 1
            largest_image_area = max(largest_image_area, _object_area(page_object))
        else:
            others += 1
            if object_type == pdfium_c.FPDF_PAGEOBJ_FORM:  # scanners often wrap the page image in a form
                largest_image_area = max(largest_image_area, _object_area(page_object))
    return paths, rulings, images, others, largest_image_area


def _object_bounds(page_object) -> tuple[float, float, float, float]:
    left, bottom, right, top = (pdfium_c.FS_FLOAT(), pdfium_c.FS_FLOAT(), pdfium_c.FS_FLOAT(), pdfium_c.FS_FLOAT())
    if not pdfium_c.FPDFPageObj_GetBounds(page_object, left, bottom, right, top):
        return 0.0, 0.0, 0.0, 0.0
    return left.value, bottom.value, right.value, top.value


def _object_area(page_object) -> float:
    left, bottom, right, top = _object_bounds(page_object)
    return max(0.0, right - left) * max(0.0, top - bottom)


def _layout_text(textpage: pypdfium2.PdfTextPage) -> str:
    """The page's text, one line per line, with a blank line where the vertical gap between two lines is clearly
    wider than the page's usual gap (a paragraph break, or a jump to another column), and "# " before lines
    printed clearly bigger than the page's usual size (headings)."""
    raw = textpage.get_text_bounded()
    char_count = textpage.count_chars()
    lines = raw.replace("\r\n", "\n").split("\n")
    if len(raw) != char_count or len(lines) < 2:
        # Text and character indexes do not line up (rare), so no layout: the lines as they are.
        return _clean("\n".join(lines))
    boxes: list[tuple[float, float] | None] = []
    position = 0
    for line in lines:
        first = len(line) - len(line.lstrip())
        if line.strip():
            index = position + first
            if pdfium_c.FPDFText_GetUnicode(textpage.raw, index) != ord(line[first]):
                return _clean("\n".join(lines))  # indexes drifted: better no layout than a wrong one
            _, bottom, _, top = textpage.get_charbox(index, loose=True)
            boxes.append((bottom, top))
        else:
            boxes.append(None)
        position += len(line) + 2  # PDFium separates lines with "\r\n", both counted as characters

    heights = [top - bottom for box in boxes if box for bottom, top in [box]]
    gaps = []
    previous = None
    for box in boxes:
        if box and previous:
            gaps.append(previous[0] - box[1])
        if box:
            previous = box
    usual_height = statistics.median(heights) if heights else 0.0
    usual_gap = statistics.median(gaps) if gaps else 0.0

    out: list[str] = []
    previous = None
    for line, box in zip(lines, boxes, strict=True):
        if not box:
            continue
        if previous is not None:
            gap = previous[0] - box[1]
            height = min(previous[1] - previous[0], box[1] - box[0])
            if gap > usual_gap + 0.5 * height or gap < -1.5 * height:
                out.append("")
        previous = box
        stripped = line.strip()
        is_bigger = usual_height > 0 and (box[1] - box[0]) >= HEADING_SIZE_RATIO * usual_height
        if is_bigger and 3 <= len(stripped) <= HEADING_MAX_CHARS and any(ch.isalpha() for ch in stripped):
            if out and out[-1] != "":
                out.append("")
            out.append("# " + stripped)
            out.append("")
            continue
        out.append(line.rstrip())
    return _clean("\n".join(out))


def _clean(text: str) -> str:
    text = _CONTROL_CHARACTERS.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip()


class _TableReader:
    """pdfplumber, opened only when a page first needs it (it parses the whole file in pure Python)."""

    def __init__(self, data: bytes):
        self.data = data
        self.document = None

    def find(self, index: int) -> list:
        if self.document is None:
            self.document = pdfplumber.open(io.BytesIO(self.data))
        return self.document.pages[index].find_tables()

    def close(self) -> None:
        if self.document is not None:
            self.document.close()


def _text_with_tables(document: pypdfium2.PdfDocument, index: int, layer: _PageLayer, tables: _TableReader) -> str:
    """The page with each table as "a | b | c" rows in place of its cells' loose words; "" when there is no table.

    The text around the tables is read by regions (above each table, beside it, below the last one), so nothing
    outside a table is lost. Where pdfplumber's coordinates would not map onto PDFium's (rotated pages, media boxes
    off the origin), the rows are appended to the page's text instead."""
    found = sorted(tables.find(index), key=lambda table: table.bbox[1])
    # A frame around a note or a code listing is a one-column "table": its text reads better as it is.
    extracted = [(table.bbox, table.extract()) for table in found]
    rendered = [
        (bbox, _table_rows(rows)) for bbox, rows in extracted if len(rows) >= 2 and max(map(len, rows), default=0) >= 2
    ]
    rendered = [(bbox, rows) for bbox, rows in rendered if rows]
    if not rendered:
        return ""
    if not layer.plain_geometry:
        return layer.text + "\n\n" + "\n\n".join(rows for _, rows in rendered)
    parts: list[str] = []
    height = layer.height
    with pdfium_lock:
        page = document[index]
        textpage = page.get_textpage()
        try:
            width = page.get_width()

            def region(left: float, top: float, right: float, bottom: float) -> str:
                # pdfplumber measures from the page's top edge, PDFium from its bottom edge.
                if right <= left or bottom <= top:
                    return ""
                return textpage.get_text_bounded(left, height - bottom, right, height - top)

            cursor = 0.0
            for (x0, top, x1, bottom), rows in rendered:
                top = max(top, cursor)
                parts.append(region(0, cursor, width, top))
                parts.append(region(0, top, x0, bottom))
                parts.append(rows)
                parts.append(region(x1, top, width, bottom))
                cursor = max(cursor, bottom)
            parts.append(region(0, cursor, width, height))
        finally:
            textpage.close()
            page.close()
    return "\n\n".join(cleaned for part in parts if (cleaned := _clean(part)))


def _table_rows(rows: list[list[str | None]]) -> str:
    lines = []
    for row in rows:
        cells = [" ".join((cell or "").split()) for cell in row]
        if any(cells):
            lines.append(" | ".join(cells))
    return "\n".join(lines)


def _render_page(document: pypdfium2.PdfDocument, index: int) -> tuple[Image.Image, int]:
    """The page as a greyscale image, and its resolution in dpi."""
    page = document[index]
    try:
        width, height = page.get_size()
        scale = settings.RAG_OCR_DPI / 72
        pixels = width * scale * height * scale
        if pixels > OCR_MAX_PIXELS:
            scale *= (OCR_MAX_PIXELS / pixels) ** 0.5
        bitmap = page.render(scale=scale, grayscale=True)
        try:
            return bitmap.to_pil().copy(), max(1, round(scale * 72))  # a copy: the bitmap's buffer dies with it
        finally:
            bitmap.close()
    finally:
        page.close()


# --- images ------------------------------------------------------------------------------------------------------


def _extract_image(upload: Upload, progress: Progress, report: _Report) -> list[Page]:
    """Every frame of a GIF or TIFF is a page."""
    pages: list[Page] = []
    try:
        image = Image.open(io.BytesIO(upload.data))
    except (OSError, Image.DecompressionBombError):
        raise FileRejected(
            f'"{upload.name}" is damaged or incomplete, so the image cannot be read.', code="corrupt_file"
        ) from None
    with image, _OcrQueue(upload.name, pages, report) as ocr_queue:
        frame_count = getattr(image, "n_frames", 1)
        for index in range(frame_count):
            number = index + 1
            if index >= settings.RAG_MAX_OCR_PAGES:
                report.skipped_ocr.extend(range(number, frame_count + 1))
                break
            ocr_queue.wait_for_room()
            progress(f"OCR page {number} of {frame_count} in {upload.name}")
            try:
                image.seek(index)
                frame = _prepare_frame(image, exif=index == 0)
            except Exception:
                logger.warning("rag.extract: frame failed", extra={"page": number, "kind": "image"}, exc_info=True)
                report.failed.append(number)
                continue
            ocr_queue.submit(number, frame, dpi=None)
    return sorted(pages, key=lambda page: page.number)


def _prepare_frame(image: Image.Image, exif: bool) -> Image.Image:
    """Greyscale, upright, transparency flattened onto white (transparent pixels are black underneath, and
    black-on-black text would vanish), and no bigger than OCR needs."""
    frame = ImageOps.exif_transpose(image) if exif else image.copy()
    if frame.mode in ("RGBA", "LA", "PA") or (frame.mode == "P" and "transparency" in frame.info):
        rgba = frame.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        frame = Image.alpha_composite(background, rgba)
    frame = frame.convert("L")
    pixels = frame.width * frame.height
    if pixels > OCR_MAX_PIXELS:
        factor = (OCR_MAX_PIXELS / pixels) ** 0.5
        frame = frame.resize((max(1, int(frame.width * factor)), max(1, int(frame.height * factor))), Image.LANCZOS)
    return frame


# --- OCR ---------------------------------------------------------------------------------------------------------


class _OcrTimeout(Exception):
    pass


class _OcrQueue:
    """Tesseract on up to RAG_OCR_WORKERS pages at once. The caller waits for room before it announces and renders
    the next page, so progress messages follow the real progress and only a few rendered pages are in memory.
    Finished pages land in `pages` and `report`; leaving the block waits for the rest (or, on an error, cancels
    what has not started)."""

    def __init__(self, name: str, pages: list[Page], report: "_Report"):
        self.name = name
        self.pages = pages
        self.report = report
        self.workers = settings.RAG_OCR_WORKERS
        self.executor: ThreadPoolExecutor | None = None
        self.pending: deque[tuple[int, Future]] = deque()

    def __enter__(self) -> "_OcrQueue":
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        try:
            if exc_type is None:
                while self.pending:
                    self._collect_oldest()
        finally:
            if self.executor is not None:
                self.executor.shutdown(wait=True, cancel_futures=True)

    def wait_for_room(self) -> None:
        while len(self.pending) >= self.workers:
            self._collect_oldest()

    def submit(self, number: int, image: Image.Image, dpi: int | None) -> None:
        if self.executor is None:
            self.executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="rag-ocr")
        self.pending.append((number, self.executor.submit(_ocr, image, self.name, dpi)))

    def _collect_oldest(self) -> None:
        number, future = self.pending.popleft()
        try:
            text = future.result()
        except FileRejected:
            raise
        except _OcrTimeout:
            self.report.timed_out.append(number)
            return
        except Exception:
            logger.warning("rag.extract: OCR failed", extra={"page": number}, exc_info=True)
            self.report.failed.append(number)
            return
        _add_page(self.pages, self.report, number, text, ocr=True)


def _ocr(image: Image.Image, name: str, dpi: int | None) -> str:
    """The text Tesseract reads in `image` (greyscale). `dpi`, when known (rendered PDF pages), saves Tesseract
    guessing the resolution."""
    buffer = io.BytesIO()
    image.save(buffer, format="PPM")  # uncompressed PGM: nothing to encode or decode on either side of the pipe
    command = [pytesseract.pytesseract.tesseract_cmd, "stdin", "stdout", "-l", OCR_LANGUAGE, *OCR_CONFIG.split()]
    if dpi:
        command += ["--dpi", str(dpi)]
    try:
        completed = subprocess.run(
            command,
            input=buffer.getvalue(),
            capture_output=True,
            timeout=OCR_TIMEOUT_SECONDS,
            env={**os.environ, "OMP_THREAD_LIMIT": "1"},
            check=False,
        )
    except (FileNotFoundError, PermissionError, NotADirectoryError):
        raise _ocr_unavailable(name) from None
    except subprocess.TimeoutExpired:
        raise _OcrTimeout() from None
    if completed.returncode != 0:
        error = completed.stderr.decode("utf-8", errors="replace")
        if "traineddata" in error or "load any languages" in error or "Failed loading language" in error:
            raise _ocr_unavailable(name)
        raise RuntimeError(f"tesseract exited with {completed.returncode}: {error[-300:]}")
    return _clean(completed.stdout.decode("utf-8", errors="replace"))


def _ocr_unavailable(name: str) -> FileRejected:
    logger.error("rag.extract: Tesseract is not installed or has no language data; OCR is unavailable")
    return FileRejected(
        f'"{name}" needs text recognition (OCR), which is not available on this server right now.',
        code="ocr_unavailable",
        status=503,
    )


# --- plain text and Markdown ---------------------------------------------------------------------------------------


def _extract_text(upload: Upload) -> list[Page]:
    """One page, or one per form feed (how plain-text page breaks are written)."""
    text = upload.data.decode("utf-8-sig", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
    return [
        Page(number=number, text=_CONTROL_CHARACTERS.sub("", chunk).strip("\n"))
        for number, chunk in enumerate(text.split("\f"), start=1)
    ]
