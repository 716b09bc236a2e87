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
from django.db import connection, transaction
from django.db.models import F, Q
from django.urls import reverse
from django.utils import timezone

from billing import charges
from billing.charges import Charge, is_subscriber
from chat import branches, search, vision
from chat.catalog import default_model_name, sync_self_hosted_models
from chat.models import AIModel, Chat, ChatQuery, Tag
from chat.providers import unavailable_reason
from chat.providers.base import DEFAULT_SAMPLING, Sampling
from chat.providers.content import text_of
from core.tokens import IMAGE_TOKENS, answer_budget, estimate_message_tokens
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


def check_encodable(value, what: str) -> None:
    """Refuse text that is not valid Unicode: a lone surrogate ("\\ud800", which JSON can carry) cannot be encoded
    as UTF-8, so neither the database, the token estimate nor any provider could take it."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ChatError(f"The {what} contains invalid characters.", code="invalid_characters") from None


class ChatNotFound(ChatError):
    def __init__(self):
        # Someone else's chat is "not found", never "forbidden", so ids cannot be probed.
        super().__init__("Chat not found.", code="not_found", status=404)


class AnswerNotFound(ChatError):
    def __init__(self):
        # Like chats: someone else's query, or one of another chat, is "not found".
        super().__init__("Answer not found.", code="not_found", status=404)


@dataclass(frozen=True)
class TurnRequest:
    prompt: str
    model: str | None = None
    system_prompt: str | None = None
    web_search: bool = False
    chat_id: uuid.UUID | None = None
    attachment_ids: tuple[str, ...] = ()  # files staged through the web UI (do_stage_attachments)
    # Set by the OpenAI-compatible API (chat/openai_api.py), which sends the whole conversation each time:
    # the client's earlier user/assistant messages, oldest first ({"role", "content"}). When set they replace
    # the chat's stored history; the client's system messages arrive joined as `system_prompt`.
    conversation: tuple[dict, ...] | None = None
    max_tokens: int | None = None  # the client's cap on the answer; never above the model's own budget
    sampling: Sampling = DEFAULT_SAMPLING
    unlisted: bool = False  # the chat is never listed and is deleted once the turn ends (OpenAI `store: false`)
    # A temporary chat (the web UI's toggle; chat/consumers.py): unlisted like the above, but it lives on for the
    # socket that started it, which alone continues it (`chat_id`) and deletes it when it closes.
    temporary: bool = False
    end_user: str = ""  # the client's `user`: who, on their side, asked (kept in the query's metadata)
    # Regenerate or edit (chat/branches.py): the new query is another version of this one's turn (same parent).
    # A regenerate has no prompt of its own (it asks that query's prompt again); an edit brings the new prompt.
    version_of: uuid.UUID | None = None
    # The query a new prompt follows: the last turn of the branch the client shows (a page in another tab may have
    # selected another branch since). None: the chat's selected branch.
    parent_id: uuid.UUID | None = None


@dataclass(frozen=True)
class TurnFile:
    """A file the turn ingests, with the file-RAG charge it holds (None when the chat already has this file)."""

    upload: Upload
    charge: Charge | None = None


@dataclass(frozen=True)
class PreparedTurn:
    request: TurnRequest
    ai_model: AIModel
    chat: Chat | None
    max_tokens: int
    context_budget: int
    files: tuple[TurnFile, ...] = ()
    version_of: ChatQuery | None = None  # the query this turn is another version of (regenerate or edit)
    parent: ChatQuery | None = None  # the query a new prompt follows, when the client named one (parentId)
    # A regenerate or edit asks with the same attachments as its query: their summaries (listed with the new
    # version too), and their images, shown again to a model that sees images (chat/vision.py). Not read again:
    # the chat has them already.
    files_again: tuple[dict, ...] = ()
    images_again: tuple[Upload, ...] = ()


def parse_bool(value, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if value in (None, ""):
        return False
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "on", "off"):
        return value.lower() in ("true", "1", "on")
    raise ChatError(f"{field} must be true or false.", code="invalid_field")


def parse_id(value, not_found: type[ChatError]) -> uuid.UUID:
    """A chat's or query's id; what is not an id at all is as not found as an id nobody has (`not_found`)."""
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except (ValueError, TypeError, AttributeError):
        raise not_found() from None


def parse_row_id(value, not_found: type[Exception]) -> int:
    """A folder's, assistant's or document's id (an integer key); what is not one, or is beyond what the database
    stores, is as not found as an id nobody has (`not_found`)."""
    if isinstance(value, bool):
        raise not_found()
    if isinstance(value, int):
        row_id = value
    elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 18:
        row_id = int(value)
    else:
        raise not_found()
    if not 0 < row_id < 2**63:
        raise not_found()
    return row_id


class DocumentNotFound(ChatError):
    def __init__(self):
        super().__init__("Document not found.", code="not_found", status=404)


def parse_chat_id(value) -> uuid.UUID:
    return parse_id(value, ChatNotFound)


def parse_query_id(value) -> uuid.UUID:
    return parse_id(value, AnswerNotFound)


def parse_turn_request(data, chat_id=None) -> TurnRequest:
    """Turn a client's JSON object (API, socket or form) into a TurnRequest, or say what is wrong with it."""
    if not isinstance(data, dict):
        raise ChatError("The request body must be a JSON object.", code="invalid_body")
    prompt = data.get("prompt")
    version_of = _parse_version_of(data)
    if version_of is not None and "editOf" not in data:
        prompt = ""  # a regenerate asks its query's prompt again (check_turn fills it in)
    elif not isinstance(prompt, str):
        raise ChatError("prompt is required and must be text.", code="empty_prompt")
    elif not prompt.strip():
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
        web_search=parse_bool(data.get("webSearch", data.get("web_search")), "webSearch"),
        chat_id=parse_chat_id(raw_chat_id) if raw_chat_id else None,
        attachment_ids=_parse_attachment_ids(data.get("attachments")),
        version_of=version_of,
        parent_id=_parse_parent_id(data, version_of),
    )


