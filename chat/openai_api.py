"""The OpenAI-compatible API under /v1: `POST /v1/chat/completions` (streamed and not) and `GET /v1/models`, so
OpenAI's SDKs and the tools built on them (LangChain, LiteLLM, editor plugins) use QueryNox's models, quotas and
ledger with a QueryNox API key.

Plain async Django views rather than a ninja router: every answer, refusals included, has OpenAI's shapes
(`{"error": {"message", "type", "code", "param"}}`), and nothing of ninja's own error shapes can leak. Bearer keys
only (no session, so no CSRF). A completion is a turn like any other: `begin_turn` then `follow` (quota, fallback
chain, ledger, metrics, logs); the client's messages replace the stored history (TurnRequest.conversation)."""

import asyncio
import datetime as dt
import json
import logging
import time
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse, StreamingHttpResponse
from django.urls import path, re_path
from django.views.decorators.csrf import csrf_exempt

from accounts.services import user_for_bearer_token
from billing import quota
from chat.catalog import catalog
from chat.events import TERMINAL_TYPES
from chat.generations import begin_turn, follow, stop_generation
from chat.models import AIModel
from chat.providers import get_provider
from chat.providers.base import Sampling
from chat.services import ChatError, TurnRequest, check_model, token_budget
from core.ratelimit import allow, client_ip

logger = logging.getLogger("querynox.openai")

# OpenAI's own limits on these fields.
MAX_STOP_SEQUENCES = 4
MAX_END_USER_CHARS = 256

# Fields OpenAI defines that do not change the answer: accepted and not acted on.
IGNORED_FIELDS = frozenset({"metadata", "service_tier", "prompt_cache_key", "safety_identifier"})


def _absent_or(*neutral):
    return lambda value: value is None or any(value == item and type(value) is type(item) for item in neutral)


# Features we do not offer, accepted only at the value that means "not used"; anything else is a 400 naming the
# field, never silently ignored.
UNSUPPORTED_FIELDS = {
    "n": (_absent_or(1), "Only one choice per request is supported (n must be 1)."),
    "tools": (_absent_or([]), "Tools (function calling) are not supported."),
    "tool_choice": (_absent_or("none", "auto"), "Tools (function calling) are not supported."),
    "parallel_tool_calls": (lambda value: True, ""),  # meaningless without tools, which are refused
    "functions": (_absent_or([]), "Functions (function calling) are not supported."),
    "function_call": (_absent_or("none", "auto"), "Functions (function calling) are not supported."),
    "response_format": (
        lambda value: value is None or value == {"type": "text"},
        "Only text responses are supported (response_format must be {\"type\": \"text\"}).",
    ),
    "logprobs": (_absent_or(False), "Log probabilities are not supported."),
    "top_logprobs": (_absent_or(0), "Log probabilities are not supported."),
    "logit_bias": (_absent_or({}), "logit_bias is not supported."),
    "frequency_penalty": (_absent_or(0, 0.0), "frequency_penalty is not supported (send 0 or leave it out)."),
    "presence_penalty": (_absent_or(0, 0.0), "presence_penalty is not supported (send 0 or leave it out)."),
    "seed": (_absent_or(), "seed is not supported: answers cannot be made reproducible here."),
    "modalities": (_absent_or(["text"]), "Only text output is supported (modalities must be [\"text\"])."),
    "audio": (_absent_or(), "Audio output is not supported."),
    "prediction": (_absent_or(), "Predicted outputs are not supported."),
    "reasoning_effort": (_absent_or(), "reasoning_effort is not supported."),
    "verbosity": (_absent_or(), "verbosity is not supported."),
    "web_search_options": (_absent_or(), "Web search is not offered through this API yet."),
}
HONOURED_FIELDS = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stop",
        "stream",
        "stream_options",
        "user",
        "store",
    }
)
SYSTEM_ROLES = ("system", "developer")  # newer OpenAI models call the system message "developer"
CONVERSATION_ROLES = ("user", "assistant")
UNEXPECTED_END = {"type": "error", "message": "The answer ended unexpectedly.", "code": "internal_error"}


class OpenAIError(Exception):
    """A refusal in OpenAI's error shape."""

    def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error", code=None, param=None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param
        self.headers: dict[str, str] = {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "code": self.code, "param": self.param}}

    def response(self) -> JsonResponse:
        response = JsonResponse(self.body(), status=self.status)
        for name, value in self.headers.items():
            response[name] = value
        return response


def _invalid(message: str, param: str | None = None, code: str | None = None) -> OpenAIError:
    return OpenAIError(400, message, param=param, code=code)


# --- authentication ---------------------------------------------------------------------------------------------


def _authenticate(request):
    """The key's owner; a missing or wrong key is a 401, and a flood of them from one address a 429."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    user = user_for_bearer_token(token) if scheme.lower() == "bearer" and token else None
    if user is not None:
        return user
    allowed, retry_after = allow(
        "openai-bad-key",
        client_ip(request),
        settings.OPENAI_API_BAD_KEY_RATE_LIMIT,
        settings.OPENAI_API_BAD_KEY_RATE_WINDOW,
    )
    if not allowed:
        error = OpenAIError(
            429,
            f"Too many requests with a missing or invalid API key; try again in {retry_after} s.",
            type_="requests",
            code="rate_limit_exceeded",
        )
        error.headers["Retry-After"] = str(retry_after)
        raise error
    if not token or scheme.lower() != "bearer":
        message = (
            "You didn't provide an API key. Send your QueryNox API key as `Authorization: Bearer <key>` "
            "(create keys on your account page)."
        )
    else:
        message = "Incorrect API key provided. Create or copy a key on your QueryNox account page."
    raise OpenAIError(401, message, code="invalid_api_key")


# --- the request ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Completion:
    """A parsed /v1/chat/completions request."""

    turn: TurnRequest
    stream: bool
    include_usage: bool
    max_tokens: int  # what the answer may use: the client's cap within the model's budget


def _json_body(request) -> dict:
    try:
        raw = request.body
    except RequestDataTooBig:
        raise OpenAIError(413, "The request body is too large.", code="request_too_large") from None
    if not raw:
        raise _invalid("The request body is empty: send a JSON object with `model` and `messages`.")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested too deeply to parse
        raise _invalid("We could not parse the JSON body of your request: send a JSON object.") from None
    if not isinstance(data, dict):
        raise _invalid("The request body must be a JSON object.")
    return data


def _text(value, param: str) -> str:
    if not isinstance(value, str):
        raise _invalid(f"`{param}` must be a string.", param)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\ud800"), which no database or provider can take
        raise _invalid(f"`{param}` is not valid Unicode text.", param) from None
    if "\x00" in value:
        raise _invalid(f"`{param}` contains a NUL character.", param)
    return value


def _number(data: dict, field: str, low: float, high: float) -> float | None:
    value = data.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise _invalid(f"`{field}` must be a number from {low:g} to {high:g}.", field)
    return float(value)


def _check_fields(data: dict) -> None:
    for field, value in data.items():
        if field in HONOURED_FIELDS or field in IGNORED_FIELDS:
            continue
        if field in UNSUPPORTED_FIELDS:
            accepts, message = UNSUPPORTED_FIELDS[field]
            if not accepts(value):
                raise _invalid(message, field, code="unsupported_parameter")
            continue
        raise _invalid(f"Unrecognized request argument supplied: {field}", field, code="unknown_parameter")


def _message_text(content, param: str) -> str:
    """A message's content: a string, or a list of text parts (joined)."""
    if isinstance(content, str):
        return _text(content, param)
    if not isinstance(content, list):
        raise _invalid(f"`{param}` must be a string or a list of content parts.", param)
    texts = []
    for index, part in enumerate(content):
        where = f"{param}[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            texts.append(_text(part.get("text"), f"{where}.text"))
        elif kind in ("image_url", "input_image"):
            raise _invalid(
                "Image input is not supported yet: send text parts only ({\"type\": \"text\", \"text\": …}).",
                f"{where}.type",
                code="unsupported_content",
            )
        elif kind in ("input_audio", "file"):
            raise _invalid(f"Content parts of type “{kind}” are not supported: send text.", f"{where}.type")
        else:
            raise _invalid(f"`{where}` must be a content part such as {{\"type\": \"text\", \"text\": …}}.", where)
    return "".join(texts)


