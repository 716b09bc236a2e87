"""The Anthropic provider through the real `anthropic` SDK against the provider emulator."""

from chat.providers import unavailable_reason
from chat.providers.anthropic_provider import AnthropicProvider
from chat.providers.base import Delta, Usage
from testsupport.emulator import count_tokens
from testsupport.scripted import EMULATOR_KEYS, PROVIDER_TEST_MESSAGES, PROVIDER_TEST_SYSTEM, drain, registered_provider

SYSTEM = PROVIDER_TEST_SYSTEM
MESSAGES = PROVIDER_TEST_MESSAGES
MODEL = "claude-3-5-sonnet-20240620"


def anthropic_provider() -> AnthropicProvider:
    return registered_provider("anthropic", AnthropicProvider)


async def test_streaming_yields_the_reply_then_the_usage_from_message_start_and_message_delta(emulator):
    emulator.configure(reply="Rome is the capital of Italy.")

    items = [item async for item in anthropic_provider().stream(MODEL, MESSAGES, max_tokens=64)]

    assert all(isinstance(item, Delta) for item in items[:-1])
    assert "".join(item.text for item in items[:-1]) == "Rome is the capital of Italy."
    (request,) = emulator.requests
    assert items[-1] == Usage(request["usage"]["input_tokens"], request["usage"]["output_tokens"])
    assert items[-1].input_tokens == sum(count_tokens(m["content"]) for m in MESSAGES)
    assert request["path"] == "/v1/messages"
    assert request["model"] == MODEL
    assert request["system"] == SYSTEM  # Anthropic's separate system field
    assert request["messages"] == MESSAGES[1:]  # …and no system message among the turns
    assert request["stream"] is True
    assert request["max_tokens"] == 64
    assert request["api_key"] == EMULATOR_KEYS["CLAUDE_API_KEY"]


async def test_complete_makes_one_non_streaming_request(emulator):
    emulator.configure(reply="Rome.")

    completion = await anthropic_provider().complete(MODEL, MESSAGES, max_tokens=16)

    (request,) = emulator.requests
    assert request["stream"] is False
    assert completion.text == "Rome."
    assert completion.usage == Usage(request["usage"]["input_tokens"], request["usage"]["output_tokens"])
    assert request["system"] == SYSTEM and request["messages"] == MESSAGES[1:]


async def test_without_a_system_prompt_no_system_field_is_sent(emulator):
    await anthropic_provider().complete(MODEL, MESSAGES[1:2], max_tokens=16)

    (request,) = emulator.requests
    assert "system" not in request["body"]


async def test_max_tokens_bounds_the_answer(emulator):
    emulator.configure(reply="one two three four five six")

    deltas, usage, error = await drain(anthropic_provider().stream(MODEL, MESSAGES, max_tokens=2))

    assert error is None and "".join(deltas) == "one two" and usage.output_tokens == 2


async def test_closing_the_stream_closes_the_connection_to_the_provider(emulator):
    emulator.configure(reply="word " * 200, tokens_per_second=50)
    stream = anthropic_provider().stream(MODEL, MESSAGES, max_tokens=500)

    await anext(stream)
    await anext(stream)
    await stream.aclose()

    assert emulator.wait_closed_early(1, timeout=3)
    assert emulator.requests[0]["outcome"] == "client_closed"


async def test_health(emulator):
    assert await anthropic_provider().health() is True
    assert emulator.requests[0]["path"] == "/v1/models"

    emulator.configure(fault="http_500")
    assert await anthropic_provider().health() is False


async def test_a_rejected_key_is_reported_without_the_key(emulator):
    emulator.configure(api_key="sk-the-right-one")

    _, _, error = await drain(anthropic_provider().stream(MODEL, MESSAGES, max_tokens=16))

    assert str(error) == "Anthropic rejected the API key; check CLAUDE_API_KEY."
    assert EMULATOR_KEYS["CLAUDE_API_KEY"] not in str(error)


def test_available_only_with_a_key(settings):
    settings.CLAUDE_API_KEY = ""
    assert unavailable_reason("anthropic") == "CLAUDE_API_KEY is not set"
    settings.CLAUDE_API_KEY = "sk-ant-anything"
    assert unavailable_reason("anthropic") is None