def _parse_parent_id(data: dict, version_of) -> uuid.UUID | None:
    """`parentId`: the query a new prompt follows (the web page sends the last turn it shows; empty: none)."""
    value = data.get("parentId")
    if value in (None, ""):
        return None
    if version_of is not None:
        raise ChatError(
            "A regenerate or edit follows the same turn as its query: send parentId only with a new prompt.",
            code="invalid_field",
        )
    return parse_query_id(value)


def _parse_version_of(data: dict) -> uuid.UUID | None:
    """`regenerateOf` (a query id: ask its prompt again) or `editOf` (a query id, with the new `prompt`)."""
    regenerate_of, edit_of = data.get("regenerateOf"), data.get("editOf")
    if regenerate_of and edit_of:
        raise ChatError("Send regenerateOf or editOf, not both.", code="invalid_field")
    if "regenerateOf" in data and "prompt" in data:
        raise ChatError("A regenerate asks the same prompt again: to change it, send editOf.", code="invalid_field")
    value = regenerate_of or edit_of
    return parse_query_id(value) if value or "regenerateOf" in data or "editOf" in data else None


def _parse_attachment_ids(value) -> tuple[str, ...]:
    # A form with one staged file sends a string, with several a list (htmx's ws extension serialises it so).
    if value in (None, "", []):
        return ()
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(item, str) for item in values):
        raise ChatError("attachments must be a list of attachment ids.", code="invalid_field")
    return tuple(dict.fromkeys(item for item in values if item))


