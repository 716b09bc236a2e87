"""OpenAI chat completions through the official `openai` SDK; also OpenRouter and self-hosted OpenAI-compatible
servers (llama.cpp, vLLM, Ollama…), which speak the same API at another base URL. `ChatCompletionsProvider` is
the wire format itself, shared with Groq (chat/providers/groq_provider.py), whose own SDK speaks it too."""

import base64
import binascii
import json
import logging
import threading
import time
from collections.abc import AsyncIterator

import openai
from django.conf import settings

from chat.providers.base import DEFAULT_SAMPLING, Completion, Delta, GeneratedImage, ProviderError, Usage
from chat.providers.content import openai_content
from chat.providers.sdk import SDKProvider
from core.sdk import CappedRetryWait, close_quietly, connection_limits, ssl_context, timeout_kwargs

logger = logging.getLogger(__name__)

OPENROUTER_DEFAULT_BASE_URL = "https://openrouter.ai/api/v1"
# The SDK needs some key; a keyless self-hosted server gets this one (never another provider's key).
NO_KEY = "no-key"


async def sse_data(http_response) -> AsyncIterator[str]:
    """The data of each server-sent event of a streamed HTTP response, as it arrives (`event:`, `id:` and comment
    lines are not needed by the chat-completions format and are skipped)."""
    pending = b""
    data: list[str] = []
    async for piece in http_response.aiter_bytes():
        *lines, pending = (pending + piece).split(b"\n")
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if data:
                    yield "\n".join(data)
                    data = []
            elif line.startswith(b"data:"):
                value = line[5:]
                data.append((value[1:] if value.startswith(b" ") else value).decode())
    if pending.startswith(b"data:"):
        value = pending[5:].rstrip(b"\r")
        data.append((value[1:] if value.startswith(b" ") else value).decode())
    if data:  # the last event, without its closing blank line
        yield "\n".join(data)


def stream_error(error, request) -> openai.APIError:
    """An error event inside a stream, raised as the SDK raises it (an APIError without a status)."""
    message = error.get("message") if isinstance(error, dict) else None
    if not message or not isinstance(message, str):
        message = "An error occurred during streaming"
    return openai.APIError(message=message, request=request, body=error)


class _AsyncOpenAI(CappedRetryWait, openai.AsyncOpenAI):
    pass


class _OpenAI(CappedRetryWait, openai.OpenAI):
    pass


def _untransformed(request: dict) -> dict:
    """The SDK's create() arguments for `request`, with the messages sent as they are (already plain JSON: role and
    content) through `extra_body`, which the SDK merges into the body last without walking it. create() otherwise
    walks every message through its TypedDict transform, about 1 ms per message on this machine: 60 ms for a long
    chat's history, most of the difference between a chat's first turn and its 200th (bench/README.md)."""
    arguments = {key: value for key, value in request.items() if key != "messages"}
    return {**arguments, "messages": [], "extra_body": {"messages": request["messages"]}}


class ChatCompletionsProvider(SDKProvider):
    """The OpenAI chat-completions wire format, whichever SDK speaks it: the request, the streaming loop, the
    usage. Subclasses build the client (`_client_settings`, `_make_client`) and may adapt `_stream_options` and
    `_chunk_usage` to where their API reports usage."""

    base_url_setting = ""  # the setting that may point the client elsewhere (empty: the SDK's own URL)
    default_base_url: str | None = None  # the SDK's own
    # OpenAI (and Groq) deprecated max_tokens for max_completion_tokens; OpenRouter and self-hosted servers take
    # max_tokens.
    max_tokens_param = "max_completion_tokens"

    def base_url(self) -> str | None:
        return (getattr(settings, self.base_url_setting, "") if self.base_url_setting else "") or self.default_base_url

    def _request(self, model_id: str, messages: list[dict], max_tokens: int, sampling=DEFAULT_SAMPLING) -> dict:
        request = {
            "model": model_id,
            # Image parts (vision models only: chat/vision.py) become `image_url` parts carrying a data URL.
            "messages": [{"role": m["role"], "content": openai_content(m["content"])} for m in messages],
            self.max_tokens_param: max_tokens,
        }
        if sampling.temperature is not None:
            request["temperature"] = sampling.temperature
        if sampling.top_p is not None:
            request["top_p"] = sampling.top_p
        if sampling.stop:
            request["stop"] = list(sampling.stop)
        return request

    def _stream_options(self) -> dict:
        """Extra arguments of a streamed request: ask for usage on the final chunk."""
        return {"stream_options": {"include_usage": True}}

    async def _stream(self, model_id, messages, max_tokens, sampling=DEFAULT_SAMPLING):
        # The SDK sends the request (retries, status errors, timeouts as configured) and hands back the raw HTTP
        # stream; its chunks are read here as plain JSON, without the SDK's pydantic object per chunk (most of
        # the CPU a streamed turn spent in the SDK).
        request = {**self._request(model_id, messages, max_tokens, sampling), "stream": True, **self._stream_options()}
        streaming = self.client().chat.completions.with_streaming_response
        response = await streaming.create(**_untransformed(request)).__aenter__()
        usage = None
        finished = False
        try:
            try:
                async for data in sse_data(response.http_response):
                    if data.startswith("[DONE]"):
                        break
                    chunk = json.loads(data)
                    if not isinstance(chunk, dict):
                        continue
                    if chunk.get("error"):
                        raise stream_error(chunk["error"], response.http_response.request)
                    usage = self._chunk_usage(chunk) or usage
                    for choice in chunk.get("choices") or ():
                        delta = choice.get("delta")
                        if delta and delta.get("content"):
                            yield Delta(delta["content"])
                        if choice.get("finish_reason"):
                            finished = True
            except Exception as exc:
                raise self.error(exc, mid_stream=True) from exc
        finally:
            await close_quietly(response.close)
        if not finished:
            raise self.ended_early()
        yield self._usage(usage)

    def _chunk_usage(self, chunk: dict) -> dict | None:
        return chunk.get("usage")

    @staticmethod
    def _usage(usage: dict | None) -> Usage:
        if not isinstance(usage, dict):  # a server that ignores stream_options: nothing was counted
            return Usage(0, 0)
        return Usage(input_tokens=usage.get("prompt_tokens") or 0, output_tokens=usage.get("completion_tokens") or 0)

    async def _complete(self, model_id, messages, max_tokens, sampling=DEFAULT_SAMPLING):
        request = self._request(model_id, messages, max_tokens, sampling)
        raw = await self.client().chat.completions.with_raw_response.create(**_untransformed(request))
        response = json.loads(raw.http_response.content)
        if not isinstance(response, dict):
            raise json.JSONDecodeError("not a JSON object", raw.http_response.text, 0)
        choices = response.get("choices") or []
        message = (choices[0].get("message") or {}) if choices else {}
        return Completion(message.get("content") or "", self._usage(response.get("usage")))

    async def _health(self) -> None:
        client = self.client().with_options(max_retries=0, timeout=settings.PROVIDER_HEALTH_TIMEOUT)
        await client.models.list()


