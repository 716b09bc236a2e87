"""The chat API (JSON and SSE). Views parse and authorise, call one service, and frame the result."""

import json
from typing import Literal

import pydantic
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.db.models import prefetch_related_objects
from django.http import FileResponse, HttpResponse, JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.urls import reverse
from ninja import Query, Router, Schema, Status
from ninja.errors import HttpError
from ninja.errors import ValidationError as RequestInvalid

from chat import assistants, library, portability, services
from chat.catalog import catalog
from chat.events import TERMINAL_TYPES
from chat.generations import begin_turn, follow, follow_batches, stop_generation
from chat.images import ImageKeyError, open_image
from chat.models import Chat, ChatQuery
from chat.schemas import (
    AssistantDocumentsOut,
    AssistantOnlyOut,
    AssistantsOut,
    BranchOut,
    ChatDetailOut,
    ChatExportOut,
    ChatOnlyOut,
    ChatsOut,
    DocumentsOut,
    FolderOnlyOut,
    FoldersOut,
    ImportOut,
    ModelsOut,
    PublicChatOut,
    SearchOut,
    ShareOut,
    StopOut,
    TagsOut,
    TreeOut,
    TurnOut,
)
from chat.services import ChatError
from chat.sse import sse_response
from chat.views import PUBLIC_CHAT_RATE_SCOPE, document_file_response, export_all_response, export_chat_response
from core.ratelimit import allow, client_ip
from core.schemas import AUTHENTICATED, binary, errors, streamed
from rag.files import format_bytes

router = Router(tags=["chat"])
public_router = Router(tags=["public"])

# What each kind of operation can answer besides its success (core.schemas.ErrorOut for all of them): a turn can
# be refused for its body (400, 413), its chat (404), a pro model (403), a busy chat (409), the quota (429) or an
# embedder that is down (503); a JSON turn also answers 502 (with the saved turn) when every provider failed.
TURN_ERRORS = errors(400, *AUTHENTICATED, 404, 409, 413, 429, 503)
JSON_TURN_ERRORS = {**TURN_ERRORS, **errors(502)}
READ_ERRORS = errors(400, 401, 404)
WRITE_ERRORS = errors(400, *AUTHENTICATED, 404, 413)


class TurnIn(Schema):
    prompt: str
    model: str | None = None
    systemPrompt: str | None = None  # noqa: N815 (the seed's wire names)
    webSearch: bool = False  # noqa: N815
    # The query the new prompt follows (one of this chat's; default: the last turn of its selected branch).
    parentId: str | None = None  # noqa: N815


class RenameIn(Schema):
    title: str


FILES_FIELD = "files"
# Turn endpoints read their body themselves: the same fields come as JSON or as multipart/form-data with files.
TURN_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": TurnIn.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["prompt"],
                    "properties": {
                        **TurnIn.model_json_schema()["properties"],
                        FILES_FIELD: {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "PDF, JPG, PNG, GIF, WebP, BMP, TIFF, text or Markdown; 5 MB per file, "
                            "10 MB per request; how many per request depends on the plan (free: 1).",
                        },
                    },
                }
            },
        },
    }
}


def _turn_input(request) -> tuple[dict, list[tuple[str, bytes]]]:
    """The turn's fields, and its files as (name, bytes): a JSON object, or multipart/form-data with the same
    fields plus one or more `files`. Refusals have the shapes ninja gives a malformed or invalid body."""
    if request.content_type == "multipart/form-data":
        data, files = _multipart_turn(request)
    else:
        if not request.body:
            raise ChatError("The request body is required: a JSON object with a prompt.", code="invalid_body")
        try:
            data = json.loads(request.body)
        except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser's stack
            raise HttpError(400, "Cannot parse request body: send JSON or multipart/form-data.") from None
        if not isinstance(data, dict):
            raise ChatError("The request body must be a JSON object with a prompt.", code="invalid_body")
        files = []
    try:
        payload = TurnIn.model_validate(data)
    except pydantic.ValidationError as exc:
        raise RequestInvalid(
            [
                {"type": error["type"], "loc": ("body", "payload", *error["loc"]), "msg": error["msg"]}
                for error in exc.errors(include_url=False)
            ]
        ) from None
    return payload.dict(), files


