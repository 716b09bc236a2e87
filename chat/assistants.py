"""Assistants: a saved start for chats (a name, a system prompt, a default model, web search on or off) with
documents every chat started from it can cite.

An assistant's documents are ingested once into its rag Collection (charged one file use each, through
billing.charges) and searched by every chat started from it (chat/grounding.py with services.usable_collection_ids),
never copied into the chats. They are read in the background (a large scanned PDF takes minutes of OCR, longer than
a request may last): the upload checks and charges the files and claims their documents (status `processing`);
a reader thread reads them (`ready` or `failed`, saying why), and chats cite only those that are ready. A document
can be deleted on its own (its chunks go with it), whatever its status.

Its owner edits it; staff publish it to everyone (chat/admin.py); a published
assistant can be seen and started by anyone, and changed by its owner only. `check_*` validates and raises, `do_*`
mutates."""

import copy
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connections, transaction
from django.db.models import Case, IntegerField, Q, Value, When
from django.utils import timezone

from billing import charges
from chat import search
from chat.catalog import default_model_name
from chat.models import AIModel, Assistant, Chat
from chat.services import (
    ChatError,
    DocumentNotFound,
    check_encodable,
    parse_bool,
    parse_row_id,
    usable_collection_ids,
)
from rag.files import check_uploads
from rag.models import Collection, Document
from rag.service import DocumentGone, claim, documents_for_collection, process_claimed
from rag.types import FileRejected, Upload

logger = logging.getLogger(__name__)

NAME_CHARS = 100
SYSTEM_PROMPT_CHARS = 20_000
MAX_DOCUMENTS = 20  # per assistant: every chat started from it searches them all
# Reader threads per process: OCR and embedding are CPU-bound, and each OCR already uses RAG_OCR_WORKERS processes.
READER_THREADS = 1


class AssistantNotFound(ChatError):
    def __init__(self):
        # Someone else's unpublished assistant is "not found", never "forbidden", so ids cannot be probed.
        super().__init__("Assistant not found.", code="not_found", status=404)


def _parse_pk(value) -> int:
    return parse_row_id(value, AssistantNotFound)


def visible_assistants(user):
    """The user's own assistants, then the published ones of others, each by name."""
    return (
        Assistant.objects.filter(Q(owner=user) | Q(published=True))
        .annotate(theirs=Case(When(owner=user, then=Value(0)), default=Value(1), output_field=IntegerField()))
        .order_by("theirs", "name", "id")
    )


def get_visible_assistant(user, assistant_id) -> Assistant:
    """One the user may see and start chats from: their own, or a published one."""
    try:
        return Assistant.objects.filter(Q(owner=user) | Q(published=True)).get(pk=_parse_pk(assistant_id))
    except Assistant.DoesNotExist:
        raise AssistantNotFound() from None


def get_owned_assistant(user, assistant_id, for_update: bool = False) -> Assistant:
    """One the user may change: their own. A published one of someone else is seen but refused (403)."""
    assistant = get_visible_assistant(user, assistant_id)
    if assistant.owner_id != user.pk:
        raise ChatError("Only its owner can change this assistant.", code="not_owner", status=403)
    if for_update:
        assistant = Assistant.objects.select_for_update().get(pk=assistant.pk)
    return assistant


def check_assistant_fields(data: dict, partial: bool = False) -> dict:
    """The model fields from a client's {name, systemPrompt, model, webSearch}; `partial`: only those sent."""
    if not isinstance(data, dict):
        raise ChatError("The request body must be a JSON object.", code="invalid_body")
    fields = {}
    if "name" in data or not partial:
        name = data.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ChatError("An assistant needs a name.", code="invalid_field")
        name = " ".join(name.split())
        check_encodable(name, "name")
        if len(name) > NAME_CHARS:
            raise ChatError(f"The name is {len(name)} characters; the limit is {NAME_CHARS}.", code="invalid_field")
        fields["name"] = name
    if "systemPrompt" in data or not partial:
        prompt = data.get("systemPrompt") or ""
        if not isinstance(prompt, str):
            raise ChatError("systemPrompt must be text.", code="invalid_field")
        check_encodable(prompt, "system prompt")
        if len(prompt) > SYSTEM_PROMPT_CHARS:
            raise ChatError(
                f"The system prompt is {len(prompt)} characters; the limit is {SYSTEM_PROMPT_CHARS}.",
                code="invalid_field",
                status=413,
            )
        fields["system_prompt"] = prompt
    if "model" in data or not partial:
        fields["model"] = check_assistant_model(data.get("model"))
    if "webSearch" in data or not partial:
        fields["web_search"] = parse_bool(data.get("webSearch"), "webSearch")
    return fields