def get_owned_chat(user, chat_id, for_update: bool = False) -> Chat:
    chat_id = parse_chat_id(chat_id)
    if not for_update:
        # Plain SQL (the same row as Chat.objects.owned_by(user).get(pk=...)): the ORM's query building cost twice
        # the query on every chat read (bench/README.md, "Request overhead").
        sql = f"SELECT * FROM {Chat._meta.db_table} WHERE id = %s AND owner_id = %s AND unlisted = %s"
        found = list(Chat.objects.raw(sql, [Chat._meta.pk.get_db_prep_value(chat_id, connection), user.pk, False]))
        if not found:
            raise ChatNotFound()
        return found[0]
    try:
        return Chat.objects.select_for_update().owned_by(user).get(pk=chat_id)
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
    for value, what in ((request.prompt, "prompt"), (request.system_prompt, "system prompt"), (request.model, "model")):
        check_encodable(value, what)
    version_of = None
    # Only the socket that started a temporary chat names it (and then sets `temporary`): its turns are reachable.
    temporary = (request.chat_id,) if request.temporary and request.chat_id else ()
    if request.version_of is not None:
        version_of = check_version_of(user, request.version_of, request.chat_id, temporary)
        request = replace(request, chat_id=version_of.chat_id, prompt=request.prompt or version_of.prompt)
    if temporary:
        chat = get_temporary_chat(user, request.chat_id)
    else:
        chat = get_owned_chat(user, request.chat_id) if request.chat_id else None
    parent = check_parent(user, request.parent_id, chat, temporary) if request.parent_id is not None else None
    model = check_model(request.model or (chat.model if chat else None) or default_model_name())
    if model.pro and not is_subscriber(user):
        raise ChatError(
            f"“{model.name}” is available on paid plans; see /pricing/ to upgrade, or pick another model.",
            code="pro_model",
            status=403,
        )
    limit, max_tokens, budget = token_budget(model)
    if request.max_tokens is not None:
        max_tokens = min(max_tokens, request.max_tokens)
    system_prompt = request.system_prompt if request.system_prompt is not None else (chat.system_prompt if chat else "")
    needed = estimate_message_tokens({"content": request.prompt}) + (
        estimate_message_tokens({"content": system_prompt}) if system_prompt else 0
    )
    if request.conversation is not None:
        # A client's conversation is sent whole or refused: it is not ours to summarise or shorten.
        needed += sum(map(estimate_message_tokens, request.conversation))
    if needed > budget:
        raise ChatError(
            f"The prompt is about {needed} tokens; {model.name} accepts at most {budget} "
            f"(its {limit}-token context minus {max_tokens} for the answer).",
            code="prompt_too_long",
            status=413,
        )
    uploads = check_turn_files(user, [*load_attachments(user, request.attachment_ids), *files])
    files_again, images_again = _attachments_again(version_of, uploads, model)
    images = sum(1 for upload in [*uploads, *images_again] if upload.kind == "image") if model.vision else 0
    if images and needed + images * IMAGE_TOKENS > budget:  # a model that sees images is sent them (chat/vision.py)
        raise ChatError(
            f"The prompt and its {images} image{'' if images == 1 else 's'} are about "
            f"{needed + images * IMAGE_TOKENS} tokens; {model.name} accepts at most {budget}.",
            code="prompt_too_long",
            status=413,
        )
    return PreparedTurn(
        request,
        model,
        chat,
        max_tokens=max_tokens,
        context_budget=budget,
        files=tuple(TurnFile(upload) for upload in uploads),
        version_of=version_of,
        parent=parent,
        files_again=files_again,
        images_again=images_again,
    )


def _attachments_again(version_of: ChatQuery | None, uploads: list[Upload], model: AIModel):
    """(summaries, images) of the files `version_of`'s turn had that this one does not bring itself."""
    if version_of is None:
        return (), ()
    own = {upload.sha256 for upload in uploads}
    files = tuple(file for file in vision.files_of_query(version_of) if file.get("sha256") not in own)
    return files, tuple(vision.images_of_query(version_of, list(files))) if model.vision else ()


def check_parent(user, query_id, chat: Chat | None, temporary_chats=()) -> ChatQuery:
    """The query a new prompt follows: the user's, in the chat the prompt continues (with no chat, there is none
    to follow: a first turn starts a chat)."""
    query = get_owned_query(user, query_id, temporary_chats)
    if chat is None or query.chat_id != chat.pk:
        raise AnswerNotFound()
    return query


def check_version_of(user, query_id, chat_id=None, temporary_chats=()) -> ChatQuery:
    """The query a regenerate or edit makes another version of: the user's, in `chat_id` when given, and done."""
    query = get_owned_query(user, query_id, temporary_chats)
    if chat_id is not None and query.chat_id != chat_id:
        raise AnswerNotFound()
    if query.is_streaming:
        raise ChatError(
            "This answer is still being written: stop it (or wait for it to finish) before regenerating or editing.",
            code="still_streaming",
            status=409,
        )
    return query


def check_turn_files(user, files: list[tuple[str, bytes]]) -> list[Upload]:
    """The turn's files, each accepted by its bytes, within the plan's files per message; a file twice is once."""
    if not files:
        return []
    try:
        uploads = check_uploads(list(files), charges.limits_for(user)["files_per_request"])
    except FileRejected as exc:
        raise ChatError(exc.message, code=exc.code, status=exc.status) from None
    unique: dict[str, Upload] = {}
    for upload in uploads:
        unique.setdefault(upload.sha256, upload)
    return list(unique.values())