def _multipart_turn(request) -> tuple[dict, list[tuple[str, bytes]]]:
    declared = int(request.META.get("CONTENT_LENGTH") or 0)
    allowed = settings.RAG_MAX_REQUEST_BYTES + settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    if declared > allowed:
        # Refused before the files are parsed; the precise per-file messages need the files, this one does not.
        raise ChatError(
            f"The request is {format_bytes(declared)}; files may add up to "
            f"{format_bytes(settings.RAG_MAX_REQUEST_BYTES)} per message.",
            code="request_too_large",
            status=413,
        )
    try:
        data = {key: request.POST.get(key) for key in request.POST}
        uploaded = request.FILES.getlist(FILES_FIELD)
    except RequestDataTooBig:
        raise  # the API answers it with 413
    except (MultiPartParserError, SuspiciousOperation) as exc:
        raise ChatError(f"Malformed multipart body: {exc}", code="invalid_body") from None
    unknown = sorted(set(request.FILES) - {FILES_FIELD})
    if unknown:
        raise ChatError(f"Send files in the “{FILES_FIELD}” field, not “{unknown[0]}”.", code="invalid_field")
    return data, [(file.name, file.read()) for file in uploaded]


async def _begin_turn(request, chat_id=None):
    payload, files = await sync_to_async(_turn_input)(request)
    return await begin_turn(request.auth, payload, chat_id, files)


def _optional_flag(request, field: str) -> bool | None:
    """PATCH bodies may set the flag explicitly; an empty body toggles it."""
    if not request.body:
        return None
    try:
        data = json.loads(request.body)
    except (ValueError, RecursionError):
        raise ChatError("Malformed JSON body.", code="invalid_body") from None
    if not isinstance(data, dict) or field not in data:
        return None
    if not isinstance(data[field], bool):
        raise ChatError(f"{field} must be true or false.", code="invalid_field")
    return data[field]


async def _json_turn(request, chat_id=None):
    query = await _begin_turn(request, chat_id)
    return await _json_answer(query, status=201 if chat_id is None else 200)


async def _json_answer(query, status: int):
    """Wait for the turn's answer: the saved query and its chat, or a 502 with them when every provider failed."""
    last = None
    async for event in follow(query.id):
        if event["type"] in TERMINAL_TYPES:
            last = event
    chat = await Chat.objects.prefetch_related("tags").aget(pk=query.chat_id)
    saved = await ChatQuery.objects.aget(pk=query.pk)
    body = {"chatQuery": saved.as_dict(), "chat": chat.as_dict()}
    if last and last["type"] == "error":
        return JsonResponse({"error": last["message"], "code": last["code"], **body}, status=502)
    return JsonResponse(body, status=status)


@router.post(
    "/stream",
    response={200: None, **TURN_ERRORS},
    summary="Start a chat and stream the answer (SSE)",
    openapi_extra=streamed(**TURN_BODY),
)
async def create_chat_stream(request):
    query = await _begin_turn(request)
    return sse_response(follow_batches(query.id))


@router.post(
    "/queries/{query_id}/stop",
    response={200: StopOut, **WRITE_ERRORS},
    summary="Stop a generation; the partial answer is kept",
)
async def stop_query(request, query_id: str):
    query = await sync_to_async(services.get_owned_query)(request.auth, query_id)
    stopped = await stop_generation(query.pk)
    return {"stopped": stopped, "queryId": str(query.pk)}


@router.get(
    "/queries/{query_id}/events",
    response={200: None, **READ_ERRORS},
    summary="Follow a generation (SSE); resumes after Last-Event-ID",
    openapi_extra=streamed(),
)
async def follow_query(request, query_id: str):
    query = await sync_to_async(services.get_owned_query)(request.auth, query_id)
    last_event_id = request.headers.get("Last-Event-ID", "").strip() or "0"
    if not (last_event_id.isascii() and last_event_id.isdigit() and len(last_event_id) <= 18):
        raise ChatError(
            "Last-Event-ID must be the id (a whole number, 0 or more) of the last event you received.",
            code="invalid_field",
        )
    after = int(last_event_id)
    return sse_response(follow_batches(query.pk, after_seq=after))


