"""Chat services: `check_*` validates and raises, `do_*` mutates inside a transaction."""

import uuid
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.db import transaction

from billing.quota import is_subscriber
from chat.catalog import default_model_name, sync_self_hosted_models
from chat.models import AIModel, Chat, ChatQuery
from chat.providers import unavailable_reason
from chat.tokens import answer_budget, estimate_message_tokens

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


@dataclass(frozen=True)
class PreparedTurn:
    request: TurnRequest
    ai_model: AIModel
    chat: Chat | None
    max_tokens: int
    context_budget: int


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
    )


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


def check_turn(user, request: TurnRequest) -> PreparedTurn:
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
    return PreparedTurn(request, model, chat, max_tokens=max_tokens, context_budget=budget)


def title_from_prompt(prompt: str) -> str:
    line = " ".join(prompt.split())
    return line[:TITLE_CHARS] + ("…" if len(line) > TITLE_CHARS else "")


@transaction.atomic
def do_start_turn(user, turn: PreparedTurn) -> ChatQuery:
    """Create the chat (for a first turn) and the query row, which exists from the very start of the turn."""
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
    )
    invalidate_public_chat(chat.pk)
    return query


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
