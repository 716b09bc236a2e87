"""Chat services: `check_*` validates and raises, `do_*` mutates inside a transaction."""

import datetime as dt
import re
import uuid
from dataclasses import dataclass, replace
from urllib.parse import quote, unquote

from django.conf import settings
from django.core.cache import cache
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from billing import quota
from billing.quota import is_subscriber
from chat.catalog import default_model_name, sync_self_hosted_models
from chat.models import RESERVATION_KEY, AIModel, Chat, ChatQuery
from chat.providers import unavailable_reason
from core import metrics
from core.tokens import answer_budget, estimate_message_tokens
from rag.files import check_uploads, format_bytes
from rag.models import Document
from rag.types import FileRejected, Upload

TITLE_CHARS = 50


class ChatError(Exception):
    """A request we refuse; `status` is the HTTP status, `code` a stable machine-readable name."""

    def __init__(self, message: str, code: str = "bad_request", status: int = 400):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


class ChatNotFound(ChatError):
    def __init__(self):
        # Someone else's chat is "not found", never "forbidden", so ids cannot be probed.
        super().__init__("Chat not found.", code="not_found", status=404)


@dataclass(frozen=True)
class TurnRequest:
    prompt: str
    model: str | None = None
    system_prompt: str | None = None
    web_search: bool = False
    chat_id: uuid.UUID | None = None
    attachment_ids: tuple[str, ...] = ()  # files staged through the web UI (do_stage_attachments)


@dataclass(frozen=True)
class TurnFile:
    """A file the turn ingests, with the file-RAG quota it holds (None when the chat already has this file)."""

    upload: Upload
    reservation: quota.Reservation | None = None


@dataclass(frozen=True)
class PreparedTurn:
    request: TurnRequest
    ai_model: AIModel
    chat: Chat | None
    max_tokens: int
    context_budget: int
    files: tuple[TurnFile, ...] = ()


def _parse_bool(value, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if value in (None, ""):
        return False
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "on", "off"):
        return value.lower() in ("true", "1", "on")
    raise ChatError(f"{field} must be true or false.", code="invalid_field")


def parse_chat_id(value) -> uuid.UUID:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except (ValueError, TypeError, AttributeError):
        raise ChatNotFound() from None


def parse_turn_request(data, chat_id=None) -> TurnRequest:
    """Turn a client's JSON object (API, socket or form) into a TurnRequest, or say what is wrong with it."""
    if not isinstance(data, dict):
        raise ChatError("The request body must be a JSON object.", code="invalid_body")
    prompt = data.get("prompt")
    if not isinstance(prompt, str):
        raise ChatError("prompt is required and must be text.", code="empty_prompt")
    if not prompt.strip():
        raise ChatError("The prompt is empty.", code="empty_prompt")
    if len(prompt) > settings.MAX_PROMPT_CHARS:
        raise ChatError(
            f"The prompt is {len(prompt)} characters; the limit is {settings.MAX_PROMPT_CHARS}.",
            code="prompt_too_long",
            status=413,
        )
    model = data.get("model")
    if model is not None and not isinstance(model, str):
        raise ChatError("model must be a model name.", code="invalid_field")
    system_prompt = data.get("systemPrompt", data.get("system_prompt"))
    if system_prompt is not None and not isinstance(system_prompt, str):
        raise ChatError("systemPrompt must be text.", code="invalid_field")
    raw_chat_id = chat_id or data.get("chatId") or None
    return TurnRequest(
        prompt=prompt,
        model=model or None,
        system_prompt=system_prompt,
        web_search=_parse_bool(data.get("webSearch", data.get("web_search")), "webSearch"),
        chat_id=parse_chat_id(raw_chat_id) if raw_chat_id else None,
        attachment_ids=_parse_attachment_ids(data.get("attachments")),
    )


def _parse_attachment_ids(value) -> tuple[str, ...]:
    # A form with one staged file sends a string, with several a list (htmx's ws extension serialises it so).
    if value in (None, "", []):
        return ()
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(item, str) for item in values):
        raise ChatError("attachments must be a list of attachment ids.", code="invalid_field")
    return tuple(dict.fromkeys(item for item in values if item))


def get_owned_chat(user, chat_id, for_update: bool = False) -> Chat:
    chats = Chat.objects.select_for_update() if for_update else Chat.objects.all()
    try:
        return chats.owned_by(user).get(pk=parse_chat_id(chat_id))
    except Chat.DoesNotExist:
        raise ChatNotFound() from None


def check_model(name: str) -> AIModel:
    model = AIModel.objects.filter(name=name).first()
    if model is None and settings.OPENAI_COMPATIBLE_BASE_URL:
        sync_self_hosted_models()  # a model the self-hosted server lists, before anyone opened the catalog
        model = AIModel.objects.filter(name=name).first()
    if model is None:
        raise ChatError(f"Unknown model “{name}”. GET /api/v1/chat/models lists them.", code="unknown_model")
    if not model.enabled:
        raise ChatError(f"The model “{name}” is disabled.", code="model_disabled")
    reason = unavailable_reason(model.provider)
    if reason:
        raise ChatError(f"The model “{name}” is unavailable: {reason}.", code="model_unavailable")
    return model


def token_budget(model: AIModel) -> tuple[int, int, int]:
    """(context window, tokens reserved for the answer, tokens left for the prompt and history)."""
    limit = model.context_limit
    if model.provider == AIModel.Provider.LOCAL:
        limit = min(limit, settings.LOCAL_MODEL_CONTEXT)
    max_tokens = answer_budget(limit, settings.ANSWER_MAX_TOKENS)
    return limit, max_tokens, limit - max_tokens


def check_turn(user, request: TurnRequest, files: list[tuple[str, bytes]] = ()) -> PreparedTurn:
    """Everything that can refuse a turn, before any quota is charged: the chat, the model, the prompt's size,
    and the files (sent with the request, or staged earlier as attachments)."""
    chat = get_owned_chat(user, request.chat_id) if request.chat_id else None
    model = check_model(request.model or (chat.model if chat else None) or default_model_name())
    if model.pro and not is_subscriber(user):
        raise ChatError(
            f"“{model.name}” is available on paid plans; see /pricing/ to upgrade, or pick another model.",
            code="pro_model",
            status=403,
        )
    limit, max_tokens, budget = token_budget(model)
    system_prompt = request.system_prompt if request.system_prompt is not None else (chat.system_prompt if chat else "")
    needed = estimate_message_tokens({"content": request.prompt}) + (
        estimate_message_tokens({"content": system_prompt}) if system_prompt else 0
    )
    if needed > budget:
        raise ChatError(
            f"The prompt is about {needed} tokens; {model.name} accepts at most {budget} "
            f"(its {limit}-token context minus {max_tokens} for the answer).",
            code="prompt_too_long",
            status=413,
        )
    uploads = check_turn_files(user, [*load_attachments(user, request.attachment_ids), *files])
    return PreparedTurn(
        request,
        model,
        chat,
        max_tokens=max_tokens,
        context_budget=budget,
        files=tuple(TurnFile(upload) for upload in uploads),
    )


def check_turn_files(user, files: list[tuple[str, bytes]]) -> list[Upload]:
    """The turn's files, each accepted by its bytes, within the plan's files per message; a file twice is once."""
    if not files:
        return []
    try:
        uploads = check_uploads(list(files), quota.limits_for(user)["files_per_request"])
    except FileRejected as exc:
        raise ChatError(exc.message, code=exc.code, status=exc.status) from None
    unique: dict[str, Upload] = {}
    for upload in uploads:
        unique.setdefault(upload.sha256, upload)
    return list(unique.values())


def _refuse_quota(exc: quota.QuotaExceeded) -> ChatError:
    metrics.QUOTA_REFUSALS.labels(exc.kind).inc()
    return ChatError(str(exc), code="quota_exceeded", status=429)


