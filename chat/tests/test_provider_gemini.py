"""The Gemini provider through the real `google-genai` SDK (client.aio) against the provider emulator."""

import asyncio

import pytest

from chat.providers import unavailable_reason
from chat.providers.base import Delta, Usage
from chat.providers.gemini_provider import GeminiProvider
from testsupport.emulator import count_tokens
from testsupport.scripted import EMULATOR_KEYS, PROVIDER_TEST_MESSAGES, PROVIDER_TEST_SYSTEM, drain, registered_provider

SYSTEM = PROVIDER_TEST_SYSTEM
MESSAGES = PROVIDER_TEST_MESSAGES
# Gemini's roles: the assistant is "model"; the system prompt is the separate systemInstruction.
WIRE_MESSAGES = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "model", "content": "Paris."},
    {"role": "user", "content": "And of Italy?"},
]
MODEL = "gemini-1.5-flash"


def gemini_provider() -> GeminiProvider:
    return registered_provider("gemini", GeminiProvider)


async def test_streaming_yields_the_reply_then_the_usage_metadata(emulator):
    emulator.configure(reply="Rome is the capital of Italy.")

    items = [item async for item in gemini_provider().stream(MODEL, MESSAGES, max_tokens=64)]

    assert all(isinstance(item, Delta) for item in items[:-1])
    assert "".join(item.text for item in items[:-1]) == "Rome is the capital of Italy."
    (request,) = emulator.requests
    assert items[-1] == Usage(request["usage"]["input_tokens"], request["usage"]["output_tokens"])
    assert items[-1].input_tokens == sum(count_tokens(m["content"]) for m in MESSAGES)
    assert request["path"].endswith(f"/models/{MODEL}:streamGenerateContent")
    assert request["query"] == {"alt": "sse"}
    assert request["model"] == MODEL
    assert request["system"] == SYSTEM
    assert request["messages"] == WIRE_MESSAGES
    assert request["stream"] is True
    assert request["max_tokens"] == 64
    assert request["api_key"] == EMULATOR_KEYS["GEMINI_API_KEY"]


async def test_complete_makes_one_generate_content_request(emulator):
    emulator.configure(reply="Rome.")

    completion = await gemini_provider().complete(MODEL, MESSAGES, max_tokens=16)

    (request,) = emulator.requests
    assert request["path"].endswith(f"/models/{MODEL}:generateContent")
    assert request["stream"] is False
    assert completion.text == "Rome."
    assert completion.usage == Usage(request["usage"]["input_tokens"], request["usage"]["output_tokens"])
    assert request["system"] == SYSTEM and request["messages"] == WIRE_MESSAGES


async def test_closing_the_stream_closes_the_connection_to_the_provider(emulator):
    emulator.configure(reply="word " * 200, tokens_per_second=50)
    stream = gemini_provider().stream(MODEL, MESSAGES, max_tokens=500)

    await anext(stream)
    await anext(stream)
    await stream.aclose()

    assert emulator.wait_closed_early(1, timeout=3)
    assert emulator.requests[0]["outcome"] == "client_closed"


async def test_cancelling_the_consumer_closes_the_connection_too(emulator):
    emulator.configure(reply="word " * 200, tokens_per_second=50)
    received = []

    async def consume():
        async for item in gemini_provider().stream(MODEL, MESSAGES, max_tokens=500):
            received.append(item)

    task = asyncio.create_task(consume())
    while len(received) < 2:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert emulator.wait_closed_early(1, timeout=3)


async def test_health(emulator):
    assert await gemini_provider().health() is True
    assert emulator.requests[0]["path"].endswith("/models")

    emulator.configure(fault="http_500")
    assert await gemini_provider().health() is False


async def test_a_rejected_key_is_reported_without_the_key(emulator):
    emulator.configure(api_key="the-right-one")

    _, _, error = await drain(gemini_provider().stream(MODEL, MESSAGES, max_tokens=16))

    assert str(error) == "Gemini rejected the API key; check GEMINI_API_KEY."
    assert EMULATOR_KEYS["GEMINI_API_KEY"] not in str(error)


def test_available_only_with_a_key(settings):
    settings.GEMINI_API_KEY = ""
    assert unavailable_reason("gemini") == "GEMINI_API_KEY is not set"
    settings.GEMINI_API_KEY = "anything"
    assert unavailable_reason("gemini") is None
