"""Export and import of chats: `export_*` write a chat (or all of a user's) as Markdown, JSON or a ZIP of JSON;
`check_import` reads a file (QueryNox's JSON, a ZIP of it, ChatGPT's conversations.json or its export ZIP) into an
ImportPlan without touching the database, and `do_import` writes a plan in one transaction, so a refused or failed
import leaves nothing behind.

What a file may hold is bounded before anything is parsed or written: its size (IMPORT_MAX_BYTES), what a ZIP
unpacks to (declared sizes first, then a running count while it inflates, so a ZIP bomb stops at the cap), its
members, its nesting (the JSON parser's own depth limit answers 400), the chats, turns and characters it yields.
Text is kept as text: prompts are shown escaped and answers through the sanitising Markdown renderer
(chat/markdown.py), so HTML in an imported file stays inert. Imports are charged to no quota; they are counted per
user and day (IMPORT_DAILY_LIMIT)."""

import datetime as dt
import io
import json
import re
import tempfile
import uuid
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django.utils.text import slugify

from chat import branches, search
from chat.catalog import default_model_name
from chat.models import AIModel, Chat, ChatQuery
from chat.services import ChatError
from core.ratelimit import allow, wait_text
from core.tokens import estimate_tokens
from rag.files import format_bytes

EXPORT_FORMAT = "querynox.chat"  # one chat, every version of every turn
EXPORT_LIST_FORMAT = "querynox.chats"  # several, as {"format", "version", "chats": [<a querynox.chat document>]}
EXPORT_VERSION = 1
IMPORT_RATE_SCOPE = "chat-import"
DAY_SECONDS = 24 * 3600
TITLE_MAX_CHARS = 200  # Chat.title / Chat.name
MODEL_MAX_CHARS = 100  # Chat.model / ChatQuery.model
TRUNCATED = "\n\n[… cut on import: the original was longer]"
UNTITLED = "Imported chat"
ZIP_READ_CHUNK = 64 * 1024
TIMESTAMP_BATCH = 150  # rows per UPDATE: 5 parameters each, within SQLite's oldest limit of 999
# Timestamps from a file are kept when they are plausible: not before this, nor later than a day from now.
EARLIEST_SANE_TIME = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
# ChatGPT: mapping nodes read per turn allowed, and the assistant messages joined into one answer (an answer is a
# few of them: text, a tool call, its result, more text); both bound the work a hostile tree can cause.
NODES_PER_QUERY = 5
MAX_ANSWER_PARTS = 200
_SURROGATES = re.compile("[\ud800-\udfff]")


class ImportRefused(ChatError):
    """A file we do not import (nothing of it is written); `status` 400 for what it is, 413 for its size."""

    def __init__(self, message: str, code: str = "import_invalid", status: int = 400):
        super().__init__(message, code=code, status=status)


# --- export -------------------------------------------------------------------------------------------------------


def _query_document(query: ChatQuery) -> dict:
    as_dict = query.as_dict()
    return {
        "id": as_dict["id"],
        "parentId": as_dict["parentId"],
        "selected": query.selected,
        "prompt": query.prompt,
        "response": query.response,
        "model": query.model,
        "systemPrompt": query.system_prompt,
        "webSearch": query.web_search,
        "status": query.status,
        "error": query.error,
        "metadata": as_dict["metadata"],
        "createdAt": as_dict["createdAt"],
        "updatedAt": as_dict["updatedAt"],
    }


def chat_document(chat: Chat, queries) -> dict:
    """A chat as QueryNox's JSON: the chat and every query (every version of every turn) oldest first, each with
    its parentId and whether it is the version shown at its fork (`selected`), so the whole tree comes back."""
    return {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "exportedAt": timezone.now().isoformat(),
        # The chat's own fields, named as the API names them (not as_dict(): it reads related rows, per chat).
        "chat": {
            "id": str(chat.pk),
            "title": chat.title,
            "chatName": chat.name,
            "model": chat.model,
            "systemPrompt": chat.system_prompt,
            "webSearch": chat.web_search,
            "createdAt": chat.created_at.isoformat(),
            "updatedAt": chat.updated_at.isoformat(),
        },
        "queries": [_query_document(query) for query in queries],
    }


