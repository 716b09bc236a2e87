"""Chunking: extracted pages become retrieval-sized pieces of text that follow the document's structure.

Rules, in order of precedence:
* A heading (a Markdown "#" line, or a short title-like line standing alone) starts a new chunk; headings that
  follow each other stay together, with the text below them.
* A new page starts a new chunk, so every chunk can cite the page it starts on.
* Paragraphs (separated by blank lines) are packed whole into chunks of up to `max_tokens`; a paragraph that is
  too long alone is cut between sentences (or between rows, for tables and lists), then between words.
* Consecutive chunks of one section overlap by about `overlap_tokens`, so a fact cut at a boundary is whole in
  one of them. Chunks after a heading do not overlap the previous section.
* Nothing is ever dropped: every non-blank line of the input is in at least one chunk.

Tokens are `core.tokens.estimate_tokens` (UTF-8 bytes / 3): offline, fast, and conservative for every provider.
"""

import re
from collections import Counter
from dataclasses import dataclass

from core.tokens import BYTES_PER_TOKEN, estimate_tokens
from rag.types import ChunkDraft, Page

_MARKDOWN_HEADING = re.compile(r"^[ ]{0,3}(#{1,6})[ \t]+(.*?)[ \t]*#*[ \t]*$")
_FENCE = re.compile(r"^[ ]{0,3}(```|~~~)")
# A sentence ends at . ! ? or … (possibly followed by a closing quote or bracket), then white space (group 1,
# where we cut), then something that starts a sentence; "e.g. this" or "3.5 mm" do not split.
_SENTENCE_BREAK = re.compile(r"[.!?…][\"'”’)\]]*(\s+)(?=[\"'“‘(\[]?[A-Z0-9À-Ý])")
_NUMBERED_TITLE = re.compile(r"^(\d+(\.\d+)*\.?|[IVXLC]+\.|[A-Z]\.)\s+\S")
_DIGITS = re.compile(r"\d+")
_LIST_OR_ROW = re.compile(r"^\s*([-*+•·▪◦]|\d+[.)])\s+|\|")
_TITLE_MAX_WORDS = 10
_TITLE_MAX_CHARS = 80

# What goes between two pieces of one chunk, by how they were separated in the text.
_BETWEEN_PARAGRAPHS = "\n\n"
_BETWEEN_LINES = "\n"
_BETWEEN_WORDS = " "


@dataclass
class _Unit:
    """A piece of text that is never cut further: a paragraph, or a sentence, row or word run of a long one."""

    text: str
    page: int
    tokens: int
    joiner: str  # put before this unit when it follows another one in a chunk
    overlap: bool = False  # repeated from the previous chunk
    heading: bool = False


@dataclass
class _Block:
    text: str
    page: int
    heading: str | None  # the heading's title when this block is a heading


