"""Putting a file into a chat (or into a collection several chats share): extract, chunk, embed, store; and what
the UI and the pipeline ask about their documents. Synchronous (the turn pipeline calls it in a worker thread
through sync_to_async)."""

import logging
import time
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from rag.chunking import chunk_pages
from rag.embeddings import EmbeddingError, get_embedder
from rag.extract import extract
from rag.models import Chunk, Collection, Document, encode_embedding
from rag.types import ChunkDraft, FileRejected, Upload

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]

# How often a request waiting for another one's ingest of the same file looks again.
WAIT_POLL_SECONDS = 0.25
# An ingest renews its document's updated_at at most this often while it works (see RAG_INGEST_STALE_SECONDS).
HEARTBEAT_SECONDS = 5.0


def ingest(chat, upload: Upload, progress: Progress | None = None) -> Document:
    """The chat's ready Document for `upload`, processing the file unless the chat already has it. `chat` may be a
    Collection instead: the file is then the collection's, read once for every chat that searches it.

    Raises FileRejected (the Document is then saved as failed with the same message) when the file has no usable
    text, or when the embedder cannot be reached (code "embedding_unavailable", status 503). Two requests with the
    same file in the same chat: one processes it, the other waits and returns the same Document."""
    report = progress or _ignore
    document, _ = _claim(chat, upload, report)
    if document.status == Document.Status.READY:
        return document
    return process_claimed(document, upload, report)


def claim(target, upload: Upload) -> tuple[Document, bool]:
    """The target's Document for `upload` without waiting: (document, True) when this call now owns it (status
    processing: read it with process_claimed, later or elsewhere), (document, False) when it is ready or another
    worker is reading it already."""
    return _claim(target, upload, _ignore, wait=False)


def process_claimed(document: Document, upload: Upload, progress: Progress | None = None) -> Document:
    """Read a Document this caller claimed (claim, or ingest's own claim): extract, chunk, embed, store; raises as
    ingest does. A document deleted meanwhile raises DocumentGone, and nothing of it is stored."""
    report = progress or _ignore
    heartbeat = _Heartbeat(document.pk)
    try:
        if not _copy_from_earlier_upload(document, upload, report):
            _process(document, upload, report, heartbeat)
    except DocumentGone:
        raise
    except FileRejected as exc:
        _mark_failed(document, exc.message, upload)
        raise
    except EmbeddingError as exc:
        message = f'"{upload.name}" could not be indexed: {exc}'
        _mark_failed(document, message, upload)
        raise FileRejected(message, code="embedding_unavailable", status=503) from exc
    except Exception:
        logger.exception("ingest failed", extra={"document": document.pk})
        _mark_failed(document, f'Something went wrong while reading "{upload.name}". Try uploading it again.')
        raise
    except BaseException:
        # Cancelled (the turn was stopped, the server is shutting down): failed, not left `processing`, so the
        # next upload of the file retries at once instead of waiting RAG_INGEST_STALE_SECONDS for this one.
        _mark_failed(document, f'Reading "{upload.name}" was stopped before it finished. Upload it again to retry.')
        raise
    report(f"{upload.name} is ready")
    return document


def chat_has_documents(chat_id, collection_ids=()) -> bool:
    """Whether retrieval has anything to search in this chat: its ready documents, or those of the collections it
    searches too (`collection_ids`: its assistant's)."""
    where = Q(chat_id=chat_id)
    if collection_ids:
        where |= Q(collection_id__in=list(collection_ids))
    return Document.objects.filter(where, status=Document.Status.READY).exists()


def documents_being_read(collection_ids) -> list[str]:
    """The names of the collections' documents still being read (not abandoned), oldest first."""
    if not collection_ids:
        return []
    fresh = timezone.now() - timedelta(seconds=settings.RAG_INGEST_STALE_SECONDS)
    return list(
        Document.objects.filter(
            collection_id__in=list(collection_ids), status=Document.Status.PROCESSING, updated_at__gte=fresh
        )
        .order_by("created_at", "id")
        .values_list("name", flat=True)
    )