def do_reserve_turn(user, turn: PreparedTurn, chat_query_id=None) -> tuple[Charge, PreparedTurn]:
    """Charge the turn's quota: one generation, and one file use per file the chat does not have yet; the charges
    name `chat_query_id` (the query do_start_turn creates in the same transaction) when given.

    All or nothing: when any unit is refused (429), none is taken."""
    kind = "image" if turn.ai_model.category == AIModel.Category.IMAGE else "chat"
    known = _files_already_in_chat(turn.chat, [file.upload for file in turn.files])
    # The same file in the same chat is processed once, so it is charged once.
    new_files = [file for file in turn.files if file.upload.sha256 not in known]
    try:
        generation, *file_charges = charges.do_reserve(
            user, [kind] + ["file_rag"] * len(new_files), chat_query_id=chat_query_id
        )
    except charges.QuotaExceeded as exc:
        raise ChatError(str(exc), code="quota_exceeded", status=429) from None
    charged = dict(zip((file.upload.sha256 for file in new_files), file_charges, strict=True))
    files = tuple(TurnFile(file.upload, charged.get(file.upload.sha256)) for file in turn.files)
    return generation, replace(turn, files=files)


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


@transaction.atomic(savepoint=False)  # raises only on database errors: inside begin_turn's transaction, no savepoint
def do_start_turn(user, turn: PreparedTurn, charge: Charge | None = None, query_id=None) -> ChatQuery:
    """Create the chat (for a first turn) and the query row (with `query_id` when given: the id its charges were
    reserved with), which exists from the very start of the turn.

    The turn's charges are assigned to the row, so that whoever settles the turn when its instance died can still
    charge or return them (chat.generations.settle_orphan)."""
    request = turn.request
    chat = turn.chat
    # The new query ends the branch shown, whichever way it comes (a new prompt, a regenerate, an edit): the chat's
    # row names it (Chat.branch_leaf) in the write it has anyway.
    query_id = query_id if query_id is not None else uuid.uuid4()
    follows_shown = turn.version_of is None and turn.parent is None
    client_turns = []  # a new chat's earlier turns, when the client sent them
    if chat is None:
        title = title_from_prompt(request.prompt)
        chat = Chat.objects.create(
            owner=user,
            title=title,
            name=title,
            model=turn.ai_model.name,
            system_prompt=request.system_prompt or "",
            web_search=request.web_search,
            unlisted=request.unlisted or request.temporary,
            branch_leaf=query_id,
        )
        if request.conversation and not request.unlisted:
            client_turns = _save_client_conversation(chat, request.conversation)
        # The client's conversation, when stored, is one branch: the new prompt follows its last turn.
        shown_leaf = client_turns[-1].pk if client_turns else None
    else:
        # Read before the chat's row names the new query as the branch's end; from the stored leaf, so a turn's
        # start costs the same whatever the chat's length.
        shown_leaf = branches.shown_leaf_id(chat.pk) if follows_shown else None
        chat.model = turn.ai_model.name
        if request.system_prompt is not None:
            chat.system_prompt = request.system_prompt
        chat.web_search = request.web_search
        chat.branch_leaf = query_id
        chat.save(update_fields=["model", "system_prompt", "web_search", "branch_leaf", "updated_at"])
    # A new prompt follows the branch on screen (the one the client shows, when it said which: `parent`, else the
    # selected one); a regenerate or edit is another version of its query's turn.
    has_turns = turn.chat is not None or bool(request.conversation)
    if turn.version_of is not None:
        parent_id = turn.version_of.parent_id
    elif turn.parent is not None:
        parent_id = turn.parent.pk
    else:
        parent_id = shown_leaf
    query = ChatQuery.objects.create(
        id=query_id,
        chat=chat,
        parent_id=parent_id,
        prompt=request.prompt,
        model=turn.ai_model.name,
        system_prompt=chat.system_prompt,
        web_search=request.web_search,
        status=ChatQuery.Status.STREAMING,
        metadata=_initial_metadata(turn),
    )
    # A new chat's title, its client-sent turns and this prompt, in one write (an unlisted chat is never indexed);
    # the answer when it ends (chat/pipeline.py _write_final: search.index_answer).
    search.index_new(chat, [*client_turns, query], title=turn.chat is None)
    if has_turns and not follows_shown:
        # The new query becomes the version shown, and so does every turn above it. (A prompt after the branch
        # shown already is: it is the only child of that branch's last turn, and every turn above is chosen.)
        branches.select_path(chat.pk, [*branches.ancestor_ids(parent_id), query.pk])
    charges.do_assign_to_query([charge, *(file.charge for file in turn.files)], query.pk)
    invalidate_public_chat(chat.pk)
    if request.attachment_ids:
        # The turn holds the files' bytes now; the staged copies have served their purpose.
        ids = request.attachment_ids
        transaction.on_commit(lambda: do_discard_attachments(user, ids))
    return query


