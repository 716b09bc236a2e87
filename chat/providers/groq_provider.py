"""Groq's OpenAI-format chat completions through the official `groq` SDK."""

import groq
from django.conf import settings

from chat.providers.base import Completion, Delta, Usage
from chat.providers.sdk import SDKProvider
from core.sdk import CappedRetryWait, close_quietly, ssl_context, timeout_kwargs


class _AsyncGroq(CappedRetryWait, groq.AsyncGroq):
    pass


class GroqProvider(SDKProvider):
    name = "groq"
    label = "Groq"
    key_setting = "GROQ_API_KEY"

    def _client_settings(self) -> tuple:
        return (self.api_key(), settings.GROQ_BASE_URL or None)

    def _make_client(self, client_settings: tuple):
        api_key, base_url, *_ = client_settings
        return _AsyncGroq(
            api_key=api_key,
            base_url=base_url,
            timeout=groq.Timeout(**timeout_kwargs()),
            max_retries=settings.PROVIDER_MAX_RETRIES,
            http_client=groq.DefaultAsyncHttpxClient(verify=ssl_context("httpx")),
        )

    @staticmethod
    def _request(model_id: str, messages: list[dict], max_tokens: int) -> dict:
        return {
            "model": model_id,
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
            "max_completion_tokens": max_tokens,
        }

    async def _stream(self, model_id, messages, max_tokens):
        request = self._request(model_id, messages, max_tokens)
        stream = await self.client().chat.completions.create(**request, stream=True)
        usage = None
        finished = False
        try:
            try:
                async for chunk in stream:
                    # Groq reports usage on the final chunk under x_groq (and in `usage` when asked to).
                    usage = chunk.usage or (chunk.x_groq.usage if chunk.x_groq else None) or usage
                    for choice in chunk.choices:
                        if choice.delta is not None and choice.delta.content:
                            yield Delta(choice.delta.content)
                        if choice.finish_reason:
                            finished = True
            except Exception as exc:
                raise self.error(exc, mid_stream=True) from exc
        finally:
            await close_quietly(stream.close)
        if not finished:
            raise self.ended_early()
        yield _usage(usage)

    async def _complete(self, model_id, messages, max_tokens):
        response = await self.client().chat.completions.create(**self._request(model_id, messages, max_tokens))
        text = "".join(choice.message.content or "" for choice in response.choices[:1])
        return Completion(text, _usage(response.usage))

    async def _health(self) -> None:
        client = self.client().with_options(max_retries=0, timeout=settings.PROVIDER_HEALTH_TIMEOUT)
        await client.models.list()


def _usage(usage) -> Usage:
    if usage is None:
        return Usage(0, 0)
    return Usage(input_tokens=usage.prompt_tokens or 0, output_tokens=usage.completion_tokens or 0)