def _tree_queries(chat: Chat):
    return ChatQuery.objects.filter(chat=chat).order_by("created_at", "id")


def export_json(chat: Chat) -> bytes:
    return json.dumps(chat_document(chat, _tree_queries(chat)), ensure_ascii=False, indent=2).encode()


def export_markdown(chat: Chat, branch: list[ChatQuery]) -> bytes:
    """The branch shown, as Markdown (one branch: other versions are in the JSON export)."""
    lines = [f"# {chat.display_name}", "", f"- Model: {chat.model}", f"- Created: {chat.created_at:%Y-%m-%d %H:%M} UTC"]
    if chat.system_prompt:
        lines += ["- System prompt:", "", *(f"  > {line}" for line in chat.system_prompt.splitlines()), ""]
    lines += [f"- Exported from QueryNox: {timezone.now():%Y-%m-%d %H:%M} UTC", ""]
    for query in branch:
        lines += ["---", "", "### You", ""]
        versions = getattr(query, "versions", None)
        if versions is not None and versions.count > 1:
            lines += [f"_Version {versions.position} of {versions.count} (the JSON export holds every version)._", ""]
        lines += [query.prompt, "", f"### Assistant ({query.model})", "", query.response or "_(no answer)_", ""]
    return "\n".join(lines).encode()


def export_filename(chat: Chat, extension: str) -> str:
    slug = slugify(chat.display_name)[:50].strip("-") or "chat"
    return f"{slug}-{str(chat.pk)[:8]}.{extension}"