def _save_client_conversation(chat: Chat, conversation: tuple[dict, ...]) -> list[ChatQuery]:
    """A stored chat shows the conversation the client sent before its last prompt, as answered turns: each
    run of user messages becomes one prompt, the assistant messages after it its answer. Returns them, oldest
    first (the caller indexes them with the new turn)."""
    saved = []
    exchanges: list[list[list[str]]] = []
    for message in conversation:
        side = 0 if message["role"] == "user" else 1
        if not exchanges or (side == 0 and exchanges[-1][1]):
            exchanges.append([[], []])
        exchanges[-1][side].append(text_of(message["content"]))  # a client's images are not stored: text only
    base = timezone.now() - dt.timedelta(seconds=1)
    previous = None  # each exchange follows the one before it (one branch: chat/branches.py)
    for position, (prompts, answers) in enumerate(exchanges):
        query = previous = ChatQuery.objects.create(
            chat=chat,
            parent=previous,
            prompt="\n\n".join(prompts),
            model=chat.model,
            system_prompt=chat.system_prompt,
            response="\n\n".join(answers),
            status=ChatQuery.Status.COMPLETE,
            metadata={"fromClient": True},
        )
        # Ordered before the new turn (history is ordered by created_at, which auto_now_add sets to now).
        ChatQuery.objects.filter(pk=query.pk).update(created_at=base + dt.timedelta(microseconds=position))
        saved.append(query)
    return saved


def _initial_metadata(turn: PreparedTurn) -> dict:
    metadata = {}
    if turn.request.end_user:
        metadata["endUser"] = turn.request.end_user
    if turn.files or turn.files_again:
        metadata["files"] = [*(_file_summary(file.upload) for file in turn.files), *turn.files_again]
    return metadata


def _file_summary(upload: Upload) -> dict:
    # sha256: a regenerate of this turn finds its images again among the chat's documents (chat/vision.py).
    return {"name": upload.name, "kind": upload.kind, "mime": upload.mime, "size": len(upload.data),
            "sha256": upload.sha256}


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
    check_encodable(title, "title")
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
        search.index_chats([chat.pk])
        invalidate_public_chat(chat.pk)
    return chat


def do_delete_chat(user, chat_id) -> None:
    with transaction.atomic():
        chat = get_owned_chat(user, chat_id)
        invalidate_public_chat(chat.pk)
        chat.delete()


# Chat lists come a page at a time, newest activity first; `before` is the cursor of the last chat of the page
# before (ChatPage.next_cursor).
CHAT_PAGE_SIZE = 50
MAX_CHAT_PAGE_SIZE = 200
# What Chat.as_dict() reads: the lists load these columns and no others (not the summary), so serialising a page
# never goes back to the database for a deferred field.
CHAT_LIST_FIELDS = (
    "id",
    "title",
    "name",
    "model",
    "system_prompt",
    "web_search",
    "shared",
    "bookmarked",
    "folder_id",
    "assistant_id",
    "pinned",
    "created_at",
    "updated_at",
)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# "p" before a cursor: the page ended among the pinned chats (pinned-first lists: chat_page(pinned_first=True)).
_CURSOR = re.compile(r"^(p?)(\d{1,19})_([0-9a-f]{32})$")


class ChatPage(list):
    """One page of a chat list (a list of chats) and the cursor of the next page (None: this is the last)."""

    def __init__(self, chats, next_cursor: str | None):
        super().__init__(chats)
        self.next_cursor = next_cursor


def chat_cursor(chat: Chat, pinned_first: bool = False) -> str:
    """Where a list continues after `chat`: its last activity (microseconds since 1970, UTC) and its id (and, in a
    pinned-first list, "p" when it is pinned)."""
    mark = "p" if pinned_first and chat.pinned else ""
    return f"{mark}{(chat.updated_at - _EPOCH) // dt.timedelta(microseconds=1)}_{chat.pk.hex}"


def _parse_chat_cursor(value) -> tuple[dt.datetime, uuid.UUID, bool]:
    match = _CURSOR.match(value) if isinstance(value, str) else None
    if match is None:
        raise ChatError(
            "before must be a cursor from a previous page (nextCursor), e.g. 1767225600000000_<32 hex digits>.",
            code="invalid_cursor",
        )
    try:
        at = _EPOCH + dt.timedelta(microseconds=int(match[2]))
    except OverflowError:
        raise ChatError("before is not a cursor this server gave.", code="invalid_cursor") from None
    return at, uuid.UUID(match[3]), bool(match[1])