class OpenAIProvider(ChatCompletionsProvider):
    name = "openai"
    label = "OpenAI"
    base_url_setting = "OPENAI_BASE_URL"

    def _client_settings(self) -> tuple:
        return (self.api_key() or NO_KEY, self.base_url())

    def _make_client(self, client_settings: tuple):
        api_key, base_url, *_ = client_settings
        return _AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
            timeout=openai.Timeout(**timeout_kwargs()),
            max_retries=settings.PROVIDER_MAX_RETRIES,
            http_client=openai.DefaultAsyncHttpxClient(
                verify=ssl_context("httpx2"), limits=connection_limits("httpx2")
            ),
        )

    async def generate_image(self, model_id: str, prompt: str) -> GeneratedImage:
        request = {"model": model_id, "prompt": prompt, "n": 1}
        if model_id.startswith("dall-e"):  # gpt-image models always answer base64 and reject response_format
            request["response_format"] = "b64_json"
        try:
            response = await self.client().images.generate(**request)
        except Exception as exc:
            raise self.error(exc) from exc
        image = response.data[0] if response.data else None
        if image is None or not image.b64_json:
            raise ProviderError(f"{self.label} returned no image.", retryable=True)
        try:
            png = base64.b64decode(image.b64_json, validate=True)
        except (binascii.Error, ValueError):
            raise ProviderError(f"{self.label} sent a malformed image.", retryable=True) from None
        return GeneratedImage(png=png, revised_prompt=image.revised_prompt or "")

    async def list_models(self) -> list[str]:
        """The model ids the server lists (GET …/models)."""
        try:
            return sorted([model.id async for model in self.client().models.list()])
        except Exception as exc:
            raise self.error(exc) from exc


class OpenRouterProvider(OpenAIProvider):
    name = "openrouter"
    label = "OpenRouter"
    base_url_setting = "OPENROUTER_BASE_URL"
    default_base_url = OPENROUTER_DEFAULT_BASE_URL
    max_tokens_param = "max_tokens"


class OpenAICompatibleProvider(OpenAIProvider):
    """A self-hosted server speaking the OpenAI API; available when OPENAI_COMPATIBLE_BASE_URL is set."""

    name = "openai_compatible"
    label = "the OpenAI-compatible server"
    base_url_setting = "OPENAI_COMPATIBLE_BASE_URL"
    max_tokens_param = "max_tokens"

    def api_key(self) -> str:
        # Optional (many self-hosted servers take none), so it is not the registry's required key_setting.
        return settings.OPENAI_COMPATIBLE_API_KEY


_models_cache: dict[tuple, tuple[float, list[str]]] = {}
_models_lock = threading.Lock()


def openai_compatible_models() -> list[str]:
    """The model ids the self-hosted OpenAI-compatible server lists, for the catalog (synchronous).

    Empty when OPENAI_COMPATIBLE_BASE_URL is unset or the server cannot be asked (logged, never raised). Cached
    per base URL for OPENAI_COMPATIBLE_MODELS_CACHE_SECONDS, so rendering the catalog does not hit the server."""
    base_url = settings.OPENAI_COMPATIBLE_BASE_URL
    if not base_url:
        return []
    key = (base_url, settings.OPENAI_COMPATIBLE_API_KEY)
    now = time.monotonic()
    with _models_lock:
        cached = _models_cache.get(key)
        if cached and now - cached[0] < settings.OPENAI_COMPATIBLE_MODELS_CACHE_SECONDS:
            return list(cached[1])
    client = _OpenAI(
        api_key=settings.OPENAI_COMPATIBLE_API_KEY or NO_KEY,
        base_url=base_url,
        timeout=settings.PROVIDER_HEALTH_TIMEOUT,
        max_retries=0,
        http_client=openai.DefaultHttpxClient(verify=ssl_context("httpx2")),
    )
    try:
        models = sorted(model.id for model in client.models.list())
    except Exception as exc:
        reason = OpenAICompatibleProvider().error(exc)
        logger.warning("could not list the OpenAI-compatible server's models", extra={"reason": str(reason)})
        return []
    finally:
        client.close()
    with _models_lock:
        _models_cache[key] = (now, models)
    return list(models)


def clear_openai_compatible_models_cache() -> None:
    with _models_lock:
        _models_cache.clear()