def export_zip(user, batch: int = 200):
    """Every chat of the user as one JSON file each in a ZIP, written to a temporary file (memory holds one batch
    of chats at a time, whatever their number); returns the file, rewound. The caller closes it."""
    spooled = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)  # noqa: SIM115 (returned open)
    chat_ids = list(Chat.objects.owned_by(user).order_by("created_at", "id").values_list("id", flat=True))
    with zipfile.ZipFile(spooled, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for start in range(0, len(chat_ids), batch):
            ids = chat_ids[start : start + batch]
            chats = Chat.objects.owned_by(user).in_bulk(ids)
            by_chat: dict = {}
            for query in ChatQuery.objects.filter(chat_id__in=ids).order_by("created_at", "id"):
                by_chat.setdefault(query.chat_id, []).append(query)
            for chat_id in ids:
                chat = chats.get(chat_id)
                if chat is None:  # deleted meanwhile
                    continue
                document = chat_document(chat, by_chat.get(chat_id, []))
                name = f"chats/{chat.created_at:%Y-%m-%d}-{export_filename(chat, 'json')}"
                archive.writestr(name, json.dumps(document, ensure_ascii=False, indent=2))
    spooled.seek(0)
    return spooled


# --- import: what a file holds ------------------------------------------------------------------------------------


@dataclass
class ImportedQuery:
    key: str  # its id in the file
    parent_key: str | None
    prompt: str
    response: str
    model: str = ""
    system_prompt: str = ""
    web_search: bool = False
    selected: bool = True
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None


@dataclass
class ImportedChat:
    title: str
    name: str = ""
    model: str = ""
    system_prompt: str = ""
    web_search: bool = False
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None
    queries: list[ImportedQuery] = field(default_factory=list)  # each after its parent


@dataclass
class ImportPlan:
    source: str  # "querynox" or "chatgpt"
    chats: list[ImportedChat]

    @property
    def query_count(self) -> int:
        return sum(len(chat.queries) for chat in self.chats)


class _Budget:
    """What one import may still yield: chats, queries and characters of text, across all its files."""

    def __init__(self):
        self.chats = settings.IMPORT_MAX_CHATS
        self.queries = settings.IMPORT_MAX_QUERIES
        self.chars = settings.IMPORT_MAX_UNPACKED_BYTES
        self.nodes = NODES_PER_QUERY * settings.IMPORT_MAX_QUERIES

    def take_nodes(self, count: int):
        # ChatGPT's mapping holds more nodes than turns (system, tool and hidden messages): a few per turn.
        self.nodes -= count
        if self.nodes < 0:
            raise ImportRefused(
                f"The file holds more than {NODES_PER_QUERY * settings.IMPORT_MAX_QUERIES} messages; "
                "import it in parts.",
                code="import_too_large",
                status=413,
            )

    def take_chat(self):
        self.chats -= 1
        if self.chats < 0:
            raise ImportRefused(
                f"The file holds more than {settings.IMPORT_MAX_CHATS} chats; import it in parts.",
                code="import_too_large",
                status=413,
            )

    def take_query(self, *texts: str):
        self.queries -= 1
        self.chars -= sum(len(text) for text in texts)
        if self.queries < 0:
            raise ImportRefused(
                f"The file holds more than {settings.IMPORT_MAX_QUERIES} messages; import it in parts.",
                code="import_too_large",
                status=413,
            )
        if self.chars < 0:
            raise ImportRefused(
                f"The file holds more than {settings.IMPORT_MAX_UNPACKED_BYTES} characters of text.",
                code="import_too_large",
                status=413,
            )


def clean_text(value, limit: int) -> str:
    """Text as it can be stored: NUL characters dropped (PostgreSQL cannot hold them), lone surrogates (which JSON
    can carry) replaced, and cut to `limit` characters with a note saying so."""
    if not isinstance(value, str):
        return ""
    if "\x00" in value:
        value = value.replace("\x00", "")
    if not value.isascii():
        value = _SURROGATES.sub("\ufffd", value)
    if len(value) > limit:
        value = value[: max(limit - len(TRUNCATED), 0)] + TRUNCATED[: limit]
    return value


def clean_line(value, limit: int) -> str:
    """A one-line field (title, model name): whitespace collapsed, cut to `limit`."""
    line = " ".join(clean_text(value, 10 * limit).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def parse_time(value) -> dt.datetime | None:
    """An ISO 8601 string or a Unix time (ChatGPT's), when it is a plausible time; else None."""
    try:
        if isinstance(value, str) and len(value) <= 64:
            moment = dt.datetime.fromisoformat(value)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=dt.UTC)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            moment = dt.datetime.fromtimestamp(value, tz=dt.UTC)
        else:
            return None
    except (ValueError, OverflowError, OSError):
        return None
    return moment if EARLIEST_SANE_TIME <= moment <= timezone.now() + dt.timedelta(days=1) else None


def _prompt(value) -> str:
    return clean_text(value, settings.MAX_PROMPT_CHARS)


def _response(value) -> str:
    return clean_text(value, settings.IMPORT_MAX_RESPONSE_CHARS)


# QueryNox's JSON


def _querynox_chat(document, where: str, budget: _Budget) -> ImportedChat:
    if not isinstance(document, dict) or document.get("format") != EXPORT_FORMAT:
        raise ImportRefused(f"{where} is not a QueryNox chat export.", code="import_unknown_format")
    version = document.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version > EXPORT_VERSION:
        raise ImportRefused(f"{where}: version {version!r} of the format is not one this server reads.")
    info, queries = document.get("chat"), document.get("queries")
    if not isinstance(info, dict) or not isinstance(queries, list):
        raise ImportRefused(f"{where} needs a `chat` object and a `queries` list.")
    budget.take_chat()
    chat = ImportedChat(
        title=clean_line(info.get("title"), TITLE_MAX_CHARS) or UNTITLED,
        name=clean_line(info.get("chatName"), TITLE_MAX_CHARS),
        model=clean_line(info.get("model"), MODEL_MAX_CHARS),
        system_prompt=_prompt(info.get("systemPrompt")),
        web_search=info.get("webSearch") is True,
        created_at=parse_time(info.get("createdAt")),
        updated_at=parse_time(info.get("updatedAt")),
    )
    parsed: dict[str, ImportedQuery] = {}
    for index, item in enumerate(queries):
        here = f"{where}, query {index + 1}"
        if not isinstance(item, dict):
            raise ImportRefused(f"{here} is not an object.")
        key, parent = item.get("id"), item.get("parentId")
        if not isinstance(key, str) or not key or key in parsed:
            raise ImportRefused(f"{here} needs an `id` of its own.")
        if parent is not None and not isinstance(parent, str):
            raise ImportRefused(f"{here}: parentId must be a query id or null.")
        for name in ("prompt", "response"):
            if not isinstance(item.get(name, ""), str):
                raise ImportRefused(f"{here}: {name} must be text.")
        query = ImportedQuery(
            key=key,
            parent_key=parent,
            prompt=_prompt(item.get("prompt")),
            response=_response(item.get("response")),
            model=clean_line(item.get("model"), MODEL_MAX_CHARS) or chat.model,
            system_prompt=_prompt(item.get("systemPrompt")),
            web_search=item.get("webSearch") is True,
            selected=item.get("selected", True) is not False,
            created_at=parse_time(item.get("createdAt")),
            updated_at=parse_time(item.get("updatedAt")),
        )
        budget.take_query(query.prompt, query.response, query.system_prompt)
        parsed[key] = query
    chat.queries = _parents_first(parsed, where)
    return chat


def _parents_first(queries: dict[str, ImportedQuery], where: str) -> list[ImportedQuery]:
    """The queries with each after its parent; a parent that is missing, or a loop, is refused."""
    children: dict[str | None, list[ImportedQuery]] = {}
    for query in queries.values():
        if query.parent_key is not None and query.parent_key not in queries:
            raise ImportRefused(f"{where}: query {query.key!r} follows {query.parent_key!r}, which is not in the file.")
        children.setdefault(query.parent_key, []).append(query)
    ordered, frontier = [], [None]
    while frontier:  # bounded: each query is reached once, from its one parent
        parent = frontier.pop()
        for child in children.get(parent, ()):
            ordered.append(child)
            frontier.append(child.key)
    if len(ordered) != len(queries):
        raise ImportRefused(f"{where}: the queries' parentIds form a loop.")
    return ordered


# ChatGPT's conversations.json

_CHATGPT_TEXT_TYPES = {"text", "multimodal_text"}


def _chatgpt_text(message: dict) -> str:
    """The visible text of a ChatGPT message: its string parts (and the text of part objects); images and other
    attachments become a placeholder; code and tool output as their text."""
    content = message.get("content")
    if not isinstance(content, dict):
        return ""
    kind = content.get("content_type")
    if kind in _CHATGPT_TEXT_TYPES:
        pieces = []
        parts = content.get("parts")
        for part in parts if isinstance(parts, list) else ():
            if isinstance(part, str):
                pieces.append(part)
            elif isinstance(part, dict):
                if isinstance(part.get("text"), str):
                    pieces.append(part["text"])
                elif "image" in str(part.get("content_type", "")):
                    pieces.append("[image]")
                else:
                    pieces.append("[attachment]")
        return "\n\n".join(piece for piece in pieces if piece)
    if kind == "code" and isinstance(content.get("text"), str):
        return "```\n" + content["text"] + "\n```"
    return ""


def _chatgpt_role(node) -> str:
    """"user" for a prompt the person typed; "assistant" for an answer shown; "" for anything else (system and
    tool messages, hidden context such as custom instructions, reasoning), which the conversion passes through."""
    message = node.get("message") if isinstance(node, dict) else None
    if not isinstance(message, dict):
        return ""
    author = message.get("author")
    role = author.get("role") if isinstance(author, dict) else None
    metadata = message.get("metadata") if isinstance(message.get("metadata"), dict) else {}
    if metadata.get("is_visually_hidden_from_conversation"):
        return ""
    content = message.get("content") if isinstance(message.get("content"), dict) else {}
    if role == "user":
        return "user" if content.get("content_type") in _CHATGPT_TEXT_TYPES else ""
    if role == "assistant":
        if content.get("content_type") == "code":
            return "assistant"
        # Text addressed to a tool (a browsing command) is not part of the answer shown.
        to_all = message.get("recipient") in (None, "all")
        return "assistant" if to_all and content.get("content_type") in _CHATGPT_TEXT_TYPES else ""
    return ""


def _chatgpt_model(node) -> str:
    message = node.get("message") if isinstance(node, dict) else None
    metadata = message.get("metadata") if isinstance(message, dict) else None
    slug = metadata.get("model_slug") if isinstance(metadata, dict) else None
    return clean_line(slug, MODEL_MAX_CHARS)


def _chatgpt_time(node) -> dt.datetime | None:
    message = node.get("message") if isinstance(node, dict) else None
    return parse_time(message.get("create_time")) if isinstance(message, dict) else None


def _chatgpt_chat(conversation, where: str, budget: _Budget) -> ImportedChat | None:
    """One conversation of conversations.json as a chat. Its `mapping` is a tree of messages (node id →
    {message, parent, children}); a turn here is a user message and the answer that follows it: every path of
    non-user messages below it to where the next user message (or nothing) follows. A user message with several
    answers (regenerated) becomes several versions of the turn; several user messages after one answer (edited
    prompts) several versions of the next turn. `current_node`, the leaf ChatGPT showed, picks the versions
    shown."""
    if not isinstance(conversation, dict) or not isinstance(conversation.get("mapping"), dict):
        raise ImportRefused(f"{where} is not a ChatGPT conversation (it has no `mapping`).")
    mapping: dict = conversation["mapping"]
    budget.take_chat()
    budget.take_nodes(len(mapping))
    default_model = clean_line(conversation.get("default_model_slug"), MODEL_MAX_CHARS)
    title = clean_line(conversation.get("title"), TITLE_MAX_CHARS) or UNTITLED
    chat = ImportedChat(
        title=title,
        name=title,
        model=default_model,
        created_at=parse_time(conversation.get("create_time")),
        updated_at=parse_time(conversation.get("update_time")),
    )

    def children_of(node_id) -> list:
        node = mapping.get(node_id)
        kids = node.get("children") if isinstance(node, dict) else None
        return [kid for kid in kids if isinstance(kid, str) and kid in mapping] if isinstance(kids, list) else []

    shown = set()
    cursor = conversation.get("current_node")
    while isinstance(cursor, str) and cursor in mapping and cursor not in shown:  # bounded by the mapping's size
        shown.add(cursor)
        node = mapping[cursor]
        cursor = node.get("parent") if isinstance(node, dict) else None

    roots = [
        node_id
        for node_id, node in mapping.items()
        if not isinstance(node, dict) or not isinstance(node.get("parent"), str) or node.get("parent") not in mapping
    ]
    visited: set = set()
    # Depth-first with an explicit stack (a long conversation is a deep tree): (node id, the query it follows,
    # and — inside an answer — the user node and answer texts so far).
    stack: list[tuple] = [(root, None, None, ()) for root in reversed(roots)]
    while stack:  # bounded: each node is visited once
        node_id, parent_key, user_id, answer = stack.pop()
        if node_id in visited:
            continue
        visited.add(node_id)
        node = mapping.get(node_id)
        role = _chatgpt_role(node)
        kids = children_of(node_id)
        if user_id is None and role != "user":  # before the first prompt, or between turns: pass through
            stack.extend((kid, parent_key, None, ()) for kid in reversed(kids))
            continue
        if role == "user":  # (inside an answer, user messages are never pushed as its continuation: see below)
            user_id, answer = node_id, ()
        elif role == "assistant" and len(answer) < MAX_ANSWER_PARTS:
            text = _chatgpt_text(node["message"])
            answer = (*answer, text) if text else answer
        prompts = [kid for kid in kids if _chatgpt_role(mapping.get(kid)) == "user"]
        continuing = [kid for kid in kids if kid not in prompts]
        if prompts or not continuing:
            # An answer ends here: one version of the turn, which the prompts below it follow.
            query = _chatgpt_query(mapping, user_id, node_id, answer, parent_key, shown, default_model)
            budget.take_query(query.prompt, query.response)
            chat.queries.append(query)
            stack.extend((kid, query.key, None, ()) for kid in reversed(prompts))
        stack.extend((kid, parent_key, user_id, answer) for kid in reversed(continuing))
    if not chat.queries:
        return None  # nothing said in it (or a tree without a first message): not worth a chat
    return chat


def _chatgpt_query(mapping, user_id, end_id, answer, parent_key, shown, default_model) -> ImportedQuery:
    user_node = mapping[user_id]
    end_node = mapping[end_id]
    return ImportedQuery(
        key=f"{user_id}→{end_id}",
        parent_key=parent_key,
        prompt=_prompt(_chatgpt_text(user_node["message"])),
        response=_response("\n\n".join(answer)),
        model=_chatgpt_model(end_node) or default_model or "chatgpt",
        selected=user_id in shown and end_id in shown,
        created_at=_chatgpt_time(user_node),
        updated_at=_chatgpt_time(end_node),
    )


# Files


def _is_querynox(document) -> bool:
    return isinstance(document, dict) and document.get("format") in (EXPORT_FORMAT, EXPORT_LIST_FORMAT)


def _is_chatgpt(document) -> bool:
    if isinstance(document, dict):
        return isinstance(document.get("mapping"), dict)
    return isinstance(document, list) and bool(document) and all(isinstance(item, dict) for item in document) and (
        all("mapping" in item for item in document)
    )


def _parse_json(data: bytes, where: str):
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ImportRefused(f"{where} is not UTF-8 text: export JSON from QueryNox or ChatGPT.") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise ImportRefused(f"{where} is nested too deeply to be an export.", code="import_too_deep") from None
    except ValueError as exc:
        raise ImportRefused(f"{where} is not valid JSON ({exc}).") from None


def _plan_from_document(document, where: str, budget: _Budget) -> ImportPlan:
    if _is_querynox(document):
        if document["format"] == EXPORT_LIST_FORMAT:
            items = document.get("chats")
            if not isinstance(items, list):
                raise ImportRefused(f"{where} needs a `chats` list.")
            chats = [_querynox_chat(item, f"{where}, chat {i + 1}", budget) for i, item in enumerate(items)]
        else:
            chats = [_querynox_chat(document, where, budget)]
        return ImportPlan("querynox", chats)
    if _is_chatgpt(document):
        items = [document] if isinstance(document, dict) else document
        chats = [_chatgpt_chat(item, f"{where}, conversation {i + 1}", budget) for i, item in enumerate(items)]
        return ImportPlan("chatgpt", [chat for chat in chats if chat is not None])
    raise ImportRefused(
        f"{where} is neither a QueryNox export nor ChatGPT's conversations.json.", code="import_unknown_format"
    )


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    """A member's bytes, inflated with a running count: more than `limit` (or than it declared) is refused as it
    happens, whatever the ZIP's directory claims."""
    cap = min(limit, info.file_size)
    chunks, size = [], 0
    with archive.open(info) as member:
        while True:  # bounded: each pass adds up to ZIP_READ_CHUNK bytes, and more than `cap` ends it
            chunk = member.read(ZIP_READ_CHUNK)
            if not chunk:
                break
            size += len(chunk)
            if size > cap:
                raise ImportRefused(
                    f"{info.filename} unpacks to more than it declares or than {format_bytes(limit)}.",
                    code="import_too_large",
                    status=413,
                )
            chunks.append(chunk)
    return b"".join(chunks)


def _zip_members(data_file) -> Iterator[tuple[str, bytes]]:
    """The JSON members worth reading: conversations.json alone in a ChatGPT export (its other files are the
    account's and images), else every .json member. Sizes are checked before and while inflating."""
    try:
        archive = zipfile.ZipFile(data_file)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError):
        raise ImportRefused("The ZIP file is damaged or not a ZIP.") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > settings.IMPORT_MAX_ZIP_MEMBERS:
            raise ImportRefused(
                f"The ZIP holds {len(infos)} files; the limit is {settings.IMPORT_MAX_ZIP_MEMBERS}.",
                code="import_too_large",
                status=413,
            )
        files = [info for info in infos if not info.is_dir()]
        chatgpt = [info for info in files if info.filename.rsplit("/", 1)[-1] == "conversations.json"]
        wanted = chatgpt or [info for info in files if info.filename.lower().endswith(".json")]
        if not wanted:
            raise ImportRefused(
                "The ZIP holds no JSON chats (QueryNox's chats/*.json or ChatGPT's conversations.json)."
            )
        per_member = settings.IMPORT_MAX_BYTES
        declared = sum(info.file_size for info in wanted)
        if declared > settings.IMPORT_MAX_UNPACKED_BYTES or any(info.file_size > per_member for info in wanted):
            raise ImportRefused(
                f"The ZIP unpacks to more than this server imports ({format_bytes(settings.IMPORT_MAX_UNPACKED_BYTES)}"
                f" in all, {format_bytes(per_member)} per file).",
                code="import_too_large",
                status=413,
            )
        for info in wanted:
            if info.flag_bits & 0x1:
                raise ImportRefused(f"{info.filename} is encrypted.")
            try:
                yield info.filename, _read_member(archive, info, per_member)
            except ImportRefused:
                raise
            except (zipfile.BadZipFile, zlib.error, NotImplementedError, EOFError, OSError, RuntimeError, ValueError):
                raise ImportRefused(f"{info.filename} in the ZIP is damaged.") from None