def parse_page_size(value) -> int:
    if value in (None, ""):
        return CHAT_PAGE_SIZE
    try:
        size = int(value)
    except (TypeError, ValueError):
        size = 0
    if not 1 <= size <= MAX_CHAT_PAGE_SIZE:
        raise ChatError(f"limit must be a whole number from 1 to {MAX_CHAT_PAGE_SIZE}.", code="invalid_field")
    return size


def chat_page(chats, before=None, limit=None, fields=CHAT_LIST_FIELDS, pinned_first: bool = False) -> ChatPage:
    """A page of `chats` (a queryset), newest activity first (with `pinned_first`, the pinned chats before the
    others): those after the cursor `before` (None: from the newest), at most `limit`, in one SQL query whatever
    the number of chats (one row more than the page says whether another page follows), and one more for the
    page's tags."""
    size = parse_page_size(limit)
    chats = chats.only(*fields)
    chats = chats.order_by("-pinned", "-updated_at", "-id") if pinned_first else chats.order_by("-updated_at", "-id")
    if before not in (None, ""):
        at, chat_id, after_pinned = _parse_chat_cursor(before)
        later = Q(updated_at__lt=at) | Q(updated_at=at, id__lt=chat_id)
        if not pinned_first:
            chats = chats.filter(later)
        elif after_pinned:
            chats = chats.filter((Q(pinned=True) & later) | Q(pinned=False))
        else:
            chats = chats.filter(later, pinned=False)
    rows = list(chats[: size + 1])
    page = rows[:size]
    read_tag_names(page)
    return ChatPage(page, chat_cursor(page[-1], pinned_first) if len(rows) > size else None)


def read_tag_names(chats: list[Chat]) -> None:
    """Each chat's sorted tag names (Chat.tag_names), in one query over the chats' tag links. Plain SQL: a prefetch
    would build a related manager and a Tag object per chat and tag, and even the ORM's values_list cost more to
    build than the query takes to run (bench/README.md, "Request overhead")."""
    if not chats:
        return
    links, tags = Chat.tags.through._meta.db_table, Tag._meta.db_table
    chat_field = Chat._meta.pk
    # Keyed by the id as the database gives it back (a hex string on SQLite, a UUID on PostgreSQL).
    keys = [chat_field.get_db_prep_value(chat.pk, connection) for chat in chats]
    names: dict = {key: [] for key in keys}
    sql = (
        f"SELECT l.chat_id, t.name FROM {links} l INNER JOIN {tags} t ON t.id = l.tag_id "
        f"WHERE l.chat_id IN ({', '.join(['%s'] * len(names))}) ORDER BY t.name"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, list(names))
        for chat_id, name in cursor.fetchall():
            names[chat_id].append(name)
    for chat, key in zip(chats, keys, strict=True):
        chat.listed_tag_names = names[key]


def chats_for_sidebar(user, before=None, limit=None) -> ChatPage:
    """A page of the sidebar's main list: the user's pinned chats first (in a folder or not), then the chats in no
    folder, newest activity first (a folder's chats load when it is opened: chat/library.py)."""
    chats = Chat.objects.owned_by(user).filter(Q(folder__isnull=True) | Q(pinned=True))
    return chat_page(chats, before, limit, pinned_first=True)


def check_search_query(value) -> str:
    """What a search asks for: some text, at most search.MAX_QUERY_CHARS characters."""
    if not isinstance(value, str) or not value.strip():
        raise ChatError("Type something to search for (q).", code="empty_query")
    if len(value) > search.MAX_QUERY_CHARS:
        raise ChatError(
            f"Searches are at most {search.MAX_QUERY_CHARS} characters; this one is {len(value)}.",
            code="query_too_long",
        )
    check_encodable(value, "search")
    return value


def parse_search_cursor(value) -> int:
    """The `cursor` of a search's next page (the `nextCursor` of the one before; none: the first page)."""
    if value in (None, ""):
        return 0
    valid = isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 6
    if not valid or int(value) >= search.CANDIDATES:
        raise ChatError("cursor must be the nextCursor of the previous page.", code="invalid_cursor")
    return int(value)


def search_chats(user, query, cursor=None, limit: int = search.PAGE_SIZE) -> search.SearchPage:
    """The user's chats whose title, prompts or answers match `query`, best first (chat/search.py)."""
    return search.search(user, check_search_query(query), parse_search_cursor(cursor), limit)