def _messages(value) -> tuple[str | None, tuple[dict, ...], str]:
    """(system prompt, the conversation before the prompt, the prompt) from OpenAI `messages`."""
    if not isinstance(value, list) or not value:
        raise _invalid("`messages` must be a non-empty list of messages.", "messages")
    system: list[str] = []
    conversation: list[dict] = []
    for index, message in enumerate(value):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise _invalid(f"`{where}` must be an object with `role` and `content`.", where)
        role = message.get("role")
        if role in ("tool", "function"):
            raise _invalid("Tool messages are not supported (there is no function calling).", f"{where}.role")
        if role not in SYSTEM_ROLES + CONVERSATION_ROLES:
            raise _invalid(f"`{where}.role` must be one of system, developer, user or assistant.", f"{where}.role")
        if message.get("tool_calls") or message.get("function_call"):
            raise _invalid("Tool calls are not supported (there is no function calling).", f"{where}.tool_calls")
        if message.get("name") is not None:
            _text(message["name"], f"{where}.name")
        if message.get("content") is None:
            raise _invalid(f"`{where}.content` is required.", f"{where}.content")
        text = _message_text(message["content"], f"{where}.content")
        if role in SYSTEM_ROLES:
            if text.strip():
                system.append(text)
        else:
            conversation.append({"role": role, "content": text})
    last = value[-1]
    if last.get("role") != "user":
        raise _invalid("The last message must be the user's prompt (role “user”).", f"messages[{len(value) - 1}]")
    prompt = conversation.pop()["content"]
    if not prompt.strip():
        raise _invalid("The last user message is empty.", f"messages[{len(value) - 1}].content")
    return ("\n\n".join(system) if system else None), tuple(conversation), prompt


def _stop(value) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or len(stops) > MAX_STOP_SEQUENCES:
        raise _invalid(f"`stop` must be a string or a list of at most {MAX_STOP_SEQUENCES} strings.", "stop")
    for index, item in enumerate(stops):
        if not _text(item, f"stop[{index}]"):
            raise _invalid("Stop sequences must not be empty.", f"stop[{index}]")
    return tuple(stops)


def _max_tokens(data: dict) -> int | None:
    values = {}
    for field in ("max_completion_tokens", "max_tokens"):
        value = data.get(field)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _invalid(f"`{field}` must be a positive integer.", field)
        values[field] = value
    if len(set(values.values())) > 1:
        raise _invalid("Send max_completion_tokens or max_tokens, not two different values.", "max_tokens")
    return next(iter(values.values()), None)


def _flag(data: dict, field: str) -> bool:
    value = data.get(field)
    if value is not None and not isinstance(value, bool):
        raise _invalid(f"`{field}` must be true or false.", field)
    return bool(value)


def _model(user, name) -> AIModel:
    if not isinstance(name, str) or not name:
        raise _invalid("`model` is required: one of the ids GET /v1/models lists.", "model")
    name = _text(name, "model")
    try:
        model = check_model(name)
    except ChatError as exc:
        if exc.code in ("unknown_model", "model_disabled", "model_unavailable"):
            detail = exc.message.split(": ", 1)[1].rstrip(".") if exc.code == "model_unavailable" else ""
            raise OpenAIError(
                404,
                f"The model `{name}` does not exist or cannot answer now"
                + (f" ({detail})" if detail else "")
                + ". GET /v1/models lists the models you can use.",
                code="model_not_found",
                param="model",
            ) from None
        raise
    if model.category != AIModel.Category.TEXT:
        raise _invalid(f"`{name}` generates images; /v1/chat/completions needs a text model.", "model")
    return model


def _parse(user, data: dict) -> Completion:
    _check_fields(data)
    model = _model(user, data.get("model"))
    system_prompt, conversation, prompt = _messages(data.get("messages"))
    stream = _flag(data, "stream")
    stream_options = data.get("stream_options")
    include_usage = False
    if stream_options is not None:
        if not stream:
            raise _invalid("`stream_options` is only allowed when `stream` is true.", "stream_options")
        if not isinstance(stream_options, dict) or set(stream_options) - {"include_usage", "include_obfuscation"}:
            raise _invalid("`stream_options` may only set include_usage.", "stream_options")
        include_usage = _flag(stream_options, "include_usage")
    end_user = data.get("user")
    if end_user is not None and len(_text(end_user, "user")) > MAX_END_USER_CHARS:
        raise _invalid(f"`user` is at most {MAX_END_USER_CHARS} characters.", "user")
    client_max = _max_tokens(data)
    _, budget_max, _ = token_budget(model)
    sampling = Sampling(
        temperature=_number(data, "temperature", 0, 2), top_p=_number(data, "top_p", 0, 1), stop=_stop(data.get("stop"))
    )
    _check_sampling(model, sampling)
    turn = TurnRequest(
        prompt=prompt,
        model=model.name,
        system_prompt=system_prompt or "",
        conversation=conversation,
        max_tokens=client_max,
        sampling=sampling,
        unlisted=not _flag(data, "store"),
        end_user=end_user or "",
    )
    return Completion(turn, stream, include_usage, min(budget_max, client_max or budget_max))


