"""Every kind of bad input is refused with a clear message naming the file (and a 4xx status, never a 500)."""

import pytest
from django.test import override_settings
from PIL import Image

from rag.extract import extract
from rag.files import ACCEPTED_TYPES, check_upload, check_uploads
from rag.types import FileRejected
from testsupport import files as testing


def rejected(name: str, data: bytes) -> FileRejected:
    with pytest.raises(FileRejected) as caught:
        check_upload(name, data)
    error = caught.value
    assert name.rsplit("/", 1)[-1] in error.message
    assert 400 <= error.status < 500
    return error


# --- PDFs ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"%PDF-1.7\nthis is not really a PDF at all",
        testing.make_text_pdf(["Hello"] * 3)[:300],  # cut short in transfer
    ],
    ids=["garbage", "truncated"],
)
def test_corrupt_pdf(data):
    error = rejected("broken.pdf", data)
    assert error.code == "corrupt_file"
    assert "damaged" in error.message


def test_encrypted_pdf():
    error = rejected("secret.pdf", testing.make_encrypted_pdf())
    assert error.code == "encrypted_pdf"
    assert "password" in error.message


def test_empty_pdf():
    error = rejected("nothing.pdf", testing.make_empty_pdf())
    assert error.code == "empty_pdf"
    assert "is empty" in error.message


def test_empty_pdf_right_after_an_encrypted_one_is_still_called_empty():
    """PDFium leaves its last error code in place when it refuses a zero-page PDF; a stale "password" code from
    the previous file must not make an empty PDF look encrypted."""
    rejected("secret.pdf", testing.make_encrypted_pdf())
    assert rejected("nothing.pdf", testing.make_empty_pdf()).code == "empty_pdf"


def test_pdf_with_no_text_at_all_is_refused_at_extraction():
    upload = check_upload("blank.pdf", testing.make_text_pdf(["", ""]))
    with pytest.raises(FileRejected) as caught:
        extract(upload)
    assert caught.value.code == "no_text"
    assert '"blank.pdf" has no readable text' in caught.value.message


# --- not an accepted type -----------------------------------------------------------------------------------------


def test_png_that_is_really_a_zip():
    error = rejected("photo.png", testing.zip_bytes())
    assert error.code == "unsupported_type"
    assert "ZIP archive" in error.message
    assert "not a PNG image" in error.message
    assert ACCEPTED_TYPES in error.message


@pytest.mark.parametrize(
    ("name", "data", "described_as"),
    [
        ("letter.docx", testing.zip_bytes({"[Content_Types].xml": b"<x/>", "word/document.xml": b"<w/>"}), "Word"),
        ("sheet.xlsx", testing.zip_bytes({"[Content_Types].xml": b"<x/>", "xl/workbook.xml": b"<w/>"}), "Excel"),
        ("old.doc", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 512, "Office"),
        ("tool", b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 64, "program"),
        ("setup.exe", b"MZ\x90\x00\x03\x00\x00\x00" + b"\x00" * 64, "program"),
        ("archive.tar.gz", b"\x1f\x8b\x08\x00" + b"\x00" * 32, "gzip"),
        ("clip.webm", b"\x1a\x45\xdf\xa3" + b"\x00" * 32, "not a file type we can read"),
    ],
)
def test_other_file_types_are_refused_and_named(name, data, described_as):
    error = rejected(name, data)
    assert error.code == "unsupported_type"
    assert described_as in error.message
    assert ACCEPTED_TYPES in error.message


def test_a_webp_header_with_no_image_behind_it_is_refused_as_damaged():
    error = rejected("image.webp", b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 32)
    assert error.code == "corrupt_file"


def test_markdown_name_on_binary_bytes_is_refused():
    error = rejected("notes.md", b"\x00\x01\x02\x03binary\x00stuff")
    assert error.code == "unsupported_type"


def test_text_that_is_not_utf8_gets_a_specific_message():
    error = rejected("legacy.txt", "Café crème, déjà vu".encode("latin-1"))
    assert "UTF-8" in error.message


def test_empty_file():
    error = rejected("empty.txt", b"")
    assert error.code == "empty_file"
    assert "empty" in error.message


def test_blank_text_file():
    assert rejected("blank.md", b"   \n\n\t\n").code == "empty_file"