def public_chat(chat_id) -> Chat:
    chat = Chat.objects.filter(pk=parse_chat_id(chat_id), shared=True).first()
    if chat is None:
        raise ChatNotFound()
    return chat


def get_owned_query(user, query_id, temporary_chats=()) -> ChatQuery:
    """One of the user's queries, in a listed chat or in one of `temporary_chats` (the ids of the temporary chats
    the calling socket started: nobody else reaches those)."""
    reachable = Q(chat__unlisted=False)
    if temporary_chats:
        reachable |= Q(chat_id__in=list(temporary_chats))
    try:
        return ChatQuery.objects.select_related("chat").get(reachable, pk=parse_query_id(query_id), chat__owner=user)
    except ChatQuery.DoesNotExist:
        raise AnswerNotFound() from None


def get_temporary_chat(user, chat_id) -> Chat:
    """A temporary chat of the user's (chat/consumers.py names only those its socket started)."""
    chat = Chat.objects.filter(owner=user, unlisted=True, pk=parse_chat_id(chat_id)).first()
    if chat is None:
        raise ChatNotFound()
    return chat


def chat_history(chat: Chat, leaf_id=None) -> list[ChatQuery]:
    """The branch shown for the chat, first turn to last, each query with its `versions` (chat/branches.py);
    with `leaf_id`, the branch ending at that query instead (one of the chat's, or "Answer not found.")."""
    if leaf_id is None:
        return branches.selected_branch(chat.pk)
    branch = branches.branch_ending_at(chat.pk, parse_query_id(leaf_id))
    if not branch:
        raise AnswerNotFound()
    return branch


class HistoryPage(list):
    """A page of one branch of a chat (its queries, oldest first, each with its `versions`) and the cursor of the
    turns before it (the id of its first query, for `before`; None: the page starts at the chat's first turn)."""

    def __init__(self, turns, next_cursor: str | None):
        super().__init__(turns)
        self.next_cursor = next_cursor


# A chat's history comes a page of turns at a time, newest first (a screen or two of them); `before` is the id of the
# first query of the page below (HistoryPage.next_cursor).
HISTORY_PAGE_SIZE = 20


def chat_history_page(chat: Chat, leaf_id=None, before=None, limit=None, as_rows: bool = False) -> HistoryPage:
    """The newest `limit` turns (default HISTORY_PAGE_SIZE, at most MAX_CHAT_PAGE_SIZE) of the branch shown, or of the
    branch ending at `leaf_id` ("Answer not found." when not the chat's), or, with `before` (a page's nextCursor),
    the turns above that query. Four SQL queries whatever the chat's length: the shown leaf (from the one stored on
    the chat), the walk up from it (chat/branches.py history_walk, bounded by the page), the page's versions and
    the page's tags; the turns before the page are never read. `as_rows`: the turns as plain rows
    (chat.branches.WalkedRow, for ChatQuery.as_dict) rather than model instances, which cost more than the SQL."""
    size = parse_page_size(limit) if limit not in (None, "") else HISTORY_PAGE_SIZE
    if before not in (None, ""):
        try:
            end = parse_query_id(before)
        except AnswerNotFound:
            end = None
        # The cursor's own query is read too (it ends the walk's first row), to know it is this chat's.
        walk = branches.history_walk(end, branches.MAX_WALK_ROOM, max_turns=size + 1, as_rows=as_rows) if end else None
        walk = walk.turns if walk else ()
        if not walk or walk[-1].chat_id != chat.pk:
            raise ChatError("before must be the nextCursor of a previous page of this chat.", code="invalid_cursor")
        turns = list(walk[:-1])
    else:
        end = parse_query_id(leaf_id) if leaf_id is not None else branches.shown_leaf_id(chat.pk)
        walk = branches.history_walk(end, branches.MAX_WALK_ROOM, max_turns=size, as_rows=as_rows) if end else None
        turns = list(walk.turns) if walk else []
        if leaf_id is not None and (not turns or turns[-1].chat_id != chat.pk):
            raise AnswerNotFound()
    more = bool(turns) and turns[0].parent_id is not None
    return HistoryPage(branches.annotate_versions(chat.pk, turns), str(turns[0].pk) if more else None)