def documents_for_collection(collection_id) -> list[Document]:
    """Every document of the collection, oldest first, whatever its status."""
    return list(Document.objects.filter(collection_id=collection_id).order_by("created_at", "id"))


def _scope(target) -> dict:
    """The Document fields naming where a file goes: a collection, or a chat."""
    return {"collection": target} if isinstance(target, Collection) else {"chat": target}


def documents_for_chat(chat_id) -> list[Document]:
    """Every document of the chat, oldest first, whatever its status (failed ones carry `error`)."""
    return list(Document.objects.filter(chat_id=chat_id).order_by("created_at", "id"))


# --- steps --------------------------------------------------------------------------------------------------


def _ignore(message: str) -> None:
    pass


class DocumentGone(Exception):
    """The document was deleted while it was being read."""


def _claim(target, upload: Upload, report: Progress, wait: bool = True) -> tuple[Document, bool]:
    """The chat's Document for this file, and whether this call owns it: a ready one (False), or one that this
    call now owns (status processing, True); with `wait` false, one another worker is reading (False) too.

    The unique (chat, sha256) constraint decides races: whoever creates the row processes the file; the others
    wait for it, and take it over only when it failed or its worker stopped renewing it (crashed)."""
    told_to_wait = False
    scope = _scope(target)
    while True:
        document = Document.objects.filter(**scope, sha256=upload.sha256).first()
        if document is None:
            try:
                with transaction.atomic():
                    return (
                        Document.objects.create(
                            **scope,
                            name=upload.name[:255],
                            kind=upload.kind,
                            mime=upload.mime,
                            sha256=upload.sha256,
                            size=len(upload.data),
                        ),
                        True,
                    )
            except IntegrityError:
                continue  # another request created it a moment ago: look again
        if document.status == Document.Status.READY:
            report(f"{document.name} is already in this {'collection' if 'collection' in scope else 'chat'}")
            return document, False
        stale = timezone.now() - document.updated_at > timedelta(seconds=settings.RAG_INGEST_STALE_SECONDS)
        if document.status == Document.Status.FAILED or stale:
            # Conditional on what we read, so of several requests retrying at once exactly one takes it.
            taken = Document.objects.filter(
                pk=document.pk, status=document.status, updated_at=document.updated_at
            ).update(
                status=Document.Status.PROCESSING,
                error="",
                name=upload.name[:255],
                kind=upload.kind,
                mime=upload.mime,
                size=len(upload.data),
                updated_at=timezone.now(),
            )
            if taken:
                document.refresh_from_db()
                return document, True
            continue
        if not wait:
            return document, False
        if not told_to_wait:
            report(f"{document.name} is being read for another message; waiting for it")
            told_to_wait = True
        time.sleep(WAIT_POLL_SECONDS)


class _Heartbeat:
    """Renews the document's updated_at while the ingest makes progress, so waiting requests know it is alive."""

    def __init__(self, document_id: int):
        self.document_id = document_id
        self.last = time.monotonic()

    def beat(self) -> None:
        now = time.monotonic()
        if now - self.last >= HEARTBEAT_SECONDS:
            self.last = now
            Document.objects.filter(pk=self.document_id).update(updated_at=timezone.now())


def _process(document: Document, upload: Upload, report: Progress, heartbeat: _Heartbeat) -> None:
    def extraction_progress(message: str) -> None:
        heartbeat.beat()
        report(message)

    report(f"Reading {upload.name}")
    extraction = extract(upload, progress=extraction_progress)
    drafts = chunk_pages(extraction.pages)
    if not drafts:
        raise FileRejected(f'"{upload.name}" has no text we could read.', code="no_text")
    embedder = get_embedder()
    vectors = []
    for start in range(0, len(drafts), embedder.batch_size):
        batch = drafts[start : start + embedder.batch_size]
        vectors.extend(embedder.embed([embedding_text(draft) for draft in batch]))
        report(f"Embedding {upload.name}: {start + len(batch)} of {len(drafts)} chunks")
        heartbeat.beat()
    pages = max((page.number for page in extraction.pages), default=0)
    _store(document, upload, drafts, vectors, pages, list(extraction.notes), embedder.name)


