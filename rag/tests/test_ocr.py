"""OCR with Tesseract: scanned PDF pages and every image type, with progress messages. Small, clear images keep
each recognition to a fraction of a second."""

import io

import pytesseract
import pytest
from django.test import override_settings
from PIL import Image

from rag import extract as extract_module
from rag.extract import extract
from rag.files import check_upload
from rag.types import FileRejected
from testsupport import files as testing


def page_texts(extraction) -> list[tuple[int, str, bool]]:
    return [(page.number, page.text, page.ocr) for page in extraction.pages]


def test_scanned_pdf_is_read_with_ocr_and_reports_progress_per_page():
    data = testing.make_scanned_pdf(["Door code: 4471", "Wifi password: mango"])
    messages = []
    extraction = extract(check_upload("scan.pdf", data), progress=messages.append)
    assert page_texts(extraction) == [(1, "Door code: 4471", True), (2, "Wifi password: mango", True)]
    assert messages == ["OCR page 1 of 2 in scan.pdf", "OCR page 2 of 2 in scan.pdf"]


def test_only_pages_without_a_text_layer_are_ocred():
    scanned = testing.make_scanned_pdf(["Scanned page"])
    typed = testing.make_text_pdf(["Typed page"])
    data = testing.merge_pdfs(typed, scanned)
    messages = []
    extraction = extract(check_upload("mixed.pdf", data), progress=messages.append)
    assert page_texts(extraction) == [(1, "Typed page", False), (2, "Scanned page", True)]
    assert messages == ["OCR page 2 of 2 in mixed.pdf"]


def test_scan_with_a_small_text_stamp_is_still_ocred():
    """A scanner's "page 1" stamp is a real text layer, but the page's content is the picture underneath."""
    data = testing.make_scanned_pdf(["Invoice total: 1234 EUR"], stamp="Scan 0001")
    page = extract(check_upload("stamped.pdf", data)).pages[0]
    assert page.ocr
    assert "Invoice total: 1234 EUR" in page.text


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF", "GIF", "WEBP", "BMP"])
def test_each_image_type_is_read(fmt):
    messages = []
    name = f"receipt.{fmt.lower()}"
    extraction = extract(check_upload(name, testing.make_image("Invoice total: 1234 EUR", fmt)), messages.append)
    assert page_texts(extraction) == [(1, "Invoice total: 1234 EUR", True)]
    assert messages == [f"OCR page 1 of 1 in {name}"]


@pytest.mark.parametrize("fmt", ["GIF", "TIFF", "WEBP"])
def test_each_frame_of_a_multi_frame_image_is_a_page(fmt):
    data = testing.make_multiframe_image(["First frame", "Second frame"], fmt)
    messages = []
    extraction = extract(check_upload(f"frames.{fmt.lower()}", data), messages.append)
    assert page_texts(extraction) == [(1, "First frame", True), (2, "Second frame", True)]
    assert messages == [f"OCR page 1 of 2 in frames.{fmt.lower()}", f"OCR page 2 of 2 in frames.{fmt.lower()}"]


def test_transparent_png_text_is_read():
    """Transparent pixels are black underneath; flattened naively, black text on them would vanish."""
    mask = testing.render_text_image("Door code: 4471")
    image = Image.new("RGBA", mask.size, (0, 0, 0, 0))
    image.putalpha(mask.point(lambda value: 255 - value))  # opaque black where the text is, transparent elsewhere
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    assert extract(check_upload("sticker.png", buffer.getvalue())).pages[0].text == "Door code: 4471"


def test_missing_tesseract_is_a_clear_refusal(monkeypatch):
    monkeypatch.setattr(pytesseract.pytesseract, "tesseract_cmd", "/nonexistent/tesseract")
    with pytest.raises(FileRejected) as caught:
        extract(check_upload("scan.png", testing.make_image("Hello")))
    assert caught.value.code == "ocr_unavailable"
    assert '"scan.png" needs text recognition (OCR)' in caught.value.message


def test_missing_tesseract_does_not_matter_for_text_pdfs(monkeypatch):
    monkeypatch.setattr(pytesseract.pytesseract, "tesseract_cmd", "/nonexistent/tesseract")
    assert extract(check_upload("typed.pdf", testing.make_text_pdf(["Typed"]))).pages[0].text == "Typed"


@override_settings(RAG_OCR_WORKERS=1)
def test_a_failing_ocr_page_is_noted_and_the_others_are_kept(monkeypatch):
    real_ocr = extract_module._ocr
    calls = []

    def fail_first(image, name, dpi):
        calls.append(name)
        if len(calls) == 1:
            raise RuntimeError("tesseract exited with 1")
        return real_ocr(image, name, dpi)

    monkeypatch.setattr(extract_module, "_ocr", fail_first)
    extraction = extract(check_upload("scan.pdf", testing.make_scanned_pdf(["Lost page", "Kept page"])))
    assert page_texts(extraction) == [(2, "Kept page", True)]
    assert extraction.notes == ["page 1 could not be read and was skipped"]


def test_ocr_timeout_is_noted(monkeypatch):
    monkeypatch.setattr(extract_module, "OCR_TIMEOUT_SECONDS", 0.001)
    with pytest.raises(FileRejected) as caught:
        extract(check_upload("slow.png", testing.make_image("Hello")))
    assert caught.value.code == "no_text"
    assert "took too long" in caught.value.message


@override_settings(RAG_MAX_OCR_PAGES=1)
def test_ocr_stops_at_the_page_limit_and_says_so():
    messages = []
    extraction = extract(
        check_upload("long.pdf", testing.make_scanned_pdf(["First page", "Second page"])), messages.append
    )
    assert page_texts(extraction) == [(1, "First page", True)]
    assert messages == ["OCR page 1 of 2 in long.pdf"]
    assert extraction.notes == ["page 2 was not read: text recognition stops after 1 page per file"]


def test_an_exception_from_progress_cancels_the_extraction():
    class Cancelled(Exception):
        pass

    def cancel(message):
        raise Cancelled(message)

    with pytest.raises(Cancelled):
        extract(check_upload("scan.pdf", testing.make_scanned_pdf(["One", "Two"])), progress=cancel)