def chat_history_showing(chat: Chat, query_id) -> list[ChatQuery]:
    """The branch that shows `query_id` (a search result's turn, perhaps a version not selected): its turns above,
    it, and the versions last shown below it, each with its `versions`; nothing is selected by looking."""
    tree = branches.chat_tree(chat.pk)
    branch = tree.branch_through(parse_query_id(query_id))
    if not branch:
        raise AnswerNotFound()
    return tree.annotate(branch)


def chat_tree(chat: Chat) -> list[ChatQuery]:
    """Every query of the chat, every version of every turn, oldest first."""
    return chat.queries.order_by("created_at", "id")


def get_chat_query(user, chat_id, query_id) -> ChatQuery:
    """One of the user's queries, in that chat; anyone else's, or one of another chat, is "Answer not found."."""
    chat = get_owned_chat(user, chat_id)
    query = get_owned_query(user, parse_query_id(query_id))
    if query.chat_id != chat.pk:
        raise AnswerNotFound()
    return query


def query_on_branch(user, chat_id, query_id) -> ChatQuery:
    """One of the user's queries in that chat, with its `versions` (chat/branches.py)."""
    query = get_chat_query(user, chat_id, query_id)
    query.versions = branches.chat_tree(query.chat_id, branches.SHAPE_FIELDS).versions_of(query)
    return query


def do_select_version(user, chat_id, query_id) -> tuple[list[ChatQuery], list[ChatQuery]]:
    """Show `query_id`'s version of its turn (and the turns above it). Returns the turns no longer shown (the
    version shown before at that turn, and the branch below it) and the branch now shown from that turn down (the
    versions chosen below it are those last shown there), each query with its `versions`."""
    query = get_chat_query(user, chat_id, query_id)
    with transaction.atomic():
        tree = branches.chat_tree(query.chat_id)
        path = tree.path_to(query.pk)
        hidden = tree.descend(tree.chosen_child(query.parent_id))
        branches.select_path(query.chat_id, [q.pk for q in path])
        below = tree.descend(tree.queries[query.pk])
        branches.store_shown_leaf(query.chat_id, below[-1].pk)
        invalidate_public_chat(query.chat_id)
    shown = tree.annotate(below)
    return hidden, shown


def bookmarked_chats(user, before=None, limit=None) -> ChatPage:
    """A page of the user's bookmarked chats, newest activity first."""
    return chat_page(Chat.objects.owned_by(user).filter(bookmarked=True), before, limit)


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
        uploads = check_uploads([*existing, *new_files], charges.limits_for(user)["files_per_request"])
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


def usable_collection_ids(chat_id) -> list[int]:
    """The document collections a chat searches besides its own files: its assistant's (chat/assistants.py), while
    that assistant is the chat owner's own or published. One rule for retrieval and for serving the files."""
    return list(
        Chat.objects.filter(pk=chat_id, assistant__collection__isnull=False)
        .filter(Q(assistant__owner_id=F("owner_id")) | Q(assistant__published=True))
        .values_list("assistant__collection_id", flat=True)
    )


def get_owned_document(user, chat_id, document_id) -> Document:
    """A document of one of the user's chats, or of the assistant such a chat was started from (its citations link
    to them through the chat); anyone else's is "not found"."""
    chat = get_owned_chat(user, chat_id)
    document_id = parse_row_id(document_id, DocumentNotFound)
    where = Q(chat=chat)
    collection_ids = usable_collection_ids(chat.pk)
    if collection_ids:
        where |= Q(collection_id__in=collection_ids)
    document = Document.objects.filter(where, pk=document_id).first()
    if document is None:
        raise ChatError("Document not found.", code="not_found", status=404)
    return document


def document_url(chat_id, document_id, page: int | None = None) -> str:
    """The page that serves the original file to its owner; browsers' PDF viewers open #page=N at that page."""
    url = reverse("chat:document_file", kwargs={"chat_id": chat_id, "document_id": document_id})
    return url + (f"#page={page}" if page else "")


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
        "downloadUrl": reverse(
            "api:download_document", kwargs={"chat_id": document.chat_id, "document_id": document.pk}
        ),
        "createdAt": document.created_at.isoformat(),
    }


def chat_documents(chat: Chat) -> list[Document]:
    """The chat's documents, oldest first. Plain SQL: the related manager's query building cost more than the query
    (most chats have none)."""
    sql = f"SELECT * FROM {Document._meta.db_table} WHERE chat_id = %s ORDER BY created_at, id"
    return list(Document.objects.raw(sql, [Chat._meta.pk.get_db_prep_value(chat.pk, connection)]))