def check_assistant_model(name) -> str:
    """A model of the catalog (enabled); its availability is the turn's to check, as keys come and go."""
    if not isinstance(name, str) or not name:
        return default_model_name()
    check_encodable(name, "model")
    if not AIModel.objects.filter(name=name, enabled=True).exists():
        raise ChatError(f"Unknown model “{name}”. GET /api/v1/chat/models lists them.", code="unknown_model")
    return name


@transaction.atomic
def do_create_assistant(user, data: dict) -> Assistant:
    fields = check_assistant_fields(data)
    return Assistant.objects.create(owner=user, **fields)


@transaction.atomic
def do_update_assistant(user, assistant_id, data: dict) -> Assistant:
    assistant = get_owned_assistant(user, assistant_id, for_update=True)
    fields = check_assistant_fields(data, partial=True)
    for field, value in fields.items():
        setattr(assistant, field, value)
    assistant.save()
    return assistant


@transaction.atomic
def do_delete_assistant(user, assistant_id) -> None:
    """Delete it and its documents; chats started from it are kept (with their own files), without its documents."""
    get_owned_assistant(user, assistant_id, for_update=True).delete()


def assistant_documents(assistant: Assistant) -> list[Document]:
    """Its documents, oldest first. One left `processing` by a reader that stopped (the server restarted) is shown
    as failed: it will not become ready on its own, and uploading it again retries it."""
    documents = documents_for_collection(assistant.collection_id) if assistant.collection_id else []
    abandoned = timezone.now() - timedelta(seconds=settings.RAG_INGEST_STALE_SECONDS)
    for document in documents:
        if document.status == Document.Status.PROCESSING and document.updated_at < abandoned:
            document.status = Document.Status.FAILED
            document.error = f'Reading "{document.name}" stopped before it finished. Upload it again to retry.'
    return documents


def _collection_of(assistant: Assistant) -> Collection:
    with transaction.atomic():
        locked = Assistant.objects.select_for_update().get(pk=assistant.pk)
        if locked.collection_id is None:
            locked.collection = Collection.objects.create(owner_id=locked.owner_id, label=f"Assistant: {locked.name}")
            locked.save(update_fields=["collection"])
        assistant.collection = locked.collection
    return locked.collection


@dataclass(frozen=True)
class PendingDocument:
    """A document claimed by an upload, to be read: its file, and the file use it holds (None: not charged)."""

    document: Document
    upload: Upload
    charge: charges.Charge | None = None


def do_add_documents(
    user, assistant_id, files: list[tuple[str, bytes]], read: Callable[[list[PendingDocument]], None] | None = None
) -> list[Document]:
    """Take the files into the assistant's collection, once, and have them read (`read`: in the background by
    default; read_documents reads them now). Each new file takes one file use from the owner's quota (kept once it
    is read, given back when it could not be); a file the assistant has already, or is reading, takes none.

    Every file is checked before any is charged (the plan's files per request and sizes, as for a turn); a file
    that turns out unreadable becomes a failed document saying why, and the others go on. Returns the documents
    of these files, in order, as they are now (`processing` until read)."""
    assistant = get_owned_assistant(user, assistant_id)
    if not files:
        raise ChatError("Choose at least one file to add.", code="no_files")
    try:
        uploads = check_uploads(list(files), charges.limits_for(user)["files_per_request"])
    except FileRejected as exc:
        raise ChatError(exc.message, code=exc.code, status=exc.status) from None
    uploads = list({upload.sha256: upload for upload in reversed(uploads)}.values())[::-1]  # a file twice: once
    collection = _collection_of(assistant)
    hashes = [upload.sha256 for upload in uploads]
    fresh = timezone.now() - timedelta(seconds=settings.RAG_INGEST_STALE_SECONDS)
    known = set(
        Document.objects.filter(collection=collection, sha256__in=hashes)
        .filter(Q(status=Document.Status.READY) | Q(status=Document.Status.PROCESSING, updated_at__gte=fresh))
        .values_list("sha256", flat=True)
    )
    stored = Document.objects.filter(collection=collection).exclude(sha256__in=hashes).count()
    if stored + len(uploads) > MAX_DOCUMENTS:
        raise ChatError(
            f"An assistant holds at most {MAX_DOCUMENTS} documents; this one has {stored}.", code="too_many_documents"
        )
    new = [upload for upload in uploads if upload.sha256 not in known]
    try:
        held = charges.do_reserve(user, ["file_rag"] * len(new))
    except charges.QuotaExceeded as exc:
        raise ChatError(str(exc), code="quota_exceeded", status=429) from None
    charge_of = dict(zip((upload.sha256 for upload in new), held, strict=True))
    documents, pending = [], []
    try:
        for upload in uploads:
            document, owned = claim(collection, upload)
            charge = charge_of.pop(upload.sha256, None)
            if owned:  # a copy: what this request answers is the document as claimed, not as the reader goes on
                pending.append(PendingDocument(copy.copy(document), upload, charge))
            else:  # ready, or being read for another upload since we looked: no new use of the quota
                charges.do_release(charge)
            documents.append(document)
    except BaseException:
        charges.do_release_all([*charge_of.values(), *(item.charge for item in pending)])
        for item in pending:  # claimed but never to be read: failed, so the next upload retries at once
            Document.objects.filter(pk=item.document.pk).update(
                status=Document.Status.FAILED, error=f'Reading "{item.upload.name}" did not start. Upload it again.'
            )
        raise
    if pending:
        (read or read_in_background)(pending)
    return documents