def do_reserve_turn(user, turn: PreparedTurn) -> tuple[quota.Reservation, PreparedTurn]:
    """Charge the turn's quota: one generation, and one file use per file the chat does not have yet.

    All or nothing: when any reservation is refused (429), those already taken are returned."""
    kind = "image" if turn.ai_model.category == AIModel.Category.IMAGE else "chat"
    taken: list[quota.Reservation] = []
    try:
        reservation = quota.reserve(user, kind)
        taken.append(reservation)
        known = _files_already_in_chat(turn.chat, [file.upload for file in turn.files])
        files = []
        for file in turn.files:
            # The same file in the same chat is processed once, so it is charged once.
            file_reservation = None if file.upload.sha256 in known else quota.reserve(user, "file_rag")
            if file_reservation is not None:
                taken.append(file_reservation)
            files.append(TurnFile(file.upload, file_reservation))
    except quota.QuotaExceeded as exc:
        for done in taken:
            quota.release(done)
        raise _refuse_quota(exc) from None
    return reservation, replace(turn, files=tuple(files))


def do_release_turn(reservation: quota.Reservation, turn: PreparedTurn) -> None:
    """Return everything do_reserve_turn charged (the turn could not start)."""
    quota.release(reservation)
    for file in turn.files:
        if file.reservation is not None:
            quota.release(file.reservation)


def _files_already_in_chat(chat: Chat | None, uploads: list[Upload]) -> set[str]:
    if chat is None or not uploads:
        return set()
    return set(
        Document.objects.filter(
            chat=chat, sha256__in=[upload.sha256 for upload in uploads], status=Document.Status.READY
        ).values_list("sha256", flat=True)
    )


def title_from_prompt(prompt: str) -> str:
    line = " ".join(prompt.split())
    return line[:TITLE_CHARS] + ("…" if len(line) > TITLE_CHARS else "")


@transaction.atomic
def do_start_turn(user, turn: PreparedTurn, reservation: quota.Reservation | None = None) -> ChatQuery:
    """Create the chat (for a first turn) and the query row, which exists from the very start of the turn.

    The turn's quota reservation is noted on the row (a private metadata key), so that whoever settles the turn
    when its instance died can still charge or return it (chat.generations.settle_orphan)."""
    request = turn.request
    chat = turn.chat
    if chat is None:
        title = title_from_prompt(request.prompt)
        chat = Chat.objects.create(
            owner=user,
            title=title,
            name=title,
            model=turn.ai_model.name,
            system_prompt=request.system_prompt or "",
            web_search=request.web_search,
        )
    else:
        chat.model = turn.ai_model.name
        if request.system_prompt is not None:
            chat.system_prompt = request.system_prompt
        chat.web_search = request.web_search
        chat.save(update_fields=["model", "system_prompt", "web_search", "updated_at"])
    query = ChatQuery.objects.create(
        chat=chat,
        prompt=request.prompt,
        model=turn.ai_model.name,
        system_prompt=chat.system_prompt,
        web_search=request.web_search,
        status=ChatQuery.Status.STREAMING,
        metadata=_initial_metadata(turn, reservation),
    )
    invalidate_public_chat(chat.pk)
    if request.attachment_ids:
        # The turn holds the files' bytes now; the staged copies have served their purpose.
        ids = request.attachment_ids
        transaction.on_commit(lambda: do_discard_attachments(user, ids))
    return query


def _initial_metadata(turn: PreparedTurn, reservation: quota.Reservation | None) -> dict:
    metadata = {}
    if turn.files:
        metadata["files"] = [_file_summary(file.upload) for file in turn.files]
    if reservation is not None:
        metadata[RESERVATION_KEY] = {
            "periodId": reservation.period_id,
            "kind": reservation.kind,
            "amount": reservation.amount,
        }
    return metadata


def _file_summary(upload: Upload) -> dict:
    return {"name": upload.name, "kind": upload.kind, "mime": upload.mime, "size": len(upload.data)}


def public_chat_cache_key(chat_id) -> str:
    return f"public-chat:{chat_id}"


def invalidate_public_chat(chat_id) -> None:
    transaction.on_commit(lambda: cache.delete(public_chat_cache_key(chat_id)))


