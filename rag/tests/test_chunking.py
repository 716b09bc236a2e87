"""Structure-aware chunking: headings, paragraphs and pages; packing within the token budget; overlap; and never
losing a short item."""

import pytest

from core.tokens import estimate_tokens
from rag.chunking import chunk_pages
from rag.types import Page


def texts(chunks) -> list[str]:
    return [chunk.text for chunk in chunks]


def assert_well_formed(chunks, max_tokens: int) -> None:
    assert [chunk.position for chunk in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert chunk.text.strip()
        assert chunk.tokens == estimate_tokens(chunk.text)
        assert chunk.tokens <= max_tokens


def test_many_short_items_are_never_dropped():
    facts = [f"Door code {index}: {4000 + index}" for index in range(300)]
    pages = [
        Page(1, "\n\n".join(facts[:100])),  # one paragraph each
        Page(2, "\n".join(facts[100:200])),  # one line each, no blank lines
        Page(3, "\n\n".join(f"# Room {index}\n{fact}" for index, fact in enumerate(facts[200:]))),  # under headings
    ]
    chunks = chunk_pages(pages, max_tokens=60, overlap_tokens=10)
    assert_well_formed(chunks, 60)
    lines_in_chunks = {line for chunk in chunks for line in chunk.text.split("\n")}
    assert [fact for fact in facts if fact not in lines_in_chunks] == []


def test_single_table_rows_are_never_dropped_or_cut():
    rows = [f"Item {index} | {index * 3} | shelf {index % 7}" for index in range(200)]
    chunks = chunk_pages([Page(1, "Price list\n\n" + "\n".join(rows))], max_tokens=50, overlap_tokens=10)
    assert_well_formed(chunks, 50)
    lines_in_chunks = {line for chunk in chunks for line in chunk.text.split("\n")}
    assert [row for row in rows if row not in lines_in_chunks] == []


def test_a_one_line_fact_among_long_paragraphs_survives():
    long = " ".join(f"Sentence number {index} talks about nothing in particular." for index in range(60))
    text = f"{long}\n\nDoor code: 4471\n\n{long}"
    chunks = chunk_pages([Page(1, text)], max_tokens=100, overlap_tokens=20)
    assert any("Door code: 4471" in chunk for chunk in texts(chunks))


def test_short_paragraphs_are_packed_together():
    paragraphs = [f"Paragraph {index} is short." for index in range(10)]
    chunks = chunk_pages([Page(1, "\n\n".join(paragraphs))], max_tokens=200)
    assert texts(chunks) == ["\n\n".join(paragraphs)]


def test_markdown_headings_start_chunks_and_are_recorded():
    text = "# Guide\n\nIntro text.\n\n## Install\n\nRun the installer.\n\n## Use\n\nOpen the app."
    chunks = chunk_pages([Page(1, text)])
    assert [(chunk.heading, chunk.text) for chunk in chunks] == [
        ("Guide", "# Guide\n\nIntro text."),
        ("Install", "## Install\n\nRun the installer."),
        ("Use", "## Use\n\nOpen the app."),
    ]


def test_consecutive_headings_stay_with_the_text_below_them():
    chunks = chunk_pages([Page(1, "# Part One\n\n## Chapter 1\n\nIt begins.")])
    assert [(chunk.heading, chunk.text) for chunk in chunks] == [
        ("Chapter 1", "# Part One\n\n## Chapter 1\n\nIt begins."),
    ]


def test_short_title_like_lines_are_headings_but_facts_are_not():
    text = "Introduction\n\nThis guide explains the house.\n\nDoor code: 4471\n\n2.3 Parking Rules\n\nPark on the left."
    chunks = chunk_pages([Page(1, text)])
    assert [(chunk.heading, chunk.text) for chunk in chunks] == [
        ("Introduction", "Introduction\n\nThis guide explains the house.\n\nDoor code: 4471"),
        ("2.3 Parking Rules", "2.3 Parking Rules\n\nPark on the left."),
    ]


def test_hash_lines_inside_code_fences_are_not_headings():
    text = "# Script\n\n```\n# set the path\nexport PATH=/opt/bin\n```"
    chunks = chunk_pages([Page(1, text)])
    assert [chunk.heading for chunk in chunks] == ["Script"]
    assert "# set the path" in chunks[0].text


def test_each_page_starts_a_chunk_and_chunks_record_their_start_page():
    chunks = chunk_pages([Page(1, "On page one."), Page(2, "On page two."), Page(5, "On page five.")])
    assert [(chunk.page, chunk.text) for chunk in chunks] == [
        (1, "On page one."),
        (2, "On page two."),
        (5, "On page five."),
    ]


def test_headings_carry_over_to_later_pages():
    chunks = chunk_pages([Page(1, "# Contract\n\nClause one."), Page(2, "Clause two.")])
    assert [(chunk.page, chunk.heading) for chunk in chunks] == [(1, "Contract"), (2, "Contract")]


def test_text_before_any_heading_has_no_heading():
    assert chunk_pages([Page(1, "just some words")])[0].heading == ""


def test_long_paragraph_is_cut_between_sentences():
    sentences = [f"This is sentence number {index} of a long paragraph." for index in range(40)]
    chunks = chunk_pages([Page(1, " ".join(sentences))], max_tokens=60, overlap_tokens=0)
    assert_well_formed(chunks, 60)
    assert len(chunks) > 1
    for chunk in chunks:
        assert chunk.text.startswith("This is sentence number") and chunk.text.endswith("paragraph.")
    assert " ".join(texts(chunks)) == " ".join(sentences)


def test_overlong_sentence_is_cut_between_words():
    words = [f"word{index}" for index in range(300)]
    chunks = chunk_pages([Page(1, " ".join(words))], max_tokens=40, overlap_tokens=0)
    assert_well_formed(chunks, 40)
    assert " ".join(texts(chunks)).split() == words


def test_a_single_enormous_word_is_cut_and_kept_whole_in_order():
    blob = "x" * 5000
    chunks = chunk_pages([Page(1, blob)], max_tokens=50, overlap_tokens=0)
    assert_well_formed(chunks, 50)
    assert "".join(texts(chunks)) == blob


def test_consecutive_chunks_of_a_section_overlap():
    sentences = [f"Fact {index} is stated in this sentence." for index in range(30)]
    chunks = chunk_pages([Page(1, " ".join(sentences))], max_tokens=60, overlap_tokens=20)
    assert_well_formed(chunks, 60)
    for previous, current in zip(chunks, chunks[1:], strict=False):
        last_sentence_of_previous = previous.text.split(". ")[-1]
        assert current.text.startswith(last_sentence_of_previous.rstrip("."))
        shared = estimate_tokens(last_sentence_of_previous)
        assert shared <= 20


def test_no_overlap_across_a_heading():
    long = " ".join(f"Fact {index} is stated in this sentence." for index in range(20))
    chunks = chunk_pages([Page(1, f"# One\n\n{long}\n\n# Two\n\nSecond section text.")], max_tokens=60)
    assert chunks[-1].text == "# Two\n\nSecond section text."
    assert chunks[-1].heading == "Two"


def test_overlap_continues_onto_the_next_page_of_a_section():
    chunks = chunk_pages(
        [Page(1, "# Terms\n\nPayment is due in thirty days."), Page(2, "Late fees apply.")],
        max_tokens=200,
        overlap_tokens=40,
    )
    assert [(chunk.page, chunk.text) for chunk in chunks] == [
        (1, "# Terms\n\nPayment is due in thirty days."),
        (2, "Payment is due in thirty days.\n\nLate fees apply."),
    ]


def test_blank_pages_give_no_chunks():
    assert chunk_pages([Page(1, ""), Page(2, "  \n\n ")]) == []
    assert chunk_pages([]) == []


def test_every_chunk_respects_the_budget_on_mixed_input():
    text = "\n\n".join(
        [
            "# Mixed",
            " ".join(f"A sentence {index} with some words in it." for index in range(50)),
            "\n".join(f"row {index} | {index}" for index in range(50)),
            "y" * 2000,
            "Short one.",
        ]
    )
    for max_tokens, overlap in [(30, 10), (100, 40), (200, 40), (512, 64)]:
        chunks = chunk_pages([Page(1, text), Page(2, text)], max_tokens=max_tokens, overlap_tokens=overlap)
        assert_well_formed(chunks, max_tokens)


def test_max_tokens_must_be_positive():
    with pytest.raises(ValueError):
        chunk_pages([Page(1, "text")], max_tokens=0)


def test_running_headers_are_not_taken_for_headings():
    pages = [
        Page(number, f"Acme Handbook\n\n# Chapter {number}\n\nBody of chapter {number}.\n\nPage {number} of 4")
        for number in range(1, 5)
    ]
    pages[1] = Page(2, "Acme Handbook\n\nMore of chapter one, continued.\n\nPage 2 of 4")
    chunks = chunk_pages(pages)
    assert "Acme Handbook" not in {chunk.heading for chunk in chunks}
    assert [chunk.heading for chunk in chunks if chunk.page == 2] == ["Chapter 1"]
    assert all("Acme Handbook" in text for text in texts(chunks) if "Page 2 of 4" in text)  # kept as text all the same