@router.post(
    "",
    response={201: TurnOut, **JSON_TURN_ERRORS},
    summary="Start a chat and wait for the whole answer",
    openapi_extra=TURN_BODY,
)
async def create_chat(request):
    return await _json_turn(request)


@router.get("/models", auth=None, response=ModelsOut, summary="The model catalog and which models can answer now")
def list_models(request):
    return {"models": [entry.as_dict() for entry in catalog()]}


def chat_list_payload(page) -> dict:
    return {"chats": [chat.as_dict() for chat in page], "nextCursor": page.next_cursor}


@router.get(
    "/user",
    response={200: ChatsOut, **errors(400, 401, 404)},
    summary="The caller's chats, pinned first then newest first, a page at a time (?before=<nextCursor>&limit=1..200, "
    "default 50); ?folder=<id> (or none), ?tag=<tag>, ?pinned=true|false filter them",
)
def user_chats(
    request,
    before: str | None = None,
    limit: str | None = None,
    folder: str | None = None,
    tag: str | None = None,
    pinned: str | None = None,
):
    return prevalidated_json(chat_list_payload(library.list_chats(request.auth, before, limit, folder, tag, pinned)))


# --- folders, tags and pins (chat/library.py); before the /{chat_id} routes, which would take "folders" for an id.


class FolderIn(Schema):
    name: str


class MoveIn(Schema):
    folderId: int | None = None  # noqa: N815 (null: out of any folder)


class TagsIn(Schema):
    tags: list[str]


@router.get("/folders", response={200: FoldersOut, **errors(401)}, summary="The caller's folders, in sidebar order")
def list_folders(request):
    return {"folders": [library.folder_as_dict(folder) for folder in library.user_folders(request.auth)]}


@router.post(
    "/folders",
    response={201: FolderOnlyOut, **errors(400, *AUTHENTICATED, 409, 413)},
    summary="Create a folder (names are unique per user, whatever their case; at most 60 characters)",
)
def create_folder(request, payload: FolderIn):
    return Status(201, {"folder": library.folder_as_dict(library.do_create_folder(request.auth, payload.name))})


@router.patch(
    "/folders/{folder_id}",
    response={200: FolderOnlyOut, **errors(400, *AUTHENTICATED, 404, 409, 413)},
    summary="Rename a folder",
)
def rename_folder(request, folder_id: str, payload: FolderIn):
    return {"folder": library.folder_as_dict(library.do_rename_folder(request.auth, folder_id, payload.name))}


@router.delete(
    "/folders/{folder_id}",
    response={204: None, **errors(400, *AUTHENTICATED, 404, 413)},
    summary="Delete a folder; its chats are kept, in no folder",
)
def delete_folder(request, folder_id: str):
    library.do_delete_folder(request.auth, folder_id)
    return HttpResponse(status=204)


@router.get("/tags", response={200: TagsOut, **errors(401)}, summary="The caller's tags and how many chats carry each")
def list_tags(request):
    return {"tags": library.user_tags(request.auth)}


@router.patch(
    "/{chat_id}/folder",
    response={200: ChatOnlyOut, **WRITE_ERRORS},
    summary="File a chat into one of the caller's folders ({folderId}; null: into none)",
)
def move_chat(request, chat_id: str, payload: MoveIn):
    return {"chat": library.do_move_chat(request.auth, chat_id, payload.folderId).as_dict()}


@router.put(
    "/{chat_id}/tags",
    response={200: ChatOnlyOut, **WRITE_ERRORS},
    summary="Set a chat's tags ({tags: [...]}: letters, digits, - and _, at most 30 characters, 20 per chat)",
)
def set_chat_tags(request, chat_id: str, payload: TagsIn):
    return {"chat": library.do_set_tags(request.auth, chat_id, payload.tags).as_dict()}


@router.patch(
    "/{chat_id}/pin",
    response={200: ChatOnlyOut, **WRITE_ERRORS},
    summary="Pin or unpin a chat ({pinned: true|false}; no body: toggle); pinned chats are listed first",
)
def pin_chat(request, chat_id: str):
    chat = library.do_set_pinned(request.auth, chat_id, _optional_flag(request, "pinned"))
    return {"chat": chat.as_dict()}