def _check_sampling(model: AIModel, sampling: Sampling) -> None:
    """A sampling control the model's provider cannot take is refused, not dropped."""
    provider = get_provider(model.provider)
    supported = provider.sampling_controls if provider is not None else frozenset()
    asked = {
        "temperature": sampling.temperature is not None,
        "top_p": sampling.top_p is not None,
        "stop": bool(sampling.stop),
    }
    for field, is_set in asked.items():
        if is_set and field not in supported:
            raise _invalid(f"`{field}` is not supported by {model.name} (its provider's API takes none).", field)


def _from_chat_error(exc: ChatError) -> OpenAIError:
    """A refusal of the turn services (check_turn, the quota) in OpenAI's terms."""
    if exc.code == "quota_exceeded":
        error = OpenAIError(429, exc.message, type_="insufficient_quota", code="insufficient_quota")
        resets = quota.next_month(quota.current_month())
        reset_at = dt.datetime(resets.year, resets.month, resets.day, tzinfo=dt.UTC)
        error.headers["Retry-After"] = str(max(1, int((reset_at - dt.datetime.now(dt.UTC)).total_seconds())))
        return error
    if exc.code == "prompt_too_long":
        return _invalid(exc.message, "messages", code="context_length_exceeded")
    if exc.status == 403:
        return OpenAIError(403, exc.message, code=exc.code, param="model")
    return OpenAIError(exc.status, exc.message, code=exc.code)


# --- responses --------------------------------------------------------------------------------------------------


@dataclass
class _Answer:
    """What the response frames need to know about the turn."""

    id: str
    created: int
    model: str
    max_tokens: int

    def finish_reason(self, usage: dict | None) -> str:
        # Providers do not say why they stopped; an answer that used its whole allowance was cut by it.
        if usage and usage.get("outputTokens", 0) >= self.max_tokens:
            return "length"
        return "stop"

    def chunk(self, delta: dict | None = None, finish_reason=None, *, usage=None, with_usage=False) -> str:
        body = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": []
            if delta is None
            else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if with_usage:
            body["usage"] = usage
        return f"data: {json.dumps(body)}\n\n"


def _usage(usage: dict | None) -> dict:
    prompt, completion = (usage or {}).get("inputTokens", 0), (usage or {}).get("outputTokens", 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _turn_failure(event: dict) -> OpenAIError:
    if event.get("code") == "provider_error":
        return OpenAIError(502, event["message"], type_="api_error", code="provider_error")
    return OpenAIError(500, event["message"], type_="server_error", code=event.get("code"))


async def _stop_if_unlisted(completion: Completion, query_id) -> None:
    # Nobody can ever read an unlisted answer once its client has gone: stop spending on it. (A stored one runs on,
    # as every turn does, and is in the sidebar when it completes.)
    if completion.turn.unlisted:
        await stop_generation(query_id)


async def _complete(completion: Completion, query, answer: _Answer) -> JsonResponse:
    terminal = None
    try:
        async for event in follow(query.id):
            if event["type"] in TERMINAL_TYPES:
                terminal = event
    except asyncio.CancelledError:  # the client went away
        await _stop_if_unlisted(completion, query.id)
        raise
    if terminal is None or terminal["type"] == "error":
        return _turn_failure(terminal or UNEXPECTED_END).response()
    saved = terminal["query"]
    return JsonResponse(
        {
            "id": answer.id,
            "object": "chat.completion",
            "created": answer.created,
            "model": saved["model"],
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": saved["response"], "refusal": None},
                    "logprobs": None,
                    "finish_reason": answer.finish_reason(terminal.get("usage")),
                }
            ],
            "usage": _usage(terminal.get("usage")),
        }
    )