_readers: ThreadPoolExecutor | None = None
_readers_lock = threading.Lock()


def read_in_background(pending: list[PendingDocument]) -> None:
    """Read the documents in a reader thread, once the upload's transaction (if any) has committed: the reader
    must see their rows."""

    def start():
        global _readers
        with _readers_lock:
            if _readers is None:
                _readers = ThreadPoolExecutor(max_workers=READER_THREADS, thread_name_prefix="assistant-reader")
            _readers.submit(read_documents, pending)

    transaction.on_commit(start)


def read_documents(pending: list[PendingDocument]) -> None:
    """Read each claimed document (extract, OCR, chunk, embed): ready, or failed saying why. Its file use is kept
    once it is read, and given back when it could not be or the document was deleted meanwhile. Never raises."""
    try:
        for item in pending:
            try:
                process_claimed(item.document, item.upload)
            except (DocumentGone, FileRejected):  # deleted; or failed, the document says why
                charges.do_release(item.charge)
            except Exception:
                logger.exception("reading an assistant's document failed", extra={"document": item.document.pk})
                charges.do_release(item.charge)
            else:
                if item.charge is not None:
                    charges.do_settle(item.charge)
    finally:
        # The documents never reached (the process is stopping) give their file uses back.
        charges.do_release_all(item.charge for item in pending)
        if threading.current_thread() is not threading.main_thread():
            connections.close_all()  # a reader thread's own connections: no request cycle closes them


@transaction.atomic
def do_delete_document(user, assistant_id, document_id) -> None:
    """Delete one of the assistant's documents, its chunks and its stored file (unless another document of the
    owner's uses the same file): chats started from the assistant stop citing it at once. One still being read is
    deleted too; its reader stores nothing and gives its file use back."""
    assistant = get_owned_assistant(user, assistant_id, for_update=True)
    pk = parse_row_id(document_id, DocumentNotFound)
    deleted, _ = (
        Document.objects.filter(pk=pk, collection_id=assistant.collection_id).delete()
        if assistant.collection_id
        else (0, None)
    )
    if not deleted:
        raise DocumentNotFound()


def do_start_chat(user, assistant_id) -> Chat:
    """A new chat of the user's with the assistant's name, system prompt, model and web search; its turns search
    the assistant's documents too (nothing is copied, nothing is charged until a turn is asked)."""
    assistant = get_visible_assistant(user, assistant_id)
    with transaction.atomic():
        chat = Chat.objects.create(
            owner=user,
            title=assistant.name,
            name=assistant.name,
            model=assistant.model,
            system_prompt=assistant.system_prompt,
            web_search=assistant.web_search,
            assistant=assistant,
        )
        search.index_chats([chat.pk])
    return chat


def assistant_as_dict(assistant: Assistant, user, documents: list[Document] | None = None) -> dict:
    body = {
        "id": assistant.pk,
        "name": assistant.name,
        "systemPrompt": assistant.system_prompt,
        "model": assistant.model,
        "webSearch": assistant.web_search,
        "published": assistant.published,
        "mine": assistant.owner_id == user.pk,
        "createdAt": assistant.created_at.isoformat(),
        "updatedAt": assistant.updated_at.isoformat(),
    }
    if documents is not None:
        body["documents"] = [assistant_document_as_dict(document) for document in documents]
    return body


def assistant_document_as_dict(document: Document) -> dict:
    return {
        "id": document.pk,
        "name": document.name,
        "kind": document.kind,
        "mime": document.mime,
        "size": document.size,
        "pages": document.pages,
        "status": document.status,
        "error": document.error,
        "notes": list(document.notes or []),
        "createdAt": document.created_at.isoformat(),
    }


def documents_for_chat(chat) -> list[Document]:
    """The ready documents of the assistant the chat was started from, while it may search them (the chat page
    lists them beside the chat's own files; its citations link to them through the chat)."""
    if chat is None or not chat.assistant_id:
        return []
    collection_ids = usable_collection_ids(chat.pk)
    if not collection_ids:
        return []
    return list(
        Document.objects.filter(collection_id__in=collection_ids, status=Document.Status.READY).order_by("created_at")
    )