IMPORT_FIELD = "file"
IMPORT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [IMPORT_FIELD],
                    "properties": {
                        IMPORT_FIELD: {
                            "type": "string",
                            "format": "binary",
                            "description": "A QueryNox export (JSON of one chat, or the ZIP of all chats) or ChatGPT's "
                            "conversations.json (or ChatGPT's export ZIP); 20 MB at most by default.",
                        }
                    },
                }
            },
            "application/json": {
                "schema": {
                    "description": "The export itself: QueryNox's JSON ({format: querynox.chat, ...}) or ChatGPT's "
                    "conversations.json (a list of conversations with their `mapping`).",
                    "oneOf": [{"type": "object"}, {"type": "array"}],
                }
            },
        },
    }
}
# Every export is a file: the chat as JSON (ChatExportOut: its whole tree) or as Markdown (the branch shown), or all
# as a ZIP. The Markdown's media type is added beside the JSON schema ninja declares for the 200.
MARKDOWN_EXPORT = {"responses": {200: {"content": {"text/markdown": {"schema": {"type": "string"}}}}}}


def _import_upload(request):
    """The file to import and what to call it: the `file` field of a multipart body, or the body itself (JSON)."""
    limit = settings.IMPORT_MAX_BYTES
    length = request.META.get("CONTENT_LENGTH") or ""
    declared = int(length) if length.isdigit() else 0
    if declared > limit + settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
        raise ChatError(
            f"The request is {format_bytes(declared)}; imports are at most {format_bytes(limit)}.",
            code="import_too_large",
            status=413,
        )
    if request.content_type == "multipart/form-data":
        try:
            upload = request.FILES.get(IMPORT_FIELD)
        except RequestDataTooBig:
            raise
        except (MultiPartParserError, SuspiciousOperation) as exc:
            raise ChatError(f"Malformed multipart body: {exc}", code="invalid_body") from None
        if upload is None:
            raise ChatError(f"Send the export file in the “{IMPORT_FIELD}” field.", code="invalid_field")
        return upload, (upload.name or "The file")[:200]
    # Read from the stream, not request.body: the body may be larger than the ordinary request limit.
    body = request.read(limit + 1)
    if not body:
        raise ChatError("Send the export: a multipart `file`, or the JSON itself as the body.", code="invalid_body")
    return body, "The request body"


@router.post(
    "/import",
    response={201: ImportOut, **errors(400, *AUTHENTICATED, 413, 429)},
    summary="Import chats: QueryNox's JSON or ZIP export, or ChatGPT's conversations.json (its branches kept)",
    openapi_extra=IMPORT_BODY,
)
def import_chats(request):
    upload, name = _import_upload(request)
    plan, chats = portability.import_chats(request.auth, upload, name)
    prefetch_related_objects(chats, "tags")  # as_dict() lists them: one query, not one per chat
    body = {"format": plan.source, "chats": [chat.as_dict() for chat in chats], "queries": plan.query_count}
    return JsonResponse(body, status=201)


@router.get(
    "/export",
    response={200: None, **errors(401)},
    summary="Every chat of the caller as a ZIP of QueryNox JSON files (one per chat, every branch)",
    openapi_extra=binary("application/zip"),
)
def export_all_chats(request):
    return export_all_response(request.auth)


@router.get(
    "/{chat_id}/export",
    response={200: ChatExportOut, **READ_ERRORS},
    summary="Download a chat: ?format=json (every version of every turn, re-importable) or markdown (the branch shown)",
    openapi_extra=MARKDOWN_EXPORT,
)
def export_chat(request, chat_id: str, export_format: Literal["json", "markdown"] = Query("json", alias="format")):
    return export_chat_response(services.get_owned_chat(request.auth, chat_id), export_format)


# Before the /{chat_id} routes, which would otherwise take "search" for a chat id.
@router.get(
    "/search",
    response={200: SearchOut, **errors(400, 401)},
    summary="Search the caller's chats (titles, prompts and answers); the last word matches as a prefix",
)
def search_chats(request, q: str = "", cursor: str | None = None):
    page = services.search_chats(request.auth, q, cursor)
    return {
        "query": q,
        "results": [result.as_dict() for result in page.results],
        "nextCursor": str(page.next_offset) if page.next_offset is not None else None,
    }


