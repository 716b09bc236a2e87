"""The OpenAI-compatible API under /v1: `POST /v1/chat/completions` (streamed and not) and `GET /v1/models`, so
OpenAI's SDKs and the tools built on them (LangChain, LiteLLM, editor plugins) use QueryNox's models, quotas and
ledger with a QueryNox API key.

Plain async Django views rather than a ninja router: every answer, refusals included, has OpenAI's shapes
(`{"error": {"message", "type", "code", "param"}}`), and nothing of ninja's own error shapes can leak. Bearer keys
only (no session, so no CSRF). A completion is a turn like any other: `begin_turn` then `follow` (quota, fallback
chain, ledger, metrics, logs); the client's messages replace the stored history (TurnRequest.conversation)."""

import asyncio
import base64
import binascii
import datetime as dt
import json
import logging
import re
import time
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse, StreamingHttpResponse
from django.urls import path, re_path
from django.views.decorators.csrf import csrf_exempt

from accounts.services import user_for_bearer_token
from billing import charges
from chat.catalog import catalog
from chat.events import TERMINAL_TYPES
from chat.generations import begin_turn, follow, stop_generation
from chat.models import AIModel
from chat.providers import get_provider
from chat.providers.base import Sampling
from chat.providers.content import text_part
from chat.services import ChatError, TurnRequest, check_model, token_budget
from chat.vision import prepare_image
from core.ratelimit import allow, client_ip
from rag.files import check_upload, format_bytes
from rag.types import FileRejected, Upload

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
# An image_url part's URL: a data URL with base64 image bytes (remote URLs are refused, never fetched).
DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)(?P<params>(?:;[^;,]*)*?);base64,(?P<data>.*)", re.DOTALL)


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
    # The prompt's images, as the turn's files ((name, bytes)): shown to the model and read by OCR (chat/vision.py).
    files: tuple[tuple[str, bytes], ...] = ()


def completions_body_limit() -> int:
    """The most a completion's body may be: its images, as base64 (a third larger), may add up to
    RAG_MAX_REQUEST_BYTES, as a turn's files may; the server layers hold the same bound on this path
    (querynox/body_limits.py completions_limit)."""
    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE + -(-settings.RAG_MAX_REQUEST_BYTES * 4 // 3)


def _json_body(request) -> dict:
    try:
        length = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        length = 0
    if length > completions_body_limit():
        raise OpenAIError(413, "The request body is too large.", code="request_too_large")
    try:
        # Read directly: Django's own bound (DATA_UPLOAD_MAX_MEMORY_SIZE) is for bodies without images.
        raw = request.read(completions_body_limit() + 1)
    except RequestDataTooBig:
        raise OpenAIError(413, "The request body is too large.", code="request_too_large") from None
    if len(raw) > completions_body_limit():
        raise OpenAIError(413, "The request body is too large.", code="request_too_large")
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


@dataclass(frozen=True)
class ImageInput:
    """An image_url part's image: accepted by its bytes (rag.files.check_upload), named for its type, and where it
    was in the request."""

    name: str
    upload: Upload
    param: str


def _message_content(content, param: str, model: AIModel, role: str) -> tuple[str, list]:
    """A message's text (a string, or its text parts joined) and, for a vision model's user messages, the parts in
    order (text parts and ImageInput), or [] when it has no images."""
    if isinstance(content, str):
        return _text(content, param), []
    if not isinstance(content, list):
        raise _invalid(f"`{param}` must be a string or a list of content parts.", param)
    texts, parts, images = [], [], 0
    for index, part in enumerate(content):
        where = f"{param}[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            text = _text(part.get("text"), f"{where}.text")
            texts.append(text)
            parts.append(text)
        elif kind == "image_url":
            images += 1
            parts.append(_image_input(part.get("image_url"), f"{where}.image_url", model, role, images))
        elif kind == "input_image":
            raise _invalid(
                "“input_image” parts belong to the Responses API: send {\"type\": \"image_url\", \"image_url\": "
                "{\"url\": \"data:image/png;base64,…\"}}.",
                f"{where}.type",
                code="unsupported_content",
            )
        elif kind in ("input_audio", "file"):
            raise _invalid(f"Content parts of type “{kind}” are not supported: send text.", f"{where}.type")
        else:
            raise _invalid(f"`{where}` must be a content part such as {{\"type\": \"text\", \"text\": …}}.", where)
    return "".join(texts), (parts if images else [])


def _image_input(value, param: str, model: AIModel, role: str, number: int) -> ImageInput:
    """An image_url part, checked: a vision model, a user message, a data URL (never a remote URL: nothing is
    fetched) whose base64 decodes to an image we accept, judged by its bytes (rag.files.check_upload)."""
    if not model.vision:
        raise _invalid(
            f"`{model.name}` cannot see images: send text only, or pick a model that sees images "
            "(GET /v1/models: `vision`).",
            param,
            code="model_not_vision",
        )
    if role != "user":
        raise _invalid("Images can only be sent in user messages.", param, code="unsupported_content")
    if not isinstance(value, dict):
        raise _invalid(f"`{param}` must be an object with a `url` (data:image/png;base64,…).", param)
    if value.get("detail") not in (None, "auto", "low", "high"):
        raise _invalid(f"`{param}.detail` must be auto, low or high.", f"{param}.detail")
    url = value.get("url")
    param = f"{param}.url"
    if not isinstance(url, str) or not url:
        raise _invalid(f"`{param}` must be a data URL (data:image/png;base64,…).", param)
    if re.match(r"(?i)(https?|ftp|file):", url):
        raise _invalid(
            "Remote image URLs are not fetched: send the image itself as a data URL (data:image/png;base64,…).",
            param,
            code="remote_image_url",
        )
    match = DATA_URL.fullmatch(url)
    if match is None:
        raise _invalid("The image URL must be a base64 data URL (data:image/png;base64,…).", param, "invalid_image")
    if not match["mime"].lower().startswith("image/"):
        raise _invalid(f"The data URL's type is {match['mime']}, not an image.", param, code="invalid_image")
    encoded = match["data"]
    limit = settings.RAG_MAX_FILE_BYTES
    if len(encoded) > -(-limit * 4 // 3) + 4:  # refused before decoding: base64 is a third larger than the bytes
        message = f"The image is over {format_bytes(limit)}, the limit per image."
        raise OpenAIError(413, message, code="image_too_large", param=param)
    try:
        data = base64.b64decode(re.sub(r"\s+", "", encoded), validate=True)
    except (binascii.Error, ValueError):
        raise _invalid("The image's data URL is not valid base64.", param, code="invalid_image") from None
    name = f"image-{number}"
    try:
        upload = check_upload(name, data)
    except FileRejected as exc:
        message = exc.message.replace(f'"{name}"', "The image")
        raise OpenAIError(exc.status, message, code=exc.code, param=param) from None
    if upload.kind != "image":
        raise _invalid(
            "The data URL does not hold an image (JPEG, PNG, GIF, WebP, BMP or TIFF), whatever its type says.",
            param,
            code="invalid_image",
        )
    return ImageInput(f"{name}.{upload.mime.rsplit('/', 1)[-1]}", upload, param)


def _messages(value, model: AIModel) -> tuple[str | None, tuple[dict, ...], str, list[ImageInput]]:
    """(system prompt, the conversation before the prompt, the prompt, the prompt's images) from OpenAI `messages`.

    The prompt's images are the turn's files (sent to the model as images, and read by OCR like any image turned
    file); an earlier message's images stay in that message, sent as images to the model (not read by OCR)."""
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
        text, parts = _message_content(message["content"], f"{where}.content", model, role)
        if role in SYSTEM_ROLES:
            if text.strip():
                system.append(text)
        else:
            conversation.append({"role": role, "content": text, "parts": parts})
    last = value[-1]
    if last.get("role") != "user":
        raise _invalid("The last message must be the user's prompt (role “user”).", f"messages[{len(value) - 1}]")
    prompt_message = conversation.pop()
    prompt = prompt_message["content"]
    images = [part for part in prompt_message["parts"] if isinstance(part, ImageInput)]
    if not prompt.strip() and not images:
        raise _invalid("The last user message is empty.", f"messages[{len(value) - 1}].content")
    system_prompt = "\n\n".join(system) if system else None
    return system_prompt, tuple(_with_images(message) for message in conversation), prompt, images


def _with_images(message: dict) -> dict:
    """An earlier message: its text, or its parts (chat.providers.content) when it has images."""
    if not message["parts"]:
        return {"role": message["role"], "content": message["content"]}
    content = []
    for part in message["parts"]:
        if isinstance(part, ImageInput):
            try:
                content.append(prepare_image(part.upload))
            except Exception:  # noqa: BLE001 - the bytes were accepted; one Pillow cannot re-encode is refused
                raise _invalid("The image could not be read.", part.param, code="invalid_image") from None
        elif part:  # an empty text part is left out (Anthropic refuses empty text blocks)
            content.append(text_part(part))
    return {"role": message["role"], "content": content}


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
    system_prompt, conversation, prompt, images = _messages(data.get("messages"), model)
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
    files = tuple((image.name, image.upload.data) for image in images)
    return Completion(turn, stream, include_usage, min(budget_max, client_max or budget_max), files)


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
        resets = charges.next_month(charges.current_month())
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
        # Reading and parsing the body (up to completions_body_limit(): images ride in it as base64) in the thread,
        # so a large one does not hold up every stream on the event loop.
        completion = await sync_to_async(lambda: _parse(user, _json_body(request)))()
        query = await begin_turn(user, completion.turn, files=completion.files)
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
    subscriber = charges.is_subscriber(user)
    return [
        # The catalog keeps no creation time; 0 says "unknown" in OpenAI's integer field. `vision`: ours (the model
        # takes image_url parts); OpenAI's SDKs keep fields they do not know.
        {
            "id": entry.model.name,
            "object": "model",
            "created": 0,
            "owned_by": entry.model.provider,
            "vision": entry.model.vision,
        }
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