async def _stream(completion: Completion, query, answer: _Answer):
    events = follow(query.id)
    # Read up to the first token before answering: a turn every provider refused is then a plain 502, which
    # clients raise as an error, rather than a 200 stream that fails.
    early: list[dict] = []
    try:
        async for event in events:
            early.append(event)
            if event["type"] == "content" or event["type"] in TERMINAL_TYPES:
                break
    except asyncio.CancelledError:
        await _stop_if_unlisted(completion, query.id)
        raise
    if not early or early[-1]["type"] == "error":
        await events.aclose()
        failed = early[-1] if early else UNEXPECTED_END
        return _turn_failure(failed).response()
    frames = _sse(completion, query.id, answer, early, events)
    response = StreamingHttpResponse(frames, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # proxies must not hold tokens back
    return response


async def _sse(completion: Completion, query_id, answer: _Answer, early: list[dict], events):
    with_usage = completion.include_usage
    finished = False
    try:
        yield answer.chunk({"role": "assistant", "content": "", "refusal": None}, with_usage=with_usage)

        async def all_events():
            for event in early:
                yield event
            async for event in events:
                yield event

        async for event in all_events():
            if event["type"] == "content":
                yield answer.chunk({"content": event["content"]}, with_usage=with_usage)
            elif event["type"] == "complete":
                answer.model = event["query"]["model"]  # the model that answered (after a fallback, another)
                usage = event.get("usage")
                yield answer.chunk({}, answer.finish_reason(usage), with_usage=with_usage)
                if with_usage:
                    yield answer.chunk(None, usage=_usage(usage), with_usage=True)
                break
            elif event["type"] == "error":
                yield f"data: {json.dumps(_turn_failure(event).body())}\n\n"
                break
        yield "data: [DONE]\n\n"
        finished = True
    finally:
        await events.aclose()
        if not finished:  # the client disconnected mid-answer
            await _stop_if_unlisted(completion, query_id)


@csrf_exempt
async def chat_completions(request):
    if request.method != "POST":
        return _method_not_allowed(request)
    created = int(time.time())
    try:
        user = await sync_to_async(_authenticate)(request)
        completion = await sync_to_async(_parse)(user, _json_body(request))
        query = await begin_turn(user, completion.turn)
    except OpenAIError as exc:
        return exc.response()
    except ChatError as exc:
        return _from_chat_error(exc).response()
    logger.info(
        "openai completion",
        extra={
            "query_id": str(query.id),
            "user_id": user.pk,
            "model": query.model,
            "stream": completion.stream,
            "store": not completion.turn.unlisted,
        },
    )
    answer = _Answer(f"chatcmpl-{query.id.hex}", created, query.model, completion.max_tokens)
    if completion.stream:
        return await _stream(completion, query, answer)
    return await _complete(completion, query, answer)


# --- models -----------------------------------------------------------------------------------------------------


def _listed_models(user) -> list[dict]:
    """The text models that can answer now and this user may use (pro models are for subscribers)."""
    subscriber = quota.is_subscriber(user)
    return [
        # The catalog keeps no creation time; 0 says "unknown" in OpenAI's integer field.
        {"id": entry.model.name, "object": "model", "created": 0, "owned_by": entry.model.provider}
        for entry in catalog()
        if entry.available and entry.model.category == AIModel.Category.TEXT and (subscriber or not entry.model.pro)
    ]


@csrf_exempt
async def list_models(request):
    if request.method != "GET":
        return _method_not_allowed(request)
    try:
        user = await sync_to_async(_authenticate)(request)
    except OpenAIError as exc:
        return exc.response()
    return JsonResponse({"object": "list", "data": await sync_to_async(_listed_models)(user)})


@csrf_exempt
async def retrieve_model(request, model_id: str):
    if request.method != "GET":
        return _method_not_allowed(request)
    try:
        user = await sync_to_async(_authenticate)(request)
    except OpenAIError as exc:
        return exc.response()
    for model in await sync_to_async(_listed_models)(user):
        if model["id"] == model_id:
            return JsonResponse(model)
    return OpenAIError(
        404, f"The model `{model_id}` does not exist or cannot answer now.", code="model_not_found", param="model"
    ).response()


def _method_not_allowed(request) -> JsonResponse:
    error = OpenAIError(405, f"{request.method} is not allowed on {request.path}.", code="method_not_allowed")
    return error.response()


@csrf_exempt
async def unknown_url(request, rest=""):
    return OpenAIError(404, f"Unknown request URL: {request.method} {request.path}.", code="unknown_url").response()


urlpatterns = [
    path("chat/completions", chat_completions, name="openai-chat-completions"),
    path("models", list_models, name="openai-models"),
    path("models/<path:model_id>", retrieve_model, name="openai-model"),
    re_path(r"^(?P<rest>.*)$", unknown_url),
]
