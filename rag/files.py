"""File intake: decide what a file is from its bytes and refuse what we cannot use, before any quota is charged.

Everything here is cheap (magic numbers, opening the container, decoding image headers); the expensive work
(text extraction, OCR) happens later in `rag.extract`. Every refusal is a `FileRejected` whose message names the
file and says what to do, so the pipeline can show it as is.
"""

import hashlib
import io
import re
import struct
import threading

import pdfplumber
import pypdfium2
import pypdfium2.raw as pdfium_c
from django.conf import settings
from PIL import Image

from rag.types import FileRejected, Upload

ACCEPTED_TYPES = "PDF, JPG, PNG, GIF, WebP, BMP, TIFF, plain text and Markdown"

# PDFium is not thread-safe, not even across different documents: every call into pypdfium2 (here and in
# rag.extract, and anywhere else in the project) must hold this lock. Hold it per page, never around OCR.
pdfium_lock = threading.RLock()

MARKDOWN_SUFFIXES = (".md", ".markdown", ".mdown", ".mkd")

# Magic numbers of the image types we accept: (prefix, kind label, Pillow format, MIME type).
_IMAGE_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG", "image/png"),
    (b"\xff\xd8\xff", "JPEG", "image/jpeg"),
    (b"GIF87a", "GIF", "image/gif"),
    (b"GIF89a", "GIF", "image/gif"),
    (b"II*\x00", "TIFF", "image/tiff"),
    (b"MM\x00*", "TIFF", "image/tiff"),
)
# WebP is a RIFF container: "RIFF", the size (4 bytes), then "WEBP".
_WEBP_MAGIC = (b"RIFF", b"WEBP")
# "BM" alone is too weak a signature (plain text may start with it); a real BMP also has a known DIB header size.
_BMP_DIB_HEADER_SIZES = {12, 16, 40, 52, 56, 64, 108, 124}

