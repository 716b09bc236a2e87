"""Test helpers that generate the files RAG accepts or refuses, in memory, with fpdf2 and Pillow.

Nothing here touches the disk or the network, so any app's tests (and bench/) can import them. Text drawn into
images uses Pillow's built-in scalable font, so OCR results do not depend on the machine's installed fonts.
"""

import io
import struct
import zipfile
import zlib
from functools import lru_cache

import pypdfium2
from fpdf import FPDF
from PIL import Image, ImageDraw, ImageFont

from testsupport.png import png_file

# fpdf2's core fonts (Helvetica…) only cover Latin-1; other characters become "?" instead of raising.
_CORE_FONT_ENCODING = "latin-1"
# Big, clear glyphs: Tesseract reads 40 px text on a white background almost perfectly.
OCR_FONT_SIZE = 40


def _latin1(text: str) -> str:
    return text.encode(_CORE_FONT_ENCODING, "replace").decode(_CORE_FONT_ENCODING)


def make_text_pdf(pages: list[str], font_size: int = 11) -> bytes:
    """A PDF with a real text layer, one page per string (an empty string makes a blank page).

    A line starting with "# " is drawn as a bold 16 pt heading, without the "#", the way a word processor would
    export a title. Text is wrapped to the page width."""
    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(auto=False)
    pdf.set_margins(15, 15, 15)
    for page_text in pages:
        pdf.add_page()
        for line in page_text.split("\n"):
            if line.startswith("# "):
                pdf.set_font("Helvetica", "B", 16)
                pdf.multi_cell(0, 8, _latin1(line[2:]), new_x="LMARGIN", new_y="NEXT")
            elif not line.strip():
                pdf.ln(font_size * 0.5)
            else:
                pdf.set_font("Helvetica", "", font_size)
                pdf.multi_cell(0, font_size * 0.45, _latin1(line), new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def make_table_pdf(rows: list[list[str]], before: str = "", after: str = "") -> bytes:
    """A one-page PDF: a paragraph, a ruled table (fpdf2 draws every cell border), another paragraph."""
    pdf = FPDF(format="A4")
    pdf.add_page()
    pdf.set_font("Helvetica", "", 11)
    if before:
        pdf.multi_cell(0, 6, _latin1(before), new_x="LMARGIN", new_y="NEXT")
        pdf.ln(4)
    with pdf.table() as table:
        for row in rows:
            table_row = table.row()
            for cell in row:
                table_row.cell(_latin1(cell))
    if after:
        pdf.ln(4)
        pdf.multi_cell(0, 6, _latin1(after), new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def make_encrypted_pdf(text: str = "Secret text", user_password: str = "secret") -> bytes:
    """A PDF that cannot be opened without `user_password`. With user_password="", only an owner password is set
    (permissions, no password to open): encrypted, yet anyone can read it."""
    pdf = FPDF()
    pdf.set_encryption(owner_password="owner-" + user_password, user_password=user_password)
    pdf.add_page()
    pdf.set_font("Helvetica", "", 12)
    pdf.multi_cell(0, 6, _latin1(text))
    return bytes(pdf.output())


def make_empty_pdf() -> bytes:
    """A well-formed PDF with zero pages (fpdf2 refuses to write one, PDFium does not)."""
    document = pypdfium2.PdfDocument.new()
    buffer = io.BytesIO()
    try:
        document.save(buffer)
    finally:
        document.close()
    return buffer.getvalue()


def render_text_image(text: str, width: int = 900, font_size: int = OCR_FONT_SIZE, margin: int = 40) -> Image.Image:
    """Black text on white, one line per "\\n", in a greyscale image just tall enough for the lines."""
    font = ImageFont.load_default(size=font_size)
    lines = [wrapped for line in text.split("\n") for wrapped in _wrap(line, font, width - 2 * margin)] if text else []
    line_height = int(font_size * 1.5)
    height = max(2 * margin + line_height * len(lines), 2 * margin + line_height)
    image = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(image)
    for index, line in enumerate(lines):
        draw.text((margin, margin + index * line_height), line, fill=0, font=font)
    return image


def _wrap(line: str, font: ImageFont.FreeTypeFont, max_width: int) -> list[str]:
    """Greedy word wrap, so no glyph is cut off at the image's edge (a cut glyph is an OCR error)."""
    wrapped: list[str] = []
    current = ""
    for word in line.split(" "):
        candidate = f"{current} {word}" if current else word
        if current and font.getlength(candidate) > max_width:
            wrapped.append(current)
            current = word
        else:
            current = candidate
    wrapped.append(current)
    return wrapped


def make_image(text: str, fmt: str = "PNG", width: int = 900) -> bytes:
    """`text` drawn into an image file of format `fmt` (PNG, JPEG, GIF, WEBP, BMP, TIFF); "" gives a blank image."""
    image = render_text_image(text, width=width)
    buffer = io.BytesIO()
    if fmt.upper() in ("JPEG", "JPG"):
        image.convert("RGB").save(buffer, format="JPEG", quality=90)
    elif fmt.upper() == "WEBP":
        image.save(buffer, format="WEBP", lossless=True)  # lossy WebP blurs small text for OCR
    else:
        image.save(buffer, format=fmt.upper())
    return buffer.getvalue()


def make_multiframe_image(frames: list[str], fmt: str = "GIF", width: int = 900) -> bytes:
    """One frame per string, in a multi-frame GIF or TIFF (every frame is padded to the same height)."""
    images = [render_text_image(text, width=width) for text in frames]
    height = max(image.height for image in images)
    padded = []
    for image in images:
        canvas = Image.new("L", (width, height), 255)
        canvas.paste(image, (0, 0))
        padded.append(canvas.convert("P") if fmt.upper() == "GIF" else canvas)
    buffer = io.BytesIO()
    extra = {"lossless": True} if fmt.upper() == "WEBP" else {}
    padded[0].save(buffer, format=fmt.upper(), save_all=True, append_images=padded[1:], **extra)
    return buffer.getvalue()


def make_scanned_pdf(pages: list[str], dpi: int = 100, font_size: int = OCR_FONT_SIZE, stamp: str = "") -> bytes:
    """A PDF whose pages are only pictures of text (no text layer), like a scanner's output: OCR is needed.

    Each page is an A4-proportioned image drawn at `dpi`; the default big glyphs (40 px at 100 dpi, ~29 pt) make
    Tesseract read it reliably and fast. For a realistic dense scan use e.g. dpi=200, font_size=33 (12 pt).
    `stamp` adds a small real text line at the bottom of each page (a Bates number, "Scanned by…")."""
    width_px, height_px = int(8.27 * dpi), int(11.69 * dpi)
    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(auto=False)
    for page_text in pages:
        pdf.add_page()
        page_image = Image.new("L", (width_px, height_px), 255)
        page_image.paste(render_text_image(page_text, width=width_px, font_size=font_size), (0, 0))
        pdf.image(page_image, x=0, y=0, w=pdf.w, h=pdf.h)
        if stamp:
            pdf.set_font("Helvetica", "", 8)
            pdf.set_xy(10, pdf.h - 10)
            pdf.cell(0, 4, _latin1(stamp))
    return bytes(pdf.output())


def zip_bytes(files: dict[str, bytes] | None = None) -> bytes:
    """A ZIP archive (what a .docx/.xlsx is, too), by default holding one small text file."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in (files or {"notes.txt": b"Hello from inside a zip."}).items():
            archive.writestr(name, data)
    return buffer.getvalue()


@lru_cache(maxsize=4)
def decompression_bomb_png(width: int = 20_000, height: int = 20_000) -> bytes:
    """A genuine, valid 1-bit PNG of width × height white pixels: a few dozen kB that would decode to hundreds
    of MB. The default (400 M pixels) is over twice Pillow's MAX_IMAGE_PIXELS, so Pillow raises
    DecompressionBombError; 10 000 × 10 000 lands between the limits, where Pillow only warns."""
    compressor = zlib.compressobj(9)
    row = b"\x00" + b"\xff" * ((width + 7) // 8)  # filter byte "none", then the packed bits
    rows_per_block = 256
    parts = []
    for start in range(0, height, rows_per_block):
        parts.append(compressor.compress(row * min(rows_per_block, height - start)))
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, greyscale
    return png_file(header, b"".join(parts))


def merge_pdfs(*documents: bytes) -> bytes:
    """One PDF with the pages of each document in turn (e.g. typed pages beside scanned ones)."""
    merged = pypdfium2.PdfDocument.new()
    for data in documents:
        source = pypdfium2.PdfDocument(data)
        merged.import_pages(source)
        source.close()
    buffer = io.BytesIO()
    merged.save(buffer)
    merged.close()
    return buffer.getvalue()
