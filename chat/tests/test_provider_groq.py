"""The Groq provider through the real `groq` SDK against the provider emulator."""

from chat.providers import unavailable_reason
from chat.providers.base import Delta, Usage
from chat.providers.groq_provider import GroqProvider
from testsupport.emulator import count_tokens
from testsupport.scripted import EMULATOR_KEYS, PROVIDER_TEST_MESSAGES, drain, registered_provider

MESSAGES = PROVIDER_TEST_MESSAGES
MODEL = "llama-3.3-70b-versatile"


def groq_provider() -> GroqProvider:
    return registered_provider("groq", GroqProvider)


async def test_streaming_yields_the_reply_then_the_usage_from_x_groq(emulator):
    emulator.configure(reply="Rome is the capital of Italy.")

    items = [item async for item in groq_provider().stream(MODEL, MESSAGES, max_tokens=64)]

    assert all(isinstance(item, Delta) for item in items[:-1])
    assert "".join(item.text for item in items[:-1]) == "Rome is the capital of Italy."
    (request,) = emulator.requests
    assert items[-1] == Usage(request["usage"]["input_tokens"], request["usage"]["output_tokens"])
    assert items[-1].input_tokens == sum(count_tokens(m["content"]) for m in MESSAGES)
    assert request["path"] == "/openai/v1/chat/completions"  # Groq's OpenAI-format path, as the SDK calls it
    assert request["model"] == MODEL
    assert request["messages"] == MESSAGES
    assert request["stream"] is True
    assert request["include_usage"] is False  # usage came from x_groq on the final chunk
    assert request["body"]["max_completion_tokens"] == 64
    assert request["api_key"] == EMULATOR_KEYS["GROQ_API_KEY"]


async def test_complete_makes_one_non_streaming_request(emulator):
    emulator.configure(reply="Rome.")

    completion = await groq_provider().complete(MODEL, MESSAGES, max_tokens=16)

    (request,) = emulator.requests
    assert request["stream"] is False
    assert completion.text == "Rome."
    assert completion.usage == Usage(request["usage"]["input_tokens"], request["usage"]["output_tokens"])


async def test_closing_the_stream_closes_the_connection_to_the_provider(emulator):
    emulator.configure(reply="word " * 200, tokens_per_second=50)
    stream = groq_provider().stream(MODEL, MESSAGES, max_tokens=500)

    await anext(stream)
    await stream.aclose()

    assert emulator.wait_closed_early(1, timeout=3)


async def test_health(emulator):
    assert await groq_provider().health() is True
    assert emulator.requests[0]["path"] == "/openai/v1/models"


async def test_a_rejected_key_is_reported_without_the_key(emulator):
    emulator.configure(api_key="gsk-the-right-one")

    _, _, error = await drain(groq_provider().stream(MODEL, MESSAGES, max_tokens=16))

    assert str(error) == "Groq rejected the API key; check GROQ_API_KEY."


def test_available_only_with_a_key(settings):
    settings.GROQ_API_KEY = ""
    assert unavailable_reason("groq") == "GROQ_API_KEY is not set"
    settings.GROQ_API_KEY = "gsk-anything"
    assert unavailable_reason("groq") is None