def embedding_text(draft: ChunkDraft) -> str:
    """What is embedded for a chunk: its heading too, which often names what a terse passage is about."""
    if draft.heading and draft.heading not in draft.text[: len(draft.heading) + 8]:
        return f"{draft.heading}\n{draft.text}"
    return draft.text


def _copy_from_earlier_upload(document: Document, upload: Upload, report: Progress) -> bool:
    """Reuse the chunks and vectors of the same file already read in another chat (or collection) of the same user,
    when they were embedded by the current embedder: no extraction, OCR or embedding again. Only the same user's:
    another user's earlier upload would make this one noticeably faster, telling them that someone else has this
    exact file."""
    embedder_name = get_embedder().name
    owner_id = document.owner_id
    earlier = (
        Document.objects.filter(
            Q(chat__owner_id=owner_id) | Q(collection__owner_id=owner_id),
            sha256=upload.sha256,
            status=Document.Status.READY,
            embedding_model=embedder_name,
        )
        .exclude(pk=document.pk)
        .order_by("-id")
        .first()
    )
    if earlier is None:
        return False
    drafts, vectors = [], []
    for chunk in earlier.chunks.order_by("position"):
        drafts.append(ChunkDraft(chunk.text, chunk.page, chunk.heading, chunk.position, chunk.tokens))
        vectors.append(bytes(chunk.embedding))
    if not drafts:
        return False
    report(f"{upload.name} was already read in another chat; reusing it")
    _store(document, upload, drafts, vectors, earlier.pages, list(earlier.notes), embedder_name)
    return True


def _store(document, upload, drafts, vectors, pages, notes, embedder_name) -> None:
    chunks = [
        Chunk(
            document=document,
            chat_id=document.chat_id,
            collection_id=document.collection_id,
            position=index,
            page=draft.page,
            heading=draft.heading,
            text=draft.text,
            tokens=draft.tokens,
            embedding=vector if isinstance(vector, bytes) else encode_embedding(vector),
        )
        for index, (draft, vector) in enumerate(zip(drafts, vectors, strict=True))
    ]
    with transaction.atomic():
        # Locked, so a delete waits for this to commit (and takes the chunks along); one already done is final.
        if not Document.objects.select_for_update().filter(pk=document.pk).exists():
            raise DocumentGone()
        file_name = _stored_file(document, upload)  # not before: a deleted document's file would be left behind
        Chunk.objects.filter(document=document).delete()  # leftovers of an abandoned attempt
        Chunk.objects.bulk_create(chunks, batch_size=500)
        document.status = Document.Status.READY
        document.error = ""
        document.pages = pages
        document.notes = notes
        document.embedding_model = embedder_name
        document.file.name = file_name
        document.save()


def _stored_file(document: Document, upload: Upload) -> str:
    """The original file in the default storage: the copy already stored for this user and content, else a new
    one at documents/<user id>/<sha256>/<name>."""
    owner_id = document.owner_id
    existing = (
        Document.objects.filter(Q(chat__owner_id=owner_id) | Q(collection__owner_id=owner_id), sha256=upload.sha256)
        .exclude(file="")
        .exclude(pk=document.pk)
        .values_list("file", flat=True)
        .first()
    )
    if existing and default_storage.exists(existing):
        return existing
    document.file.save(upload.name, ContentFile(upload.data), save=False)
    return document.file.name


def _mark_failed(document: Document, message: str, upload: Upload | None = None) -> None:
    """Failed, saying why. An image's original is kept even so (`upload`): a photo with no text to read is still
    shown to a model that sees images, again when its turn is regenerated (chat/vision.py images_of_query)."""
    fields = {"status": Document.Status.FAILED, "error": message, "updated_at": timezone.now()}
    if upload is not None and upload.kind == "image":
        try:
            fields["file"] = _stored_file(document, upload)
        except Exception:  # the failure is what the user must hear about; a missing copy is only logged
            logger.warning("could not store a failed image's original", exc_info=True)
    Document.objects.filter(pk=document.pk).update(**fields)
    document.status = Document.Status.FAILED
    document.error = message
