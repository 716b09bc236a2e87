"""Every accepted type is recognised from its bytes, whatever the file is called."""

import hashlib
import io

import pytest
from PIL import Image

from rag.extract import extract
from rag.files import check_upload, check_uploads, looks_like_markdown
from rag.types import FileRejected
from testsupport import files as testing


@pytest.mark.parametrize(
    ("fmt", "mime"),
    [
        ("PNG", "image/png"),
        ("JPEG", "image/jpeg"),
        ("GIF", "image/gif"),
        ("WEBP", "image/webp"),
        ("BMP", "image/bmp"),
        ("TIFF", "image/tiff"),
    ],
)
def test_each_image_type_is_recognised(fmt, mime):
    upload = check_upload(f"picture.{fmt.lower()}", testing.make_image("Hello", fmt))
    assert (upload.kind, upload.mime) == ("image", mime)


def test_big_endian_tiff_is_recognised():
    buffer = io.BytesIO()
    Image.new("I;16B", (40, 20), 1000).save(buffer, format="TIFF")
    assert buffer.getvalue()[:4] == b"MM\x00*"
    assert check_upload("scan.tif", buffer.getvalue()).mime == "image/tiff"


def test_multi_frame_images_are_accepted():
    assert check_upload("anim.gif", testing.make_multiframe_image(["one", "two"], "GIF")).mime == "image/gif"
    assert check_upload("pages.tiff", testing.make_multiframe_image(["one", "two"], "TIFF")).mime == "image/tiff"
    assert check_upload("anim.webp", testing.make_multiframe_image(["one", "two"], "WEBP")).mime == "image/webp"


def test_a_truncated_webp_is_refused_as_damaged_not_as_another_type():
    webp = testing.make_image("Hello", "WEBP")
    with pytest.raises(FileRejected) as caught:
        check_upload("photo.webp", webp[: len(webp) // 2])
    assert caught.value.code == "corrupt_file"
    assert "damaged or incomplete" in caught.value.message


def test_pdf_is_recognised():
    upload = check_upload("report.pdf", testing.make_text_pdf(["Hello"]))
    assert (upload.kind, upload.mime) == ("pdf", "application/pdf")


def test_pdf_with_bytes_before_the_header_is_accepted():
    upload = check_upload("mail-attachment.pdf", b"\r\n\r\n" + testing.make_text_pdf(["Hello"]))
    assert upload.kind == "pdf"


def test_plain_text_is_recognised():
    upload = check_upload("notes.txt", "Just a few notes.\nNothing fancy — café.".encode())
    assert (upload.kind, upload.mime) == ("text", "text/plain")


def test_utf8_text_with_a_byte_order_mark_is_text():
    assert check_upload("bom.txt", b"\xef\xbb\xbfHello").kind == "text"


def test_markdown_by_name():
    upload = check_upload("README.md", b"Plain words, but the name says Markdown.")
    assert (upload.kind, upload.mime) == ("markdown", "text/markdown")
    assert check_upload("notes.markdown", b"More words.").kind == "markdown"


def test_markdown_by_content():
    text = b"# Title\n\nSome **bold** text and a [link](https://example.com).\n\n- one\n- two\n"
    upload = check_upload("notes.txt", text)
    assert upload.kind == "markdown"


def test_text_with_a_single_list_is_not_markdown():
    assert not looks_like_markdown("Shopping:\n- milk\n- eggs\n")
    assert looks_like_markdown("# Shopping\n\n- milk\n- eggs\n")


@pytest.mark.parametrize(
    ("name", "data", "kind", "mime"),
    [
        ("report.pdf", testing.make_image("Hello", "PNG"), "image", "image/png"),
        ("photo.jpg", testing.make_text_pdf(["Hello"]), "pdf", "application/pdf"),
        ("image.png", b"Only text in here.", "text", "text/plain"),
        ("no-extension", testing.make_image("Hello", "GIF"), "image", "image/gif"),
        ("picture.bmp", testing.make_image("Hello", "JPEG"), "image", "image/jpeg"),
    ],
)
def test_the_type_comes_from_the_bytes_not_the_name(name, data, kind, mime):
    upload = check_upload(name, data)
    assert (upload.kind, upload.mime) == (kind, mime)


def test_text_starting_with_bm_is_not_taken_for_a_bitmap():
    assert check_upload("cars.txt", b"BMW and Mercedes are car makers.").kind == "text"


def test_upload_carries_the_data_and_its_sha256():
    data = testing.make_text_pdf(["Hello"])
    upload = check_upload("report.pdf", data)
    assert upload.data == data
    assert upload.sha256 == hashlib.sha256(data).hexdigest()


def test_the_name_is_reduced_to_its_last_path_component():
    assert check_upload("C:\\fakepath\\notes.txt", b"hello").name == "notes.txt"
    assert check_upload("../../etc/notes.txt", b"hello").name == "notes.txt"
    assert check_upload("", b"hello").name == "unnamed file"


def test_a_pdf_with_only_an_owner_password_is_accepted_and_readable():
    """Permissions-only encryption needs no password to open, so there is nothing to ask the user for."""
    upload = check_upload("restricted.pdf", testing.make_encrypted_pdf("Readable text", user_password=""))
    assert upload.kind == "pdf"
    assert extract(upload).pages[0].text == "Readable text"


def test_check_uploads_accepts_files_within_the_limits_in_order():
    uploads = check_uploads([("a.txt", b"first"), ("b.pdf", testing.make_text_pdf(["second"]))], max_files=2)
    assert [(upload.name, upload.kind) for upload in uploads] == [("a.txt", "text"), ("b.pdf", "pdf")]


def test_check_uploads_with_no_files_is_fine():
    assert check_uploads([], max_files=0) == []
