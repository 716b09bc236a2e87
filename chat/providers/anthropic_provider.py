"""Anthropic's Messages API through the official `anthropic` SDK."""

import anthropic
from django.conf import settings

from chat.providers.base import DEFAULT_SAMPLING, Completion, Delta, Usage
from chat.providers.content import anthropic_content
from chat.providers.sdk import SDKProvider, split_system
from core.sdk import CappedRetryWait, close_quietly, connection_limits, ssl_context, timeout_kwargs


class _AsyncAnthropic(CappedRetryWait, anthropic.AsyncAnthropic):
    pass


class AnthropicProvider(SDKProvider):
    name = "anthropic"
    label = "Anthropic"
    # The Messages API (and its SDK since 2.x) takes no temperature or top_p any more: only stop sequences.
    sampling_controls = frozenset({"stop"})

    def _client_settings(self) -> tuple:
        return (self.api_key(), settings.CLAUDE_BASE_URL or None)

    def _make_client(self, client_settings: tuple):
        api_key, base_url, *_ = client_settings
        return _AsyncAnthropic(
            api_key=api_key,
            base_url=base_url,
            timeout=anthropic.Timeout(**timeout_kwargs()),
            max_retries=settings.PROVIDER_MAX_RETRIES,
            http_client=anthropic.DefaultAsyncHttpxClient(
                verify=ssl_context("httpx2"), limits=connection_limits("httpx2")
            ),
        )

    @staticmethod
    def _request(model_id: str, messages: list[dict], max_tokens: int, sampling=DEFAULT_SAMPLING) -> dict:
        system, rest = split_system(messages)
        # Image parts (vision models only: chat/vision.py) become base64 `image` blocks.
        rest = [{"role": m["role"], "content": anthropic_content(m["content"])} for m in rest]
        request = {"model": model_id, "messages": rest, "max_tokens": max_tokens}
        if system:
            request["system"] = system
        if sampling.stop:
            request["stop_sequences"] = list(sampling.stop)
        return request

    async def _stream(self, model_id, messages, max_tokens, sampling=DEFAULT_SAMPLING):
        request = self._request(model_id, messages, max_tokens, sampling)
        stream = await self.client().messages.create(**request, stream=True)
        input_tokens = output_tokens = 0
        finished = False
        try:
            try:
                async for event in stream:
                    if event.type == "message_start":
                        input_tokens = _input_tokens(event.message.usage)
                        output_tokens = event.message.usage.output_tokens or 0
                    elif event.type == "content_block_delta":
                        if event.delta.type == "text_delta" and event.delta.text:
                            yield Delta(event.delta.text)
                    elif event.type == "message_delta":
                        # Cumulative counts; input_tokens appears here too on newer API versions.
                        output_tokens = event.usage.output_tokens or output_tokens
                        input_tokens = _input_tokens(event.usage) or input_tokens
                    elif event.type == "message_stop":
                        finished = True
            except Exception as exc:
                raise self.error(exc, mid_stream=True) from exc
        finally:
            await close_quietly(stream.close)
        if not finished:
            raise self.ended_early()
        yield Usage(input_tokens=input_tokens, output_tokens=output_tokens)

    async def _complete(self, model_id, messages, max_tokens, sampling=DEFAULT_SAMPLING):
        message = await self.client().messages.create(**self._request(model_id, messages, max_tokens, sampling))
        text = "".join(block.text for block in message.content if block.type == "text")
        return Completion(text, Usage(_input_tokens(message.usage), message.usage.output_tokens or 0))

    async def _health(self) -> None:
        client = self.client().with_options(max_retries=0, timeout=settings.PROVIDER_HEALTH_TIMEOUT)
        await client.models.list(limit=1)


def _input_tokens(usage) -> int:
    """Everything read as input: fresh tokens plus prompt-cache writes and reads."""
    return sum(
        getattr(usage, field, None) or 0
        for field in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )
