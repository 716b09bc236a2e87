"""The value types that pass between the RAG steps: accept a file, extract its pages, chunk, embed, retrieve.

Each step lives in its own module (files, extract, chunking, embeddings, retrieval, service); these types are
their whole contract, so a step can change inside without the others noticing.
"""

from dataclasses import dataclass, field


class FileRejected(Exception):
    """A file we cannot use. The message names the file and says why, in words a user understands."""

    def __init__(self, message: str, code: str = "invalid_file", status: int = 400):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


@dataclass(frozen=True)
class Upload:
    """A file accepted by `rag.files.check_upload`: its type was decided from the bytes, not the name."""

    name: str
    kind: str  # "pdf" | "image" | "text" | "markdown"
    mime: str  # e.g. "application/pdf", "image/png", "text/plain", "text/markdown"
    data: bytes
    sha256: str  # hex digest of `data`: the same file in the same chat is processed once


@dataclass(frozen=True)
class Page:
    number: int  # 1-based
    text: str
    ocr: bool = False  # the text came from Tesseract, not a text layer


@dataclass
class Extraction:
    pages: list[Page]
    notes: list[str] = field(default_factory=list)  # user-facing remarks, e.g. "page 4 has no readable text"


@dataclass(frozen=True)
class ChunkDraft:
    text: str
    page: int  # the page the chunk starts on (1 for text files and images)
    heading: str  # the nearest heading above the chunk, "" when none
    position: int  # 0-based order within the document
    tokens: int


@dataclass(frozen=True)
class Hit:
    """A retrieved chunk, as the pipeline cites it."""

    chunk_id: int
    document_id: int
    document_name: str
    page: int
    heading: str
    text: str
    score: float
