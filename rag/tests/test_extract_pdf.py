"""Text PDFs (PDFium, page by page), tables (pdfplumber, only where needed), and plain text / Markdown."""

import pytest

from rag import extract as extract_module
from rag.extract import _pages_phrase, extract
from rag.files import check_upload
from rag.types import FileRejected
from testsupport import files as testing


def extract_pdf(pages: list[str], name: str = "doc.pdf", **kwargs):
    return extract(check_upload(name, testing.make_text_pdf(pages)), **kwargs)


def test_text_pdf_pages_in_order_with_their_numbers():
    extraction = extract_pdf(["First page text.", "Second page text.", "Third page text."])
    assert [(page.number, page.text, page.ocr) for page in extraction.pages] == [
        (1, "First page text.", False),
        (2, "Second page text.", False),
        (3, "Third page text.", False),
    ]
    assert extraction.notes == []


def test_text_pdf_needs_no_ocr_and_reports_no_progress():
    messages = []
    extract_pdf(["Hello"] * 3, progress=messages.append)
    assert messages == []


def test_empty_pages_are_left_out_and_noted():
    extraction = extract_pdf(["One.", "", "", "Four.", ""])
    assert [page.number for page in extraction.pages] == [1, 4]
    assert extraction.notes == ["pages 2–3 and 5 have no readable text"]


def test_paragraph_gaps_become_blank_lines_and_big_lines_headings():
    extraction = extract_pdf(["# Opening Hours\nWe open at nine.\nWe close at five.\n\nDoor code: 4471"])
    assert extraction.pages[0].text == "# Opening Hours\n\nWe open at nine.\nWe close at five.\n\nDoor code: 4471"


def test_latin1_text_survives():
    assert extract_pdf(["Café crème à la carte"]).pages[0].text == "Café crème à la carte"


def test_table_rows_replace_the_loose_cell_text_and_the_text_around_stays():
    rows = [["Name", "Age", "City"], ["Alice", "30", "Paris"], ["Bob", "41", "Rome"]]
    data = testing.make_table_pdf(rows, before="Staff list below.", after="Updated yearly.")
    text = extract(check_upload("staff.pdf", data)).pages[0].text
    assert text == "Staff list below.\n\nName | Age | City\nAlice | 30 | Paris\nBob | 41 | Rome\n\nUpdated yearly."


def test_table_cells_with_line_breaks_become_one_cell():
    rows = [["Item", "Notes"], ["Lamp", "Fragile, handle with care, keep the box and the receipt for returns"]]
    text = extract(check_upload("t.pdf", testing.make_table_pdf(rows))).pages[0].text
    assert "Lamp | Fragile, handle with care, keep the box and the receipt for returns" in text.split("\n")


class CountingPdfplumber:
    def __init__(self, real_open):
        self.real_open = real_open
        self.opened = 0

    def open(self, *args, **kwargs):
        self.opened += 1
        return self.real_open(*args, **kwargs)


def test_pdfplumber_is_not_used_on_plain_text_pages(monkeypatch):
    counting = CountingPdfplumber(extract_module.pdfplumber.open)
    monkeypatch.setattr(extract_module.pdfplumber, "open", counting.open)
    extract_pdf(["Just text, no tables."] * 5)
    assert counting.opened == 0
    extract(check_upload("t.pdf", testing.make_table_pdf([["a", "b"], ["c", "d"]])))
    assert counting.opened == 1


def test_pdfplumber_is_not_used_for_frames_and_rules(monkeypatch):
    """A box around a note and a rule under a title draw paths, but no grid: no table to look for."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", "", 12)
    pdf.cell(0, 10, "Title", new_x="LMARGIN", new_y="NEXT")
    pdf.line(10, 22, 200, 22)
    pdf.rect(10, 30, 190, 40)
    pdf.set_xy(15, 35)
    pdf.multi_cell(180, 6, "A framed note.\nSecond line.\nThird line.")
    pdf.line(10, 80, 200, 80)
    counting = CountingPdfplumber(extract_module.pdfplumber.open)
    monkeypatch.setattr(extract_module.pdfplumber, "open", counting.open)
    text = extract(check_upload("framed.pdf", bytes(pdf.output()))).pages[0].text
    assert "A framed note." in text
    assert counting.opened == 0


def test_a_failing_page_is_noted_and_the_others_are_kept(monkeypatch):
    real = extract_module._read_page_layer

    def fail_on_second_page(document, index):
        if index == 1:
            raise RuntimeError("PDFium choked")
        return real(document, index)

    monkeypatch.setattr(extract_module, "_read_page_layer", fail_on_second_page)
    extraction = extract_pdf(["One.", "Two.", "Three."])
    assert [page.number for page in extraction.pages] == [1, 3]
    assert extraction.notes == ["page 2 could not be read and was skipped"]


def test_a_failing_table_reader_keeps_the_pages_plain_text(monkeypatch):
    def broken_open(*args, **kwargs):
        raise ValueError("pdfminer choked")

    monkeypatch.setattr(extract_module.pdfplumber, "open", broken_open)
    data = testing.make_table_pdf([["Name", "Age"], ["Alice", "30"]], before="Before.")
    extraction = extract(check_upload("table.pdf", data))
    assert extraction.pages[0].text == "Before.\nName Age\nAlice 30"
    assert extraction.notes == ["the tables on page 1 could not be laid out as rows; their text is kept as it is"]


def test_every_page_failing_is_no_readable_text_with_the_reason(monkeypatch):
    def always_fail(document, index):
        raise RuntimeError("PDFium choked")

    monkeypatch.setattr(extract_module, "_read_page_layer", always_fail)
    with pytest.raises(FileRejected) as caught:
        extract_pdf(["One.", "Two."], name="bad.pdf")
    assert caught.value.message == '"bad.pdf" has no readable text (pages 1–2 could not be read and were skipped).'


def test_pages_phrase():
    assert _pages_phrase([3]) == "page 3 has"
    assert _pages_phrase([1, 2, 3, 7]) == "pages 1–3 and 7 have"
    assert _pages_phrase([1, 3, 5], verb=False) == "pages 1, 3 and 5"
    assert _pages_phrase([5, 1, 2], verb=False) == "pages 1–2 and 5"


# --- plain text and Markdown ---------------------------------------------------------------------------------------


def test_plain_text_is_one_page():
    extraction = extract(check_upload("notes.txt", b"Line one\r\nLine two\r\n"))
    assert [(page.number, page.text, page.ocr) for page in extraction.pages] == [(1, "Line one\nLine two", False)]


def test_form_feeds_split_text_into_pages():
    extraction = extract(check_upload("notes.txt", b"Page one\n\fPage two\n\f\fPage four"))
    assert [(page.number, page.text.strip()) for page in extraction.pages] == [
        (1, "Page one"),
        (2, "Page two"),
        (4, "Page four"),
    ]


def test_markdown_keeps_its_markup_for_the_chunker():
    text = extract(check_upload("guide.md", b"# Guide\n\nStep one.\n")).pages[0].text
    assert text.startswith("# Guide\n\nStep one.")