def chunk_pages(pages: list[Page], max_tokens: int = 200, overlap_tokens: int = 40) -> list[ChunkDraft]:
    if max_tokens < 1:
        raise ValueError("max_tokens must be at least 1")
    overlap_tokens = max(0, min(overlap_tokens, max_tokens // 2))
    packer = _Packer(max_tokens, overlap_tokens)
    current_page = None
    for block in _blocks(pages, _running_lines(pages)):
        if block.heading is not None:
            packer.start_section(block.heading)
        elif block.page != current_page and current_page is not None:
            packer.start_page()
        current_page = block.page
        units = _units(block, max_tokens)
        if block.heading is not None:
            packer.add_heading(units)
        else:
            for unit in units:
                packer.add(unit)
    packer.flush(keep_overlap=False)
    return packer.chunks


# --- structure ---------------------------------------------------------------------------------------------------


def _running_lines(pages: list[Page]) -> set[str]:
    """Lines that open or close many pages (running headers and footers, "Page 3 of 17"), digits ignored: they
    stay in the text but are never taken for headings, which would otherwise hide the real ones."""
    if len(pages) < 3:
        return set()
    counts: Counter[str] = Counter()
    for page in pages:
        lines = [line.strip() for line in page.text.split("\n") if line.strip()]
        if lines:
            counts.update({_without_digits(lines[0]), _without_digits(lines[-1])})
    threshold = max(3, len(pages) // 2)
    return {line for line, count in counts.items() if count >= threshold}


def _without_digits(line: str) -> str:
    return _DIGITS.sub("0", line.strip())


def _blocks(pages: list[Page], running_lines: set[str]):
    """Headings and paragraphs, in order, each with its page."""
    for page in sorted(pages, key=lambda page: page.number):
        in_fence = False
        paragraph: list[str] = []
        for raw_line in page.text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
            line = raw_line.rstrip()
            if _FENCE.match(line):
                in_fence = not in_fence
            heading = None if in_fence else _MARKDOWN_HEADING.match(line)
            if heading:
                if paragraph:
                    yield from _paragraph_blocks(paragraph, page.number, running_lines)
                    paragraph = []
                yield _Block(text=line.strip(), page=page.number, heading=heading.group(2).strip() or line.strip())
            elif not line.strip() and not in_fence:
                if paragraph:
                    yield from _paragraph_blocks(paragraph, page.number, running_lines)
                    paragraph = []
            else:
                paragraph.append(line)
        if paragraph:
            yield from _paragraph_blocks(paragraph, page.number, running_lines)


def _paragraph_blocks(lines: list[str], page: int, running_lines: set[str]):
    text = "\n".join(lines).strip("\n")
    if not text.strip():
        return
    if len(lines) == 1 and _is_title_like(lines[0]) and _without_digits(lines[0]) not in running_lines:
        yield _Block(text=text.strip(), page=page, heading=text.strip())
    else:
        yield _Block(text=text, page=page, heading=None)


def _is_title_like(line: str) -> bool:
    """A short standalone line that reads like a title: "Introduction", "2.3 Results", "Terms of Service".
    Lines with a colon ("Door code: 4471"), end punctuation, bullets or table pipes are content, not titles."""
    text = line.strip()
    if not text or len(text) > _TITLE_MAX_CHARS or len(text.split()) > _TITLE_MAX_WORDS:
        return False
    if text[-1] in ".,;:!?…" or ":" in text or _LIST_OR_ROW.search(text):
        return False
    if not any(character.isalpha() for character in text):
        return False
    return text[0].isupper() or bool(_NUMBERED_TITLE.match(text))


# --- cutting ------------------------------------------------------------------------------------------------------


def _units(block: _Block, max_tokens: int) -> list[_Unit]:
    """The block as one unit if it fits, else cut at the coarsest boundary that makes every piece fit."""
    tokens = estimate_tokens(block.text)
    if tokens <= max_tokens:
        return [_Unit(block.text, block.page, tokens, _BETWEEN_PARAGRAPHS)]
    lines = block.text.split("\n")
    rows_first = len(lines) > 1 and sum(1 for line in lines if _LIST_OR_ROW.search(line)) * 2 >= len(lines)
    strategies = [_split_lines, _split_sentences] if rows_first else [_split_sentences, _split_lines]
    pieces = _cut(block.text, max_tokens, [*strategies, _split_words], _BETWEEN_PARAGRAPHS)
    return [_Unit(text, block.page, estimate_tokens(text), joiner) for text, joiner in pieces]


def _cut(text: str, max_tokens: int, strategies: list, joiner: str) -> list[tuple[str, str]]:
    if estimate_tokens(text) <= max_tokens:
        return [(text, joiner)]
    if not strategies:
        return _split_characters(text, max_tokens, joiner)
    split, *rest = strategies
    parts = split(text)
    if len(parts) <= 1:
        return _cut(text, max_tokens, rest, joiner)
    pieces: list[tuple[str, str]] = []
    for index, (part, part_joiner) in enumerate(parts):
        pieces.extend(_cut(part, max_tokens, rest, joiner if index == 0 else part_joiner))
    return pieces


def _split_lines(text: str) -> list[tuple[str, str]]:
    return [(line, _BETWEEN_LINES) for line in text.split("\n") if line.strip()]


def _split_sentences(text: str) -> list[tuple[str, str]]:
    sentences = []
    start = 0
    for match in _SENTENCE_BREAK.finditer(text):
        sentences.append(text[start : match.start(1)])
        start = match.end(1)
    sentences.append(text[start:])
    return [(sentence, _BETWEEN_WORDS) for sentence in sentences if sentence.strip()]


def _split_words(text: str) -> list[tuple[str, str]]:
    return [(word, _BETWEEN_WORDS) for word in text.split()]


def _split_characters(text: str, max_tokens: int, joiner: str) -> list[tuple[str, str]]:
    """A single "word" longer than a chunk (a URL, base64…): cut into pieces that fit, 4 bytes a character at
    worst."""
    step = max(1, max_tokens * BYTES_PER_TOKEN // 4)
    return [(text[start : start + step], joiner if start == 0 else "") for start in range(0, len(text), step)]


# --- packing ------------------------------------------------------------------------------------------------------


class _Packer:
    def __init__(self, max_tokens: int, overlap_tokens: int):
        self.max_tokens = max_tokens
        self.overlap_tokens = overlap_tokens
        self.chunks: list[ChunkDraft] = []
        self.units: list[_Unit] = []
        self.tokens = 0
        self.heading = ""  # the heading in force at this point of the document
        self.chunk_heading: str | None = None  # the heading in force where the chunk's own text starts
        self.has_body = False

    def start_section(self, heading: str) -> None:
        if self.has_body:
            self.flush(keep_overlap=False)
        else:  # only headings so far (they stay with this one), or the previous section's repeated tail
            self.units = [unit for unit in self.units if not unit.overlap]
            self.tokens = self._total(self.units)
        self.heading = heading

    def start_page(self) -> None:
        if self.has_body:
            self.flush(keep_overlap=True)

    def add_heading(self, units: list[_Unit]) -> None:
        for unit in units:
            unit.heading = True
            self._append(unit, body=False)

    def add(self, unit: _Unit) -> None:
        self._append(unit, body=True)

    def _append(self, unit: _Unit, body: bool) -> None:
        if self.units and self.tokens + self._cost(unit) > self.max_tokens:
            self.flush(keep_overlap=True)
            # The repeated tail must leave room for the new unit; drop it from the front until it does.
            while self.units and self.tokens + self._cost(unit) > self.max_tokens:
                self.units.pop(0)
                self.tokens = self._total(self.units)
        if not self.has_body:  # the nearest heading above the chunk's own text: the last one before its body
            self.chunk_heading = self.heading
        self.tokens += self._cost(unit) if self.units else unit.tokens
        self.units.append(unit)
        self.has_body = self.has_body or body

    def _cost(self, unit: _Unit) -> int:
        # A joiner is at most 2 bytes, so one token covers it whatever the rounding.
        return unit.tokens + 1

    def _total(self, units: list[_Unit]) -> int:
        return sum(unit.tokens for unit in units) + max(0, len(units) - 1)

    def flush(self, keep_overlap: bool) -> None:
        own = [unit for unit in self.units if not unit.overlap]
        if own:
            text = self.units[0].text + "".join(unit.joiner + unit.text for unit in self.units[1:])
            self.chunks.append(
                ChunkDraft(
                    text=text,
                    page=own[0].page,
                    heading=self.chunk_heading if self.chunk_heading is not None else self.heading,
                    position=len(self.chunks),
                    tokens=estimate_tokens(text),
                )
            )
        tail = self._overlap_tail() if keep_overlap and own else []
        self.units = tail
        self.tokens = self._total(tail)
        self.chunk_heading = None
        self.has_body = False

    def _overlap_tail(self) -> list[_Unit]:
        """What the next chunk repeats: the last whole units of the chunk just written, up to overlap_tokens, but
        never the whole chunk nor a heading; when even the last unit is longer than that, its last words."""
        if self.overlap_tokens <= 0 or not self.units:
            return []
        tail: list[_Unit] = []
        used = 0
        for unit in reversed(self.units[1:]):
            cost = unit.tokens + (1 if tail else 0)
            if unit.heading or used + cost > self.overlap_tokens:
                break
            tail.insert(0, _Unit(unit.text, unit.page, unit.tokens, unit.joiner, overlap=True))
            used += cost
        if tail:
            return tail
        last = self.units[-1]
        if last.heading or last.tokens <= self.overlap_tokens:
            return []
        kept: list[str] = []
        for word in reversed(last.text.split()):
            if estimate_tokens(" ".join([word, *kept])) > self.overlap_tokens:
                break
            kept.insert(0, word)
        if not kept:
            return []
        text = " ".join(kept)
        return [_Unit(text, last.page, estimate_tokens(text), _BETWEEN_WORDS, overlap=True)]