# --- assistants (chat/assistants.py); before the /{chat_id} routes, which would take "assistants" for an id.


class AssistantIn(Schema):
    name: str
    systemPrompt: str = ""  # noqa: N815
    model: str | None = None  # a catalog model's name; default: the default model
    webSearch: bool = False  # noqa: N815


class AssistantPatchIn(Schema):
    name: str | None = None
    systemPrompt: str | None = None  # noqa: N815
    model: str | None = None
    webSearch: bool | None = None  # noqa: N815


ASSISTANT_DOCUMENTS_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [FILES_FIELD],
                    "properties": {
                        FILES_FIELD: {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "PDF, JPG, PNG, GIF, WebP, BMP, TIFF, text or Markdown, as for a turn: "
                            "5 MB per file, 10 MB per request, the plan's files per request.",
                        }
                    },
                }
            }
        },
    }
}


def _assistant_payload(assistant, user) -> dict:
    return {"assistant": assistants.assistant_as_dict(assistant, user, assistants.assistant_documents(assistant))}


@router.get(
    "/assistants",
    response={200: AssistantsOut, **errors(401)},
    summary="The caller's assistants, then those published to everyone, by name",
)
def list_assistants(request):
    return {
        "assistants": [
            assistants.assistant_as_dict(assistant, request.auth)
            for assistant in assistants.visible_assistants(request.auth)
        ]
    }


@router.post(
    "/assistants",
    response={201: AssistantOnlyOut, **errors(400, *AUTHENTICATED, 413)},
    summary="Save an assistant: a name, a system prompt, a default model and web search on or off",
)
def create_assistant(request, payload: AssistantIn):
    assistant = assistants.do_create_assistant(request.auth, payload.dict())
    return Status(201, _assistant_payload(assistant, request.auth))


@router.get(
    "/assistants/{assistant_id}",
    response={200: AssistantOnlyOut, **READ_ERRORS},
    summary="One assistant (the caller's, or a published one) with its documents",
)
def get_assistant(request, assistant_id: str):
    return _assistant_payload(assistants.get_visible_assistant(request.auth, assistant_id), request.auth)


@router.patch(
    "/assistants/{assistant_id}",
    response={200: AssistantOnlyOut, **errors(400, *AUTHENTICATED, 404, 413)},
    summary="Change one of the caller's assistants (only the fields sent)",
)
def update_assistant(request, assistant_id: str, payload: AssistantPatchIn):
    fields = {key: value for key, value in payload.dict(exclude_unset=True).items() if value is not None}
    assistant = assistants.do_update_assistant(request.auth, assistant_id, fields)
    return _assistant_payload(assistant, request.auth)


@router.delete(
    "/assistants/{assistant_id}",
    response={204: None, **errors(400, *AUTHENTICATED, 404, 413)},
    summary="Delete one of the caller's assistants and its documents; chats started from it are kept",
)
def delete_assistant(request, assistant_id: str):
    assistants.do_delete_assistant(request.auth, assistant_id)
    return HttpResponse(status=204)


@router.post(
    "/assistants/{assistant_id}/documents",
    response={202: AssistantDocumentsOut, **errors(400, *AUTHENTICATED, 404, 413, 429, 503)},
    summary="Add files to one of the caller's assistants: read once, in the background (each document's status is "
    "processing, then ready or failed: GET the assistant to follow it), cited by every chat started from it once "
    "ready (one file use each)",
    openapi_extra=ASSISTANT_DOCUMENTS_BODY,
)
def add_assistant_documents(request, assistant_id: str):
    if request.content_type != "multipart/form-data":
        raise ChatError(f"Send the files as multipart/form-data, in the “{FILES_FIELD}” field.", code="invalid_body")
    assistants.get_owned_assistant(request.auth, assistant_id)  # refused before the files are read
    _, files = _multipart_turn(request)
    documents = assistants.do_add_documents(request.auth, assistant_id, files)
    assistant = assistants.get_visible_assistant(request.auth, assistant_id)
    body = _assistant_payload(assistant, request.auth)
    body["documents"] = [assistants.assistant_document_as_dict(document) for document in documents]
    return Status(202, body)