def _set_flag(user, chat_id, field: str, value: bool | None) -> Chat:
    with transaction.atomic():
        chat = get_owned_chat(user, chat_id, for_update=True)
        new_value = (not getattr(chat, field)) if value is None else bool(value)
        setattr(chat, field, new_value)
        # Flags are not activity: the sidebar's order must not jump when one is toggled.
        Chat.objects.filter(pk=chat.pk).update(**{field: new_value})
        invalidate_public_chat(chat.pk)
    return chat


def do_set_shared(user, chat_id, shared: bool | None = None) -> Chat:
    """Set (or, with None, toggle) whether the chat has a public read-only page."""
    return _set_flag(user, chat_id, "shared", shared)


def do_set_bookmarked(user, chat_id, bookmarked: bool | None = None) -> Chat:
    return _set_flag(user, chat_id, "bookmarked", bookmarked)


def check_title(title) -> str:
    if not isinstance(title, str) or not title.strip():
        raise ChatError("The title is empty.", code="invalid_title")
    title = " ".join(title.split())
    if len(title) > 200:
        raise ChatError("Titles are at most 200 characters.", code="invalid_title")
    return title


def do_rename_chat(user, chat_id, title) -> Chat:
    title = check_title(title)
    with transaction.atomic():
        chat = get_owned_chat(user, chat_id)
        chat.title = title
        Chat.objects.filter(pk=chat.pk).update(title=title)
        invalidate_public_chat(chat.pk)
    return chat


def do_delete_chat(user, chat_id) -> None:
    with transaction.atomic():
        chat = get_owned_chat(user, chat_id)
        invalidate_public_chat(chat.pk)
        chat.delete()


def chats_for_sidebar(user, limit: int = 200):
    return Chat.objects.owned_by(user).only("id", "title", "name", "bookmarked", "shared", "updated_at")[:limit]


def public_chat(chat_id) -> Chat:
    chat = Chat.objects.filter(pk=parse_chat_id(chat_id), shared=True).first()
    if chat is None:
        raise ChatNotFound()
    return chat


def get_owned_query(user, query_id) -> ChatQuery:
    try:
        return ChatQuery.objects.select_related("chat").get(pk=parse_chat_id(query_id), chat__owner=user)
    except ChatQuery.DoesNotExist:
        raise ChatError("Answer not found.", code="not_found", status=404) from None


def chat_history(chat: Chat):
    return chat.queries.order_by("created_at")


def bookmarked_chats(user):
    return Chat.objects.owned_by(user).filter(bookmarked=True)


# --- attachments: files staged by the web UI before the turn is sent --------------------------------------------
# The UI streams turns over a WebSocket, whose frames are capped far below a file's size limit, so a picked or
# dropped file is POSTed at once, checked, and kept in the default storage (local media or S3, shared by every
# instance) under the user's id; the turn then names it by id. Stored as attachments/<user id>/<id>_<quoted name>.

ATTACHMENT_ROOT = "attachments"
ATTACHMENT_TTL = dt.timedelta(hours=6)
_ATTACHMENT_ID = re.compile(r"^[0-9a-f]{32}$")
_STORED_NAME_CHARS = 180


@dataclass(frozen=True)
class Attachment:
    id: str
    name: str
    kind: str
    size: int

    @property
    def size_label(self) -> str:
        return format_bytes(self.size)


def _attachment_folder(user) -> str:
    return f"{ATTACHMENT_ROOT}/{int(user.pk)}"


def _stored_name(name: str) -> str:
    """The name percent-encoded (no path can hide in it), shortened before its extension to fit a file name."""
    stem, dot, extension = name.rpartition(".")
    if not dot or len(extension) > 10:
        stem, dot, extension = name, "", ""
    while len(quote(stem + dot + extension, safe="")) > _STORED_NAME_CHARS and stem:
        stem = stem[:-1]
    return quote(stem + dot + extension, safe="") or "file"


