"""The OpenRouter provider: the real `openai` SDK at OpenRouter's base URL, against the provider emulator."""

from chat.providers import unavailable_reason
from chat.providers.base import Delta, Usage
from chat.providers.openai_provider import OPENROUTER_DEFAULT_BASE_URL, OpenRouterProvider
from testsupport.scripted import EMULATOR_KEYS, drain, registered_provider

MESSAGES = [
    {"role": "system", "content": "You answer in one short sentence."},
    {"role": "user", "content": "Name a prime number."},
]
MODEL = "openai/gpt-oss-120b"


def openrouter_provider() -> OpenRouterProvider:
    return registered_provider("openrouter", OpenRouterProvider)


async def test_streaming_goes_to_the_openrouter_base_url_with_its_key(emulator):
    emulator.configure(reply="Seven is prime.")

    items = [item async for item in openrouter_provider().stream(MODEL, MESSAGES, max_tokens=32)]

    assert "".join(item.text for item in items if isinstance(item, Delta)) == "Seven is prime."
    (request,) = emulator.requests
    assert items[-1] == Usage(request["usage"]["input_tokens"], request["usage"]["output_tokens"])
    assert request["path"] == "/api/v1/chat/completions"
    assert request["model"] == MODEL  # OpenRouter's vendor/model id, passed through unchanged
    assert request["messages"] == MESSAGES
    assert request["stream"] is True and request["include_usage"] is True
    assert request["body"]["max_tokens"] == 32 and "max_completion_tokens" not in request["body"]
    assert request["api_key"] == EMULATOR_KEYS["OPENROUTER_API_KEY"]


async def test_complete_makes_one_non_streaming_request(emulator):
    emulator.configure(reply="Seven.")

    completion = await openrouter_provider().complete(MODEL, MESSAGES, max_tokens=8)

    (request,) = emulator.requests
    assert request["stream"] is False and completion.text == "Seven."
    assert completion.usage == Usage(request["usage"]["input_tokens"], request["usage"]["output_tokens"])


async def test_closing_the_stream_closes_the_connection_to_the_provider(emulator):
    emulator.configure(reply="word " * 200, tokens_per_second=50)
    stream = openrouter_provider().stream(MODEL, MESSAGES, max_tokens=500)

    await anext(stream)
    await stream.aclose()

    assert emulator.wait_closed_early(1, timeout=3)


async def test_errors_name_openrouter(emulator):
    emulator.configure(api_key="sk-or-the-right-one")

    _, _, error = await drain(openrouter_provider().stream(MODEL, MESSAGES, max_tokens=8))

    assert str(error) == "OpenRouter rejected the API key; check OPENROUTER_API_KEY."


def test_without_a_base_url_setting_it_uses_openrouters_api(settings):
    settings.OPENROUTER_BASE_URL = ""
    assert OpenRouterProvider().base_url() == OPENROUTER_DEFAULT_BASE_URL


def test_available_only_with_a_key(settings):
    settings.OPENROUTER_API_KEY = ""
    assert unavailable_reason("openrouter") == "OPENROUTER_API_KEY is not set"
    settings.OPENROUTER_API_KEY = "sk-or-anything"
    assert unavailable_reason("openrouter") is None