@router.delete(
    "/assistants/{assistant_id}/documents/{document_id}",
    response={204: None, **errors(400, *AUTHENTICATED, 404)},
    summary="Delete one document of the caller's assistant (its chunks too): chats started from it stop citing it",
)
def delete_assistant_document(request, assistant_id: str, document_id: str):
    assistants.do_delete_document(request.auth, assistant_id, document_id)
    return HttpResponse(status=204)


@router.post(
    "/assistants/{assistant_id}/chats",
    response={201: ChatOnlyOut, **errors(400, *AUTHENTICATED, 404, 413)},
    summary="Start a chat from an assistant (the caller's or a published one): its system prompt, model, web "
    "search and documents",
)
def start_assistant_chat(request, assistant_id: str):
    return Status(201, {"chat": assistants.do_start_chat(request.auth, assistant_id).as_dict()})


@router.post(
    "/{chat_id}/stream",
    response={200: None, **TURN_ERRORS},
    summary="Continue a chat and stream the answer (SSE)",
    openapi_extra=streamed(**TURN_BODY),
)
async def continue_chat_stream(request, chat_id: str):
    query = await _begin_turn(request, chat_id)
    return sse_response(follow_batches(query.id))


@router.post(
    "/{chat_id}",
    response={200: TurnOut, **JSON_TURN_ERRORS},
    summary="Continue a chat and wait for the whole answer",
    openapi_extra=TURN_BODY,
)
async def continue_chat(request, chat_id: str):
    return await _json_turn(request, chat_id)


@router.get(
    "/{chat_id}",
    response={200: ChatDetailOut, **READ_ERRORS},
    summary="A chat with the newest turns of the branch shown (each answer's sources in its metadata), a page at a "
    "time (?limit=1..200, default 20; older turns: ?before=<nextCursor>); ?leaf=<query id>: another branch",
)
def get_chat(request, chat_id: str, leaf: str | None = None, before: str | None = None, limit: str | None = None):
    chat = services.get_owned_chat(request.auth, chat_id)
    page = services.chat_history_page(chat, leaf, before, limit, as_rows=True)
    services.read_tag_names([chat])  # plain SQL: the related manager and its Tag objects cost more than the query
    return prevalidated_json(
        {
            "chat": chat.as_dict(),
            "queries": [_query_on_branch(q) for q in page],
            "nextCursor": page.next_cursor,
            "branches": _branch_links(chat.pk),
            "documents": [services.document_as_dict(d) for d in services.chat_documents(chat)],
        }
    )


def prevalidated_json(payload: dict) -> HttpResponse:
    """`payload` as the JSON answer, without ninja validating it against the response schema first (one pydantic
    object per turn: most of a long chat's read). Its builders (the rows' as_dict) give the schema's shape, and
    chat/tests/test_history_pages.py checks the answers against the schemas."""
    return HttpResponse(json.dumps(payload, separators=(",", ":")), content_type="application/json")


def _query_on_branch(query) -> dict:
    """A query of a branch (a ChatQuery or a page's plain row: chat.branches.WalkedRow) with its siblings."""
    return {**ChatQuery.as_dict(query), "siblings": query.versions.as_dict()}


def _branch_links(chat_id) -> dict:
    """How a client finds the versions not shown (regenerated answers, edited prompts) and moves between them."""
    base = f"/api/v1/chat/{chat_id}"
    return {
        "about": "`queries` is one branch: each query follows its parentId. `siblings` lists the versions of that "
        "turn (oldest first). GET branch with a query id returns the branch ending at that query; tree lists every "
        "query; POST select shows a version; POST regenerate or edit adds one.",
        "branch": f"{base}?leaf={{queryId}}",
        "tree": f"{base}/tree",
        "select": f"{base}/queries/{{queryId}}/select",
        "regenerate": f"{base}/queries/{{queryId}}/regenerate",
        "edit": f"{base}/queries/{{queryId}}/edit",
    }