# Only to say what a refused file is; anything not listed is "not a type we can read".
_KNOWN_OTHER_TYPES = (
    (b"PK\x03\x04", "a ZIP archive"),
    (b"PK\x05\x06", "a ZIP archive"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an old-style Microsoft Office document"),
    (b"\x7fELF", "a program (executable)"),
    (b"MZ", "a Windows program (executable)"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"Rar!", "a RAR archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"{\\rtf", "an RTF document"),
)
_OFFICE_ZIP_MEMBERS = (
    (b"word/", "a Word document"),
    (b"xl/", "an Excel workbook"),
    (b"ppt/", "a PowerPoint presentation"),
)
_NAME_SUFFIX_LABELS = {
    ".pdf": "a PDF",
    ".png": "a PNG image",
    ".jpg": "a JPEG image",
    ".jpeg": "a JPEG image",
    ".gif": "a GIF image",
    ".webp": "a WebP image",
    ".bmp": "a BMP image",
    ".tif": "a TIFF image",
    ".tiff": "a TIFF image",
    ".txt": "a text file",
    ".md": "a Markdown file",
    ".markdown": "a Markdown file",
}

# Control characters other than tab, newlines and form feed: a file full of them is binary even if it decodes.
_CONTROL_CHARACTERS = re.compile(r"[\x01-\x08\x0b\x0e-\x1f\x7f]")
_MARKDOWN_SIGNS = (
    re.compile(r"^#{1,6}[ \t]+\S", re.MULTILINE),  # ATX heading
    re.compile(r"^[ \t]*(```|~~~)", re.MULTILINE),  # fenced code
    re.compile(r"\[[^\]\n]+\]\([^)\s]+\)"),  # [link](target)
    re.compile(r"^[ \t]*([-*+]|\d+\.)[ \t]+\S", re.MULTILINE),  # list item
    re.compile(r"^\|?[ \t]*:?-{3,}:?[ \t]*\|", re.MULTILINE),  # table separator row
    re.compile(r"(\*\*|__)[^*_\n]+\1"),  # bold
    re.compile(r"^>[ \t]+\S", re.MULTILINE),  # block quote
)
_MARKDOWN_SNIFF_CHARS = 64 * 1024


def display_name(name: str) -> str:
    """The name as we show it: the last path component (browsers may send C:\\fakepath\\…), without control
    characters, at most 120 characters."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = " ".join(_CONTROL_CHARACTERS.sub("", base.replace("\x00", "")).split())
    if len(base) > 120:
        base = base[:100] + "…" + base[-19:]
    return base or "unnamed file"


def format_bytes(size: int) -> str:
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):.3g} MB"
    if size >= 1024:
        return f"{size / 1024:.3g} kB"
    return f"{size} bytes"


def check_upload(name: str, data: bytes) -> Upload:
    """Accept one file or raise FileRejected. The type comes from the bytes; the name only tells Markdown from
    plain text (and appears in messages)."""
    name = display_name(name)
    limit = settings.RAG_MAX_FILE_BYTES
    if len(data) > limit:
        raise FileRejected(
            f'"{name}" is {format_bytes(len(data))}; the limit is {format_bytes(limit)} per file.',
            code="file_too_large",
            status=413,
        )
    if not data:
        raise FileRejected(f'"{name}" is empty (0 bytes).', code="empty_file")

    if b"%PDF-" in data[:1024]:  # readers accept a little junk before the header, and so do we
        _check_pdf(name, data)
        return _upload(name, "pdf", "application/pdf", data)

    image_type = _sniff_image(data)
    if image_type:
        pillow_format, mime = image_type
        _check_image(name, data, pillow_format)
        return _upload(name, "image", mime, data)

    text = _decode_text(data)
    if text is None:
        raise FileRejected(_unsupported_message(name, data), code="unsupported_type")
    if not text.strip():
        raise FileRejected(f'"{name}" has no text in it (only blank space).', code="empty_file")
    if name.lower().endswith(MARKDOWN_SUFFIXES) or looks_like_markdown(text):
        return _upload(name, "markdown", "text/markdown", data)
    return _upload(name, "text", "text/plain", data)


def check_uploads(files: list[tuple[str, bytes]], max_files: int) -> list[Upload]:
    """Accept every file of one request, or raise FileRejected for the first problem: too many files for the
    user's plan, a file or the whole request too big, then each file's own checks."""
    if len(files) > max_files:
        if max_files <= 0:
            allowed = "Your plan does not include file uploads"
        else:
            allowed = f"Your plan allows {max_files} file{'' if max_files == 1 else 's'} per message"
        raise FileRejected(f"{allowed}; this message has {len(files)}.", code="too_many_files")
    file_limit = settings.RAG_MAX_FILE_BYTES
    for name, data in files:  # the precise per-file message first, it says which file to drop
        if len(data) > file_limit:
            check_upload(name, data)
    total = sum(len(data) for _, data in files)
    request_limit = settings.RAG_MAX_REQUEST_BYTES
    if total > request_limit:
        raise FileRejected(
            f"These files add up to {format_bytes(total)}; the limit is {format_bytes(request_limit)} per message.",
            code="request_too_large",
            status=413,
        )
    return [check_upload(name, data) for name, data in files]


def looks_like_markdown(text: str) -> bool:
    """At least two different Markdown constructs (one could be chance: a "- " list in a plain note)."""
    sample = text[:_MARKDOWN_SNIFF_CHARS]
    return sum(1 for sign in _MARKDOWN_SIGNS if sign.search(sample)) >= 2


def _upload(name: str, kind: str, mime: str, data: bytes) -> Upload:
    return Upload(name=name, kind=kind, mime=mime, data=data, sha256=hashlib.sha256(data).hexdigest())


def _check_pdf(name: str, data: bytes) -> None:
    with pdfium_lock:
        try:
            document = pypdfium2.PdfDocument(data)
        except pypdfium2.PdfiumError as error:
            _raise_for_unopenable_pdf(name, data, error.err_code)
        try:
            page_count = len(document)
        finally:
            document.close()
    if page_count == 0:
        raise FileRejected(f'"{name}" is empty: the PDF has no pages.', code="empty_pdf")


def _raise_for_unopenable_pdf(name: str, data: bytes, err_code: int | None) -> None:
    # PDFium's last-error code can be stale (it is not reset on every failure: a PDF with zero pages fails with
    # whatever the previous failure left), so a password error only counts when the file really is encrypted.
    if err_code == pdfium_c.FPDF_ERR_PASSWORD and b"/Encrypt" in data:
        raise FileRejected(
            f'"{name}" is password-protected. Remove the password (for example, print it to a new PDF) and upload '
            "it again.",
            code="encrypted_pdf",
        )
    if err_code == pdfium_c.FPDF_ERR_SECURITY:
        raise FileRejected(f'"{name}" is encrypted in a way we cannot open.', code="encrypted_pdf")
    if err_code not in (pdfium_c.FPDF_ERR_FORMAT, pdfium_c.FPDF_ERR_FILE) and _pdf_has_no_pages(data):
        raise FileRejected(f'"{name}" is empty: the PDF has no pages.', code="empty_pdf")
    raise FileRejected(f'"{name}" is damaged or is not a complete PDF, so it cannot be opened.', code="corrupt_file")


def _pdf_has_no_pages(data: bytes) -> bool:
    """A second opinion from pdfminer (pure Python, slower) for the rare files PDFium refuses without saying why:
    PDFium will not load a structurally valid PDF that has zero pages."""
    try:
        with pdfplumber.open(io.BytesIO(data)) as document:
            return len(document.pages) == 0
    except Exception:  # noqa: BLE001 - any parser failure means "not an empty PDF": the caller says corrupt
        return False


def _sniff_image(data: bytes) -> tuple[str, str] | None:
    for signature, pillow_format, mime in _IMAGE_SIGNATURES:
        if data.startswith(signature):
            return pillow_format, mime
    if data.startswith(_WEBP_MAGIC[0]) and data[8:12] == _WEBP_MAGIC[1]:
        return "WEBP", "image/webp"
    if data.startswith(b"BM") and len(data) >= 18 and int.from_bytes(data[14:18], "little") in _BMP_DIB_HEADER_SIZES:
        return "BMP", "image/bmp"
    return None


def _check_image(name: str, data: bytes, pillow_format: str) -> None:
    """Open the image and decode every frame we would OCR: a truncated or corrupt file fails here, not later.
    Pillow's decompression-bomb protection raises for more than twice MAX_IMAGE_PIXELS and only warns above
    MAX_IMAGE_PIXELS; both are refused, the second by our own size check."""
    too_many_pixels = FileRejected(
        f'"{name}" has too many pixels to process safely (the limit is {Image.MAX_IMAGE_PIXELS or 0:,} pixels). '
        "Scale it down and upload it again.",
        code="image_too_large",
    )
    corrupt = FileRejected(f'"{name}" is damaged or incomplete, so the image cannot be read.', code="corrupt_file")
    try:
        with Image.open(io.BytesIO(data), formats=[pillow_format]) as image:
            frame_count = getattr(image, "n_frames", 1)
            for index in range(min(frame_count, settings.RAG_MAX_OCR_PAGES)):
                image.seek(index)
                limit = Image.MAX_IMAGE_PIXELS
                if limit and image.width * image.height > limit:
                    raise too_many_pixels
                if image.format == "JPEG":
                    # Decoding at 1/8 scale still reads the whole stream (so truncation shows) at a tiny cost.
                    image.draft("L", (max(1, image.width // 8), max(1, image.height // 8)))
                image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise too_many_pixels from None
    except FileRejected:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, Image.UnidentifiedImageError):
        raise corrupt from None


def _decode_text(data: bytes) -> str | None:
    """The text, if `data` is UTF-8 text; None if it is binary."""
    if b"\x00" in data:
        return None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    if len(_CONTROL_CHARACTERS.findall(text)) > max(8, len(text) // 20):
        return None
    return text


def _unsupported_message(name: str, data: bytes) -> str:
    what = None
    for signature, label in _KNOWN_OTHER_TYPES:
        if data.startswith(signature):
            what = label
            break
    if what == "a ZIP archive":
        what = next((label for member, label in _OFFICE_ZIP_MEMBERS if member in data), what)
    if what is None and data[4:8] == b"ftyp":
        what = "an HEIC image or a video" if data[8:12] in (b"heic", b"heix", b"mif1", b"msf1") else "a video"
    if what is None and b"\x00" not in data[:8192] and _mostly_ascii(data[:8192]):
        return f'"{name}" is a text file that is not UTF-8 encoded. Save it as UTF-8 and upload it again.'

    claimed = _NAME_SUFFIX_LABELS.get("." + name.rsplit(".", 1)[-1].lower()) if "." in name else None
    description = f"is {what}" if what else "is not a file type we can read"
    if claimed and what:
        description += f", not {claimed} as its name suggests"
    return f'"{name}" {description}. Accepted types: {ACCEPTED_TYPES}.'


def _mostly_ascii(sample: bytes) -> bool:
    return sum(1 for byte in sample if byte >= 0x80) <= len(sample) // 4
