"""Groq's OpenAI-format chat completions through the official `groq` SDK: the OpenAI module's wire format
(ChatCompletionsProvider), with Groq's own client and Groq's place for the usage."""

import groq
from django.conf import settings

from chat.providers.openai_provider import ChatCompletionsProvider
from core.sdk import CappedRetryWait, connection_limits, ssl_context, timeout_kwargs


class _AsyncGroq(CappedRetryWait, groq.AsyncGroq):
    pass


class GroqProvider(ChatCompletionsProvider):
    name = "groq"
    label = "Groq"
    base_url_setting = "GROQ_BASE_URL"

    def _client_settings(self) -> tuple:
        return (self.api_key(), self.base_url())

    def _make_client(self, client_settings: tuple):
        api_key, base_url, *_ = client_settings
        return _AsyncGroq(
            api_key=api_key,
            base_url=base_url,
            timeout=groq.Timeout(**timeout_kwargs()),
            max_retries=settings.PROVIDER_MAX_RETRIES,
            http_client=groq.DefaultAsyncHttpxClient(verify=ssl_context("httpx"), limits=connection_limits("httpx")),
        )

    def _stream_options(self) -> dict:
        # The groq SDK takes no stream_options; Groq reports the usage on the final chunk anyway (_chunk_usage).
        return {}

    def _chunk_usage(self, chunk: dict) -> dict | None:
        # Under x_groq on the final chunk (and in `usage` when a server sends it there).
        return chunk.get("usage") or (chunk.get("x_groq") or {}).get("usage")
