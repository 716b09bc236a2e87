"""Google Gemini through the official `google-genai` SDK (its async client, `client.aio`)."""

import asyncio
import contextvars

import httpx2
from django.conf import settings
from google import genai
from google.genai import types

from chat.providers.base import DEFAULT_SAMPLING, Completion, Delta, ProviderError, Usage
from chat.providers.content import is_image
from chat.providers.sdk import SDKProvider, split_system
from core.sdk import capped_retry_wait, close_quietly, connection_limits, ssl_context, timeout_kwargs

_RETRY_STATUS = [408, 429, 500, 502, 503, 504]
_DROPPED = (httpx2.RemoteProtocolError, httpx2.ReadError, httpx2.WriteError)
# The streamed responses opened by the current stream() call, so closing the stream closes them for certain
# (the SDK's nested generators would otherwise only close them when garbage-collected).
_opened: contextvars.ContextVar[list | None] = contextvars.ContextVar("gemini_opened_responses", default=None)


class _GeminiHttpClient(httpx2.AsyncClient):
    """The HTTP client handed to google-genai: our connect/read timeouts, and a record of streamed responses.

    google-genai passes one per-request timeout for every phase (or none at all); the client's own
    httpx2.Timeout keeps connect short and read (first byte, gaps between chunks) long, as for the other SDKs.
    It also resends a request whose connection closed before any answer, as the other SDKs do."""

    def build_request(self, *args, **kwargs):
        kwargs.pop("timeout", None)
        return super().build_request(*args, **kwargs)

    async def send(self, request, *args, **kwargs):
        # google-genai retries timeouts, refused connections and 429/5xx, but not a connection the server closed
        # before answering; the other SDKs do, and so do we (the request is bytes, so it can be sent again).
        attempts = settings.PROVIDER_MAX_RETRIES + 1
        for attempt in range(attempts):
            try:
                response = await super().send(request, *args, **kwargs)
                break
            except _DROPPED:
                if attempt == attempts - 1:
                    raise
                await asyncio.sleep(capped_retry_wait(0.5 * 2**attempt))
        opened = _opened.get()
        if opened is not None and kwargs.get("stream"):
            opened.append(response)
        return response


class GeminiProvider(SDKProvider):
    name = "gemini"
    label = "Gemini"

    def _client_settings(self) -> tuple:
        return (self.api_key(), settings.GEMINI_BASE_URL or None, settings.PROVIDER_RETRY_MAX_WAIT)

    def _make_client(self, client_settings: tuple):
        api_key, base_url, max_wait, *_ = client_settings
        first_wait = capped_retry_wait(0.5)
        retry = types.HttpRetryOptions(
            attempts=settings.PROVIDER_MAX_RETRIES + 1,
            initial_delay=first_wait,
            max_delay=max_wait,
            jitter=first_wait / 4,
            http_status_codes=_RETRY_STATUS,
        )
        tls = ssl_context("httpx2")
        options = types.HttpOptions(
            base_url=base_url,
            httpx_async_client=_GeminiHttpClient(
                timeout=httpx2.Timeout(**timeout_kwargs()), verify=tls, limits=connection_limits("httpx2")
            ),
            httpx_client=httpx2.Client(verify=tls),  # never used (we only call client.aio); saves building one
            async_client_args={"ssl": tls},  # likewise for its Live API websockets
            retry_options=retry,
        )
        return genai.Client(api_key=api_key, http_options=options)

    @staticmethod
    def _request(model_id: str, messages: list[dict], max_tokens: int, sampling=DEFAULT_SAMPLING) -> dict:
        system, rest = split_system(messages)
        contents = [
            types.Content(role="model" if m["role"] == "assistant" else "user", parts=_parts(m["content"]))
            for m in rest
        ]
        config = types.GenerateContentConfig(
            max_output_tokens=max_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            stop_sequences=list(sampling.stop) or None,
            system_instruction=system or None,
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),  # no tools here
        )
        return {"model": model_id, "contents": contents, "config": config}

    async def _stream(self, model_id, messages, max_tokens, sampling=DEFAULT_SAMPLING):
        # The SDK sends the request when its stream is first iterated; record the response it opens then.
        opened: list = []
        request = self._request(model_id, messages, max_tokens, sampling)
        stream = await self.client().aio.models.generate_content_stream(**request)
        usage = None
        finished = False
        try:
            token = _opened.set(opened)
            try:
                chunk = await anext(stream, None)
            finally:
                _opened.reset(token)
            while chunk is not None:
                _check_blocked(chunk)
                usage = chunk.usage_metadata or usage
                for candidate in chunk.candidates or []:
                    for part in (candidate.content.parts or []) if candidate.content else []:
                        if part.text and not part.thought:
                            yield Delta(part.text)
                    if candidate.finish_reason:
                        finished = True
                try:
                    chunk = await anext(stream, None)
                except Exception as exc:
                    raise self.error(exc, mid_stream=True) from exc
        finally:
            await close_quietly(stream.aclose)
            for response in opened:
                await close_quietly(response.aclose)
        if not finished:
            raise self.ended_early()
        yield _usage(usage)

    async def _complete(self, model_id, messages, max_tokens, sampling=DEFAULT_SAMPLING):
        request = self._request(model_id, messages, max_tokens, sampling)
        response = await self.client().aio.models.generate_content(**request)
        _check_blocked(response)
        parts = []
        for candidate in response.candidates[:1] if response.candidates else []:
            for part in (candidate.content.parts or []) if candidate.content else []:
                if part.text and not part.thought:
                    parts.append(part.text)
        return Completion("".join(parts), _usage(response.usage_metadata))

    async def _health(self) -> None:
        no_retry = types.HttpOptions(retry_options=types.HttpRetryOptions(attempts=1))
        async with asyncio.timeout(settings.PROVIDER_HEALTH_TIMEOUT):
            await self.client().aio.models.list(config=types.ListModelsConfig(page_size=1, http_options=no_retry))


def _parts(content) -> list:
    """A message's parts: its text, or its text and image parts (vision models only: chat/vision.py) as inline
    bytes."""
    if not isinstance(content, list):
        return [types.Part(text=content)]
    return [
        types.Part.from_bytes(data=part["data"], mime_type=part["mime"])
        if is_image(part)
        else types.Part(text=part.get("text") or "")
        for part in content
    ]


def _check_blocked(response) -> None:
    feedback = getattr(response, "prompt_feedback", None)
    if feedback is not None and feedback.block_reason:
        reason = getattr(feedback.block_reason, "value", feedback.block_reason)
        raise ProviderError(f"Gemini declined to answer this prompt ({reason}).")


def _usage(metadata) -> Usage:
    if metadata is None:
        return Usage(0, 0)
    output = (metadata.candidates_token_count or 0) + (metadata.thoughts_token_count or 0)
    return Usage(input_tokens=metadata.prompt_token_count or 0, output_tokens=output)