def _read_upload(upload) -> tuple[bytes | None, object]:
    """(the bytes, when they are few enough to hold; the file) of an upload (bytes or a file object)."""
    if isinstance(upload, bytes | bytearray):
        return bytes(upload), io.BytesIO(upload)
    return None, upload


def _size_of(upload) -> int:
    if isinstance(upload, bytes | bytearray):
        return len(upload)
    size = getattr(upload, "size", None)
    if isinstance(size, int):
        return size
    position = upload.tell()
    upload.seek(0, io.SEEK_END)
    size = upload.tell()
    upload.seek(position)
    return size


def check_import(upload, name: str = "The file") -> ImportPlan:
    """What an uploaded file would import (bytes, or a file object such as Django's UploadedFile), read and
    checked without touching the database; ImportRefused says why not."""
    size = _size_of(upload)
    if size > settings.IMPORT_MAX_BYTES:
        raise ImportRefused(
            f"{name} is {format_bytes(size)}; imports are at most {format_bytes(settings.IMPORT_MAX_BYTES)}.",
            code="import_too_large",
            status=413,
        )
    if size == 0:
        raise ImportRefused(f"{name} is empty.")
    data, handle = _read_upload(upload)
    handle.seek(0)
    magic = handle.read(4)
    handle.seek(0)
    budget = _Budget()
    if magic in (b"PK\x03\x04", b"PK\x05\x06"):
        plans = [_plan_from_document(_parse_json(member, member_name), member_name, budget)
                 for member_name, member in _zip_members(handle)]
        sources = {plan.source for plan in plans}
        plan = ImportPlan("chatgpt" if "chatgpt" in sources else "querynox", [c for p in plans for c in p.chats])
    else:
        plan = _plan_from_document(_parse_json(data if data is not None else handle.read(), name), name, budget)
    if not plan.chats:
        raise ImportRefused(f"{name} holds no chats.")
    return plan