# --- images ---------------------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize(
    ("width", "height"),
    [(20_000, 20_000), (10_000, 10_000)],
    ids=["over-twice-the-limit-pillow-raises", "over-the-limit-pillow-only-warns"],
)
def test_decompression_bomb_png(width, height):
    data = testing.decompression_bomb_png(width, height)
    assert len(data) < 200_000  # small on disk, hundreds of megabytes decoded
    error = rejected("bomb.png", data)
    assert error.code == "image_too_large"
    assert "too many pixels" in error.message


def test_the_pixel_limit_is_pillows(monkeypatch):
    image = testing.make_image("Hello")
    assert check_upload("small.png", image)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    assert rejected("small.png", image).code == "image_too_large"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "TIFF"])
def test_truncated_image(fmt):
    data = testing.make_image("Hello there", fmt)
    error = rejected(f"cut.{fmt.lower()}", data[: len(data) // 2])
    assert error.code == "corrupt_file"


def test_image_header_followed_by_garbage():
    assert rejected("fake.png", b"\x89PNG\r\n\x1a\n" + b"garbage" * 20).code == "corrupt_file"


def test_blank_image_has_no_readable_text():
    upload = check_upload("white.png", testing.make_image(""))
    with pytest.raises(FileRejected) as caught:
        extract(upload)
    assert caught.value.code == "no_text"
    assert "white.png" in caught.value.message


# --- sizes and counts ------------------------------------------------------------------------------------------------


def test_default_limits_are_the_issues():
    from django.conf import settings

    assert settings.RAG_MAX_FILE_BYTES == 5 * 1024 * 1024
    assert settings.RAG_MAX_REQUEST_BYTES == 10 * 1024 * 1024


def test_file_over_the_default_limit():
    error = rejected("huge.txt", b"a" * (5 * 1024 * 1024 + 1))
    assert (error.code, error.status) == ("file_too_large", 413)
    assert "5 MB" in error.message


@override_settings(RAG_MAX_FILE_BYTES=1000)
def test_file_size_limit_comes_from_settings():
    assert check_upload("exact.txt", b"a" * 1000).kind == "text"
    error = rejected("over.txt", b"a" * 1001)
    assert (error.code, error.status) == ("file_too_large", 413)


def test_oversize_pdf_is_refused_before_it_is_opened():
    error = rejected("big.pdf", b"%PDF-1.7\n" + b"0" * (5 * 1024 * 1024))
    assert error.code == "file_too_large"


def test_request_over_the_total_limit():
    files = [(f"part{index}.txt", b"a" * (4 * 1024 * 1024)) for index in range(3)]
    with pytest.raises(FileRejected) as caught:
        check_uploads(files, max_files=3)
    assert (caught.value.code, caught.value.status) == ("request_too_large", 413)
    assert "10 MB" in caught.value.message


def test_one_oversize_file_in_a_request_is_named():
    with pytest.raises(FileRejected) as caught:
        check_uploads([("ok.txt", b"fine"), ("huge.txt", b"a" * (6 * 1024 * 1024))], max_files=2)
    assert caught.value.code == "file_too_large"
    assert "huge.txt" in caught.value.message


def test_too_many_files_for_the_free_tier():
    with pytest.raises(FileRejected) as caught:
        check_uploads([("a.txt", b"one"), ("b.txt", b"two")], max_files=1)
    assert caught.value.code == "too_many_files"
    assert "Your plan allows 1 file per message" in caught.value.message


def test_too_many_files_is_checked_before_anything_else():
    """The count is the cheapest check and the clearest message; bad files behind it do not matter yet."""
    files = [("a.png", testing.zip_bytes())] * 4
    with pytest.raises(FileRejected) as caught:
        check_uploads(files, max_files=3)
    assert caught.value.code == "too_many_files"
    assert "Your plan allows 3 files per message" in caught.value.message


def test_a_plan_without_files():
    with pytest.raises(FileRejected) as caught:
        check_uploads([("a.txt", b"one")], max_files=0)
    assert caught.value.code == "too_many_files"


def test_a_bad_file_among_good_ones_is_named():
    with pytest.raises(FileRejected) as caught:
        check_uploads([("good.txt", b"fine"), ("photo.png", testing.zip_bytes())], max_files=2)
    assert "photo.png" in caught.value.message