@router.get(
    "/{chat_id}/tree",
    response={200: TreeOut, **READ_ERRORS},
    summary="Every query of a chat (every version of every turn), with its parentId",
)
def get_chat_tree(request, chat_id: str):
    chat = services.get_owned_chat(request.auth, chat_id)
    shown = {q.pk for q in services.chat_history(chat)}
    return {
        "chat": chat.as_dict(),
        "queries": [{**q.as_dict(), "selected": q.selected, "shown": q.pk in shown} for q in services.chat_tree(chat)],
    }


class VersionIn(Schema):
    model: str | None = None
    systemPrompt: str | None = None  # noqa: N815 (the seed's wire names)
    webSearch: bool = False  # noqa: N815


class EditIn(VersionIn):
    prompt: str


def _version_payload(request, query_id: str, edit: bool) -> dict:
    """The body of a regenerate (optional: model, systemPrompt, webSearch) or an edit (the same, and `prompt`)."""
    data = {}
    if request.body:
        try:
            data = json.loads(request.body)
        except (ValueError, RecursionError):
            raise HttpError(400, "Cannot parse request body: send a JSON object.") from None
        if not isinstance(data, dict):
            raise ChatError("The request body must be a JSON object.", code="invalid_body")
    if not edit and "prompt" in data:
        raise ChatError("A regenerate asks the same prompt again: to change it, POST …/edit.", code="invalid_field")
    try:
        fields = (EditIn if edit else VersionIn).model_validate(data).dict()
    except pydantic.ValidationError as exc:
        raise RequestInvalid(
            [
                {"type": error["type"], "loc": ("body", "payload", *error["loc"]), "msg": error["msg"]}
                for error in exc.errors(include_url=False)
            ]
        ) from None
    return {**fields, ("editOf" if edit else "regenerateOf"): query_id}


async def _begin_version(request, chat_id: str, query_id: str, edit: bool):
    payload = _version_payload(request, query_id, edit)
    return await begin_turn(request.auth, payload, chat_id)


@router.post(
    "/{chat_id}/queries/{query_id}/regenerate",
    response={201: TurnOut, **JSON_TURN_ERRORS},
    summary="Answer a turn again: a new version beside it (nothing is lost), then wait for the whole answer",
)
async def regenerate(request, chat_id: str, query_id: str):
    return await _json_answer(await _begin_version(request, chat_id, query_id, edit=False), status=201)


@router.post(
    "/{chat_id}/queries/{query_id}/regenerate/stream",
    response={200: None, **TURN_ERRORS},
    summary="Answer a turn again, streamed (SSE)",
    openapi_extra=streamed(),
)
async def regenerate_stream(request, chat_id: str, query_id: str):
    query = await _begin_version(request, chat_id, query_id, edit=False)
    return sse_response(follow_batches(query.id))


@router.post(
    "/{chat_id}/queries/{query_id}/edit",
    response={201: TurnOut, **JSON_TURN_ERRORS},
    summary="Send a turn's prompt changed: a new version beside it (nothing is lost), then wait for the answer",
)
async def edit(request, chat_id: str, query_id: str):
    return await _json_answer(await _begin_version(request, chat_id, query_id, edit=True), status=201)


@router.post(
    "/{chat_id}/queries/{query_id}/edit/stream",
    response={200: None, **TURN_ERRORS},
    summary="Send a turn's prompt changed, streamed (SSE)",
    openapi_extra=streamed(),
)
async def edit_stream(request, chat_id: str, query_id: str):
    query = await _begin_version(request, chat_id, query_id, edit=True)
    return sse_response(follow_batches(query.id))


@router.post(
    "/{chat_id}/queries/{query_id}/select",
    response={200: BranchOut, **WRITE_ERRORS},
    summary="Show this version of its turn; returns the branch now shown (what continuing the chat follows)",
)
def select_version(request, chat_id: str, query_id: str):
    services.do_select_version(request.auth, chat_id, query_id)
    chat = services.get_owned_chat(request.auth, chat_id)
    return {
        "chat": chat.as_dict(),
        "queries": [_query_on_branch(q) for q in services.chat_history(chat)],
        "branches": _branch_links(chat.pk),
    }