def check_import_allowed(user) -> None:
    """Count one import for the user today (every attempt counts: reading a file is the work); refuse beyond
    IMPORT_DAILY_LIMIT."""
    allowed, retry_after = allow(IMPORT_RATE_SCOPE, str(user.pk), settings.IMPORT_DAILY_LIMIT, DAY_SECONDS)
    if not allowed:
        raise ImportRefused(
            f"You can import {settings.IMPORT_DAILY_LIMIT} files a day; try again in {wait_text(retry_after)}.",
            code="import_rate_limited",
            status=429,
        )


# --- import: writing it -------------------------------------------------------------------------------------------


def _timeline(chat: ImportedChat, now: dt.datetime) -> None:
    """Give every query a creation time that keeps the file's order: the file's time when it has a plausible one,
    and always strictly after the query written before it (versions of a turn are ordered by it, chat/branches.py)."""
    previous = None
    for query in sorted(chat.queries, key=lambda q: q.created_at or dt.datetime.max.replace(tzinfo=dt.UTC)):
        moment = query.created_at or (previous + dt.timedelta(microseconds=1) if previous else None)
        moment = moment or chat.created_at or now
        if previous is not None and moment <= previous:
            moment = previous + dt.timedelta(microseconds=1)
        query.created_at = moment
        query.updated_at = max(query.updated_at or moment, moment)
        previous = moment
    first = min((q.created_at for q in chat.queries), default=None)
    last = max((q.updated_at for q in chat.queries), default=None)
    chat.created_at = chat.created_at or first or now
    chat.updated_at = max(chat.updated_at or last or chat.created_at, chat.created_at)