def _stored_attachments(user) -> dict[str, str]:
    """attachment id → storage path, for the user's staged files."""
    folder = _attachment_folder(user)
    try:
        _, names = default_storage.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    return {name[:32]: f"{folder}/{name}" for name in names if _ATTACHMENT_ID.match(name[:32]) and name[32:33] == "_"}


def _is_expired(path: str) -> bool:
    try:
        return timezone.now() - default_storage.get_modified_time(path) > ATTACHMENT_TTL
    except (FileNotFoundError, OSError):
        return True


def load_attachments(user, attachment_ids) -> list[tuple[str, bytes]]:
    """(name, bytes) of the user's staged files; someone else's id, or an expired one, is refused."""
    if not attachment_ids:
        return []
    stored = _stored_attachments(user)
    files = []
    for attachment_id in attachment_ids:
        path = stored.get(attachment_id) if _ATTACHMENT_ID.match(attachment_id) else None
        if path is None or _is_expired(path):
            raise ChatError(
                "An attached file is no longer available (attachments are kept for "
                f"{int(ATTACHMENT_TTL.total_seconds() // 3600)} hours); remove it and attach it again.",
                code="attachment_expired",
            )
        with default_storage.open(path, "rb") as stored_file:
            files.append((unquote(path.rsplit("/", 1)[1][33:]), stored_file.read()))
    return files


def do_stage_attachments(user, attachment_ids, new_files: list[tuple[str, bytes]]) -> list[Attachment]:
    """Check `new_files` together with the files already staged for the message (the plan's files per message
    and the request's byte limit count them all), keep the new ones, and return every attachment of the message.

    A refused file is a ChatError naming it; nothing new is kept then."""
    _discard_expired_attachments(user)
    staged = [attachment_id for attachment_id in attachment_ids if attachment_id in _stored_attachments(user)]
    existing = load_attachments(user, staged)
    try:
        uploads = check_uploads([*existing, *new_files], quota.limits_for(user)["files_per_request"])
    except FileRejected as exc:
        raise ChatError(exc.message, code=exc.code, status=exc.status) from None
    ids = list(staged)
    for name, data in new_files:
        attachment_id = uuid.uuid4().hex
        default_storage.save(f"{_attachment_folder(user)}/{attachment_id}_{_stored_name(name)}", ContentFile(data))
        ids.append(attachment_id)
    return [
        Attachment(attachment_id, upload.name, upload.kind, len(upload.data))
        for attachment_id, upload in zip(ids, uploads, strict=True)
    ]


def do_discard_attachments(user, attachment_ids) -> None:
    stored = _stored_attachments(user)
    for attachment_id in attachment_ids:
        if attachment_id in stored:
            default_storage.delete(stored[attachment_id])


def _discard_expired_attachments(user) -> None:
    for path in _stored_attachments(user).values():
        if _is_expired(path):
            default_storage.delete(path)


# --- documents -----------------------------------------------------------------------------------------------


def get_owned_document(user, chat_id, document_id) -> Document:
    """A document of one of the user's chats; anyone else's is "not found"."""
    chat = get_owned_chat(user, chat_id)
    try:
        return chat.documents.get(pk=int(document_id))
    except (Document.DoesNotExist, ValueError, TypeError):
        raise ChatError("Document not found.", code="not_found", status=404) from None


def document_url(chat_id, document_id, page: int | None = None) -> str:
    """The page that serves the original file to its owner; browsers' PDF viewers open #page=N at that page."""
    return f"/chat/{chat_id}/documents/{document_id}/file" + (f"#page={page}" if page else "")


def document_as_dict(document: Document) -> dict:
    return {
        "id": document.pk,
        "chatId": str(document.chat_id),
        "name": document.name,
        "kind": document.kind,
        "mime": document.mime,
        "size": document.size,
        "pages": document.pages,
        "status": document.status,
        "error": document.error,
        "notes": list(document.notes or []),
        "url": document_url(document.chat_id, document.pk),
        "downloadUrl": f"/api/v1/chat/{document.chat_id}/documents/{document.pk}/file",
        "createdAt": document.created_at.isoformat(),
    }


def chat_documents(chat: Chat):
    return chat.documents.order_by("created_at", "id")
