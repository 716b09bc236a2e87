"""The chat API (JSON and SSE). Views parse and authorise, call one service, and frame the result."""

import json

import pydantic
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import FileResponse, HttpResponse, JsonResponse
from django.http.multipartparser import MultiPartParserError
from ninja import Router, Schema
from ninja.errors import HttpError
from ninja.errors import ValidationError as RequestInvalid

from chat import services
from chat.catalog import catalog
from chat.events import TERMINAL_TYPES
from chat.generations import begin_turn, follow, stop_generation
from chat.images import ImageKeyError, open_image
from chat.models import Chat, ChatQuery
from chat.services import ChatError
from chat.sse import sse_response
from chat.views import document_file_response
from core.ratelimit import allow, client_ip
from rag.files import format_bytes

router = Router(tags=["chat"])
public_router = Router(tags=["public"])


class TurnIn(Schema):
    prompt: str
    model: str | None = None
    systemPrompt: str | None = None  # noqa: N815 (the seed's wire names)
    webSearch: bool = False  # noqa: N815


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
                            "description": "PDF, JPG, PNG, GIF, BMP, TIFF, plain text or Markdown; 5 MB per file, "
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
        except ValueError:
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
    except ValueError:
        raise ChatError("Malformed JSON body.", code="invalid_body") from None
    if not isinstance(data, dict) or field not in data:
        return None
    if not isinstance(data[field], bool):
        raise ChatError(f"{field} must be true or false.", code="invalid_field")
    return data[field]


async def _json_turn(request, chat_id=None):
    query = await _begin_turn(request, chat_id)
    last = None
    async for event in follow(query.id):
        if event["type"] in TERMINAL_TYPES:
            last = event
    chat = await Chat.objects.aget(pk=query.chat_id)
    saved = await ChatQuery.objects.aget(pk=query.pk)
    body = {"chatQuery": saved.as_dict(), "chat": chat.as_dict()}
    if last and last["type"] == "error":
        return JsonResponse({"error": last["message"], "code": last["code"], **body}, status=502)
    return JsonResponse(body, status=201 if chat_id is None else 200)


@router.post("/stream", summary="Start a chat and stream the answer (SSE)", openapi_extra=TURN_BODY)
async def create_chat_stream(request):
    query = await _begin_turn(request)
    return sse_response(follow(query.id))


@router.post("/queries/{query_id}/stop", summary="Stop a generation; the partial answer is kept")
async def stop_query(request, query_id: str):
    query = await sync_to_async(services.get_owned_query)(request.auth, query_id)
    stopped = await stop_generation(query.pk)
    return {"stopped": stopped, "queryId": str(query.pk)}


@router.get("/queries/{query_id}/events", summary="Follow a generation (SSE); resumes after Last-Event-ID")
async def follow_query(request, query_id: str):
    query = await sync_to_async(services.get_owned_query)(request.auth, query_id)
    last_event_id = request.headers.get("Last-Event-ID", "0")
    after = int(last_event_id) if last_event_id.isdigit() else 0
    return sse_response(follow(query.pk, after_seq=after))


@router.post("", summary="Start a chat and wait for the whole answer", openapi_extra=TURN_BODY)
async def create_chat(request):
    return await _json_turn(request)


@router.get("/models", auth=None, summary="The model catalog and which models can answer now")
def list_models(request):
    return {"models": [entry.as_dict() for entry in catalog()]}


@router.get("/user", summary="The caller's chats, newest first")
def user_chats(request):
    return {"chats": [chat.as_dict() for chat in services.chats_for_sidebar(request.auth)]}


@router.post("/{chat_id}/stream", summary="Continue a chat and stream the answer (SSE)", openapi_extra=TURN_BODY)
async def continue_chat_stream(request, chat_id: str):
    query = await _begin_turn(request, chat_id)
    return sse_response(follow(query.id))


@router.post("/{chat_id}", summary="Continue a chat and wait for the whole answer", openapi_extra=TURN_BODY)
async def continue_chat(request, chat_id: str):
    return await _json_turn(request, chat_id)


@router.get("/{chat_id}", summary="A chat with its full history (each answer's sources in its metadata)")
def get_chat(request, chat_id: str):
    chat = services.get_owned_chat(request.auth, chat_id)
    return {
        "chat": chat.as_dict(),
        "queries": [q.as_dict() for q in services.chat_history(chat)],
        "documents": [services.document_as_dict(d) for d in services.chat_documents(chat)],
    }


@router.get("/{chat_id}/documents", summary="The files uploaded into a chat, with their status")
def list_documents(request, chat_id: str):
    chat = services.get_owned_chat(request.auth, chat_id)
    return {"documents": [services.document_as_dict(d) for d in services.chat_documents(chat)]}


@router.get("/{chat_id}/documents/{document_id}/file", summary="Download an uploaded file (as it was uploaded)")
def download_document(request, chat_id: str, document_id: str):
    return document_file_response(services.get_owned_document(request.auth, chat_id, document_id))


@router.patch("/{chat_id}", summary="Rename a chat")
def rename_chat(request, chat_id: str, payload: RenameIn):
    return {"chat": services.do_rename_chat(request.auth, chat_id, payload.title).as_dict()}


@router.patch("/{chat_id}/share", summary="Share or unshare a chat (no body: toggle)")
def share_chat(request, chat_id: str):
    chat = services.do_set_shared(request.auth, chat_id, _optional_flag(request, "shared"))
    return {"chat": chat.as_dict(), "publicUrl": f"/share/{chat.pk}/" if chat.shared else None}


@router.patch("/{chat_id}/bookmark", summary="Bookmark or unbookmark a chat (no body: toggle)")
def bookmark_chat(request, chat_id: str):
    chat = services.do_set_bookmarked(request.auth, chat_id, _optional_flag(request, "bookmarked"))
    return {"chat": chat.as_dict()}


@router.delete("/{chat_id}", summary="Delete a chat and its history")
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


@public_router.get("/chat/{chat_id}", auth=None, summary="A shared chat, read-only (no auth)")
def get_public_chat(request, chat_id: str):
    allowed, retry_after = allow(
        "public-chat", client_ip(request), settings.PUBLIC_CHAT_RATE_LIMIT, settings.PUBLIC_CHAT_RATE_WINDOW
    )
    if not allowed:
        response = JsonResponse(
            {"error": f"Too many requests; try again in {retry_after} s.", "code": "rate_limited"}, status=429
        )
        response["Retry-After"] = str(retry_after)
        return response
    return public_chat_payload(chat_id)


@public_router.get("/images/download/{path:key}", auth=None, summary="Download a generated image")
def download_image(request, key: str, inline: bool = False):
    try:
        image = open_image(key)
    except (ImageKeyError, FileNotFoundError):
        return JsonResponse({"error": "Image not found.", "code": "not_found"}, status=404)
    response = FileResponse(image, content_type="image/png", as_attachment=not inline, filename=key.rsplit("/", 1)[-1])
    response["Cache-Control"] = "private, max-age=86400"
    return response