def do_import(user, plan: ImportPlan) -> list[Chat]:
    """Write the plan's chats, owned by `user`, in one transaction: all of them or nothing. Every query is
    `complete` (what the file held is the answer); nothing is charged."""
    now = timezone.now()
    known_models = set(
        AIModel.objects.filter(name__in={chat.model for chat in plan.chats}).values_list("name", flat=True)
    )
    fallback_model = default_model_name()
    chats, queries = [], []
    for imported in plan.chats:
        _timeline(imported, now)
        chat = Chat(
            owner=user,
            title=imported.title,
            name=imported.name,
            model=imported.model if imported.model in known_models else fallback_model,
            system_prompt=imported.system_prompt,
            web_search=imported.web_search,
        )
        chats.append(chat)
        ids = {query.key: uuid.uuid4() for query in imported.queries}
        chat.branch_leaf = branches.leaf_of(
            branches.Shape(ids[q.key], ids.get(q.parent_key), q.selected, q.created_at) for q in imported.queries
        )
        for query in imported.queries:
            queries.append(
                ChatQuery(
                    id=ids[query.key],
                    chat=chat,
                    parent_id=ids[query.parent_key] if query.parent_key is not None else None,
                    selected=query.selected,
                    prompt=query.prompt,
                    model=query.model or chat.model,
                    system_prompt=query.system_prompt or chat.system_prompt,
                    web_search=query.web_search,
                    response=query.response,
                    status=ChatQuery.Status.COMPLETE,
                    # bulk_create does not call save(), which measures these (chat/models.py)
                    prompt_tokens=estimate_tokens(query.prompt),
                    response_tokens=estimate_tokens(query.response),
                    metadata={"imported": plan.source},
                )
            )
    with transaction.atomic():
        Chat.objects.bulk_create(chats, batch_size=500)
        ChatQuery.objects.bulk_create(queries, batch_size=500)
        # created_at and updated_at are auto_now(_add): bulk_create sets them to now; the file's go in after.
        for chat, imported in zip(chats, plan.chats, strict=True):
            chat.created_at, chat.updated_at = imported.created_at, imported.updated_at
        for query, imported in zip(queries, (q for c in plan.chats for q in c.queries), strict=True):
            query.created_at, query.updated_at = imported.created_at, imported.updated_at
        _write_timestamps(Chat, chats)
        _write_timestamps(ChatQuery, queries)
        _index_for_search(chats)
    return chats


