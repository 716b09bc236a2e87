"""The chat API (JSON and SSE). Views parse and authorise, call one service, and frame the result."""

import json

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache
from django.http import FileResponse, HttpResponse, JsonResponse
from ninja import Router, Schema

from chat import services
from chat.catalog import catalog
from chat.events import TERMINAL_TYPES
from chat.generations import begin_turn, follow, stop_generation
from chat.images import ImageKeyError, open_image
from chat.models import Chat, ChatQuery
from chat.services import ChatError
from chat.sse import sse_response
from querynox.ratelimit import allow, client_ip

router = Router(tags=["chat"])
public_router = Router(tags=["public"])


class TurnIn(Schema):
    prompt: str
    model: str | None = None
    systemPrompt: str | None = None  # noqa: N815 (the seed's wire names)
    webSearch: bool = False  # noqa: N815


class RenameIn(Schema):
    title: str


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


async def _json_turn(request, payload: TurnIn, chat_id=None):
    query = await begin_turn(request.auth, payload.dict(), chat_id)
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


@router.post("/stream", summary="Start a chat and stream the answer (SSE)")
async def create_chat_stream(request, payload: TurnIn):
    query = await begin_turn(request.auth, payload.dict())
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


@router.post("", summary="Start a chat and wait for the whole answer")
async def create_chat(request, payload: TurnIn):
    return await _json_turn(request, payload)


@router.get("/models", auth=None, summary="The model catalog and which models can answer now")
def list_models(request):
    return {"models": [entry.as_dict() for entry in catalog()]}


@router.get("/user", summary="The caller's chats, newest first")
def user_chats(request):
    return {"chats": [chat.as_dict() for chat in services.chats_for_sidebar(request.auth)]}


@router.post("/{chat_id}/stream", summary="Continue a chat and stream the answer (SSE)")
async def continue_chat_stream(request, chat_id: str, payload: TurnIn):
    query = await begin_turn(request.auth, payload.dict(), chat_id)
    return sse_response(follow(query.id))


@router.post("/{chat_id}", summary="Continue a chat and wait for the whole answer")
async def continue_chat(request, chat_id: str, payload: TurnIn):
    return await _json_turn(request, payload, chat_id)


@router.get("/{chat_id}", summary="A chat with its full history")
def get_chat(request, chat_id: str):
    chat = services.get_owned_chat(request.auth, chat_id)
    return {"chat": chat.as_dict(), "queries": [q.as_dict() for q in services.chat_history(chat)]}


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