@router.get(
    "/{chat_id}/documents",
    response={200: DocumentsOut, **READ_ERRORS},
    summary="The files uploaded into a chat, with their status",
)
def list_documents(request, chat_id: str):
    chat = services.get_owned_chat(request.auth, chat_id)
    return {"documents": [services.document_as_dict(d) for d in services.chat_documents(chat)]}


@router.get(
    "/{chat_id}/documents/{document_id}/file",
    response={200: None, **READ_ERRORS},
    summary="Download an uploaded file (as it was uploaded; text and Markdown as text/plain)",
    openapi_extra=binary("*/*"),  # the upload's own type: a PDF, an image, text
)
def download_document(request, chat_id: str, document_id: str):
    return document_file_response(services.get_owned_document(request.auth, chat_id, document_id))


@router.patch("/{chat_id}", response={200: ChatOnlyOut, **WRITE_ERRORS}, summary="Rename a chat")
def rename_chat(request, chat_id: str, payload: RenameIn):
    return {"chat": services.do_rename_chat(request.auth, chat_id, payload.title).as_dict()}


@router.patch(
    "/{chat_id}/share", response={200: ShareOut, **WRITE_ERRORS}, summary="Share or unshare a chat (no body: toggle)"
)
def share_chat(request, chat_id: str):
    chat = services.do_set_shared(request.auth, chat_id, _optional_flag(request, "shared"))
    return {"chat": chat.as_dict(), "publicUrl": reverse("chat:public", args=[chat.pk]) if chat.shared else None}


@router.patch(
    "/{chat_id}/bookmark",
    response={200: ChatOnlyOut, **WRITE_ERRORS},
    summary="Bookmark or unbookmark a chat (no body: toggle)",
)
def bookmark_chat(request, chat_id: str):
    chat = services.do_set_bookmarked(request.auth, chat_id, _optional_flag(request, "bookmarked"))
    return {"chat": chat.as_dict()}


@router.delete("/{chat_id}", response={204: None, **WRITE_ERRORS}, summary="Delete a chat and its history")
def delete_chat(request, chat_id: str):
    services.do_delete_chat(request.auth, chat_id)
    return HttpResponse(status=204)


def public_chat_payload(chat_id) -> dict:
    """The read-only public view of a shared chat, cached; any change to the chat invalidates it."""
    key = services.public_chat_cache_key(services.parse_chat_id(chat_id))
    payload = cache.get(key)
    if payload is None:
        chat = services.public_chat(chat_id)
        payload = {
            "chat": {k: v for k, v in chat.as_dict().items() if k not in ("shared", "bookmarked", "systemPrompt")},
            "queries": [
                {
                    "prompt": q.prompt,
                    "response": q.response,
                    "model": q.model,
                    "status": q.status,
                    "createdAt": q.created_at.isoformat(),
                }
                for q in services.chat_history(chat)
            ],
        }
        cache.set(key, payload, timeout=settings.PUBLIC_CHAT_CACHE_SECONDS)
    return payload


@public_router.get(
    "/chat/{chat_id}",
    auth=None,
    response={200: PublicChatOut, **errors(400, 404, 429)},
    summary="A shared chat, read-only (no auth)",
)
def get_public_chat(request, chat_id: str):
    allowed, retry_after = allow(
        PUBLIC_CHAT_RATE_SCOPE, client_ip(request), settings.PUBLIC_CHAT_RATE_LIMIT, settings.PUBLIC_CHAT_RATE_WINDOW
    )
    if not allowed:
        response = JsonResponse(
            {"error": f"Too many requests; try again in {retry_after} s.", "code": "rate_limited"}, status=429
        )
        response["Retry-After"] = str(retry_after)
        return response
    return public_chat_payload(chat_id)


@public_router.get(
    "/images/download/{path:key}",
    auth=None,
    response={200: None, **errors(400, 404)},
    summary="Download a generated image",
    openapi_extra=binary("image/png"),
)
def download_image(request, key: str, inline: bool = False):
    try:
        image = open_image(key)
    except (ImageKeyError, FileNotFoundError):
        return JsonResponse({"error": "Image not found.", "code": "not_found"}, status=404)
    response = FileResponse(image, content_type="image/png", as_attachment=not inline, filename=key.rsplit("/", 1)[-1])
    response["Cache-Control"] = "private, max-age=86400"
    return response
