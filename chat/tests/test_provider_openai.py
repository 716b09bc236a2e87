"""The OpenAI provider through the real `openai` SDK against the provider emulator."""

import asyncio

import pytest

from chat.providers import unavailable_reason
from chat.providers.base import Delta, ProviderError, Usage
from chat.providers.openai_provider import OpenAIProvider
from testsupport.emulator import count_tokens, reply_pieces
from testsupport.scripted import EMULATOR_KEYS, PROVIDER_TEST_MESSAGES, drain, registered_provider

MESSAGES = PROVIDER_TEST_MESSAGES


def openai_provider() -> OpenAIProvider:
    return registered_provider("openai", OpenAIProvider)


async def test_streaming_yields_the_reply_then_the_usage_the_provider_reported(emulator):
    emulator.configure(reply="Rome is the capital of Italy.")

    items = [item async for item in openai_provider().stream("gpt-3.5-turbo", MESSAGES, max_tokens=64)]

    assert all(isinstance(item, Delta) for item in items[:-1])
    assert "".join(item.text for item in items[:-1]) == "Rome is the capital of Italy."
    assert len(items) - 1 == len(reply_pieces("Rome is the capital of Italy."))  # one delta per streamed chunk
    (request,) = emulator.requests
    assert items[-1] == Usage(request["usage"]["input_tokens"], request["usage"]["output_tokens"])
    assert items[-1].input_tokens == sum(count_tokens(m["content"]) for m in MESSAGES)
    assert request["path"] == "/v1/chat/completions"
    assert request["model"] == "gpt-3.5-turbo"
    assert request["messages"] == MESSAGES  # the system prompt travels as the first message
    assert request["stream"] is True and request["include_usage"] is True
    assert request["body"]["max_completion_tokens"] == 64
    assert request["api_key"] == EMULATOR_KEYS["OPENAI_API_KEY"]


async def test_complete_makes_one_non_streaming_request(emulator):
    emulator.configure(reply="Rome.")

    completion = await openai_provider().complete("gpt-3.5-turbo", MESSAGES, max_tokens=16)

    (request,) = emulator.requests
    assert request["stream"] is False
    assert completion.text == "Rome."
    assert completion.usage == Usage(request["usage"]["input_tokens"], request["usage"]["output_tokens"])
    assert request["messages"] == MESSAGES


async def test_max_tokens_bounds_the_answer(emulator):
    emulator.configure(reply="one two three four five six")

    deltas, usage, error = await drain(openai_provider().stream("gpt-3.5-turbo", MESSAGES, max_tokens=3))

    assert error is None
    assert "".join(deltas) == "one two three"
    assert usage.output_tokens == 3


async def test_closing_the_stream_closes_the_connection_to_the_provider(emulator):
    emulator.configure(reply="word " * 200, tokens_per_second=50)
    stream = openai_provider().stream("gpt-3.5-turbo", MESSAGES, max_tokens=500)

    first = [await anext(stream), await anext(stream)]
    await stream.aclose()

    assert [item.text for item in first] == ["word", " word"]
    assert emulator.wait_closed_early(1, timeout=3)
    assert emulator.requests[0]["outcome"] == "client_closed"


async def test_cancelling_the_consumer_closes_the_connection_too(emulator):
    emulator.configure(reply="word " * 200, tokens_per_second=50)
    received = []

    async def consume():
        async for item in openai_provider().stream("gpt-3.5-turbo", MESSAGES, max_tokens=500):
            received.append(item)

    task = asyncio.create_task(consume())
    while len(received) < 2:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert emulator.wait_closed_early(1, timeout=3)


async def test_health_is_one_model_list_request(emulator):
    assert await openai_provider().health() is True
    assert [r["path"] for r in emulator.requests] == ["/v1/models"]

    emulator.configure(fault="http_503")
    assert await openai_provider().health() is False
    assert len(emulator.requests) == 2  # no retries for a health check


async def test_a_rejected_key_is_reported_without_the_key(emulator):
    emulator.configure(api_key="sk-the-right-one")

    deltas, _, error = await drain(openai_provider().stream("gpt-3.5-turbo", MESSAGES, max_tokens=16))

    assert deltas == []
    assert str(error) == "OpenAI rejected the API key; check OPENAI_API_KEY."
    assert error.status_code == 401 and error.retryable is False
    assert EMULATOR_KEYS["OPENAI_API_KEY"] not in str(error)
    assert len(emulator.requests) == 1  # a rejected key is not retried


async def test_an_unknown_model_is_named_in_the_error(emulator, monkeypatch):
    emulator.configure(fault="http_404")

    with pytest.raises(ProviderError) as caught:
        await openai_provider().complete("gpt-nonexistent", MESSAGES, max_tokens=16)

    assert str(caught.value).startswith("OpenAI does not offer this model or endpoint")
    assert caught.value.retryable is False


async def test_image_generation_returns_the_png(emulator):
    image = await openai_provider().generate_image("dall-e-3", "a lighthouse at dusk")

    assert image.png.startswith(b"\x89PNG\r\n\x1a\n")
    assert image.revised_prompt == "a lighthouse at dusk"
    (request,) = emulator.requests
    assert request["path"] == "/v1/images/generations"
    assert request["body"]["response_format"] == "b64_json" and request["model"] == "dall-e-3"


def test_available_only_with_a_key(settings):
    settings.OPENAI_API_KEY = ""
    assert unavailable_reason("openai") == "OPENAI_API_KEY is not set"
    settings.OPENAI_API_KEY = "sk-anything"
    assert unavailable_reason("openai") is None


async def test_keys_and_base_urls_are_read_at_call_time(emulator, settings):
    provider = openai_provider()
    await provider.complete("gpt-3.5-turbo", MESSAGES, max_tokens=4)
    settings.OPENAI_API_KEY = "sk-rotated"

    await provider.complete("gpt-3.5-turbo", MESSAGES, max_tokens=4)

    assert [r["api_key"] for r in emulator.requests] == [EMULATOR_KEYS["OPENAI_API_KEY"], "sk-rotated"]