def _write_timestamps(model, rows: list) -> None:
    """Store the rows' created_at and updated_at as set on them: one UPDATE of two CASEs per batch (bulk_update
    builds the same statement through expressions, at about 2 s per thousand rows)."""
    meta, quote = model._meta, connection.ops.quote_name
    pk, created, updated = meta.pk, meta.get_field("created_at"), meta.get_field("updated_at")
    key = quote(pk.column)
    with connection.cursor() as cursor:
        for start in range(0, len(rows), TIMESTAMP_BATCH):
            batch = rows[start : start + TIMESTAMP_BATCH]
            ids = [pk.get_db_prep_value(row.pk, connection) for row in batch]
            whens = " ".join(["WHEN %s THEN %s"] * len(batch))
            params = []
            for column in (created, updated):
                for row_id, row in zip(ids, batch, strict=True):
                    params += [row_id, column.get_db_prep_value(getattr(row, column.attname), connection)]
            cursor.execute(
                f"UPDATE {quote(meta.db_table)} SET {quote(created.column)} = CASE {key} {whens} END, "
                f"{quote(updated.column)} = CASE {key} {whens} END WHERE {key} IN ({', '.join(['%s'] * len(batch))})",
                [*params, *ids],
            )


def _index_for_search(chats: list[Chat]) -> None:
    """Imported chats are found by search at once (issue 14 point 1), in the same transaction as their rows."""
    search.reindex_chats([chat.pk for chat in chats])


def import_chats(user, upload, name: str = "The file") -> tuple[ImportPlan, list[Chat]]:
    """The one door for an import, from the page and the API: counted for the day, read, then written whole."""
    check_import_allowed(user)
    plan = check_import(upload, name)
    return plan, do_import(user, plan)
