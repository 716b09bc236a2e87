"""A self-hosted OpenAI-compatible server: the real `openai` SDK at OPENAI_COMPATIBLE_BASE_URL (the emulator)."""

from chat.providers import unavailable_reason
from chat.providers.base import Delta, Usage
from chat.providers.openai_provider import (
    NO_KEY,
    OpenAICompatibleProvider,
    clear_openai_compatible_models_cache,
    openai_compatible_models,
)
from testsupport.scripted import EMULATOR_KEYS, drain, registered_provider

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Say hi."},
]
MODEL = "qwen2.5-7b-instruct"


def compatible_provider() -> OpenAICompatibleProvider:
    return registered_provider("openai_compatible", OpenAICompatibleProvider)


async def test_streaming_with_usage(emulator):
    emulator.configure(reply="Hi there!")

    items = [item async for item in compatible_provider().stream(MODEL, MESSAGES, max_tokens=16)]

    assert "".join(item.text for item in items if isinstance(item, Delta)) == "Hi there!"
    (request,) = emulator.requests
    assert items[-1] == Usage(request["usage"]["input_tokens"], request["usage"]["output_tokens"])
    assert request["path"] == "/v1/chat/completions"
    assert request["model"] == MODEL and request["messages"] == MESSAGES and request["stream"] is True
    assert request["body"]["max_tokens"] == 16


async def test_complete_makes_one_non_streaming_request(emulator):
    emulator.configure(reply="Hi.")

    completion = await compatible_provider().complete(MODEL, MESSAGES, max_tokens=16)

    (request,) = emulator.requests
    assert request["stream"] is False and completion.text == "Hi."
    assert completion.usage == Usage(request["usage"]["input_tokens"], request["usage"]["output_tokens"])


async def test_the_key_is_optional_and_no_other_providers_key_is_ever_sent(emulator, settings):
    await compatible_provider().complete(MODEL, MESSAGES, max_tokens=4)
    settings.OPENAI_COMPATIBLE_API_KEY = "local-secret"
    await compatible_provider().complete(MODEL, MESSAGES, max_tokens=4)

    keys = [r["api_key"] for r in emulator.requests]
    assert keys == [NO_KEY, "local-secret"]
    assert EMULATOR_KEYS["OPENAI_API_KEY"] not in keys


async def test_closing_the_stream_closes_the_connection(emulator):
    emulator.configure(reply="word " * 200, tokens_per_second=50)
    stream = compatible_provider().stream(MODEL, MESSAGES, max_tokens=500)

    await anext(stream)
    await stream.aclose()

    assert emulator.wait_closed_early(1, timeout=3)


async def test_errors_name_the_server_not_a_key(emulator):
    emulator.configure(fault="http_503")

    _, _, error = await drain(compatible_provider().stream(MODEL, MESSAGES, max_tokens=8))

    assert str(error) == "The OpenAI-compatible server had a server error (HTTP 503); try again shortly."


async def test_list_models_from_the_server(emulator):
    emulator.configure(models=["qwen2.5-7b-instruct", "llama-3.2-3b"])

    assert await compatible_provider().list_models() == ["llama-3.2-3b", "qwen2.5-7b-instruct"]


def test_the_catalog_helper_lists_models_and_caches_them(emulator):
    clear_openai_compatible_models_cache()
    emulator.configure(models=["model-a", "model-b"])

    assert openai_compatible_models() == ["model-a", "model-b"]
    emulator.configure(models=["model-c"])
    assert openai_compatible_models() == ["model-a", "model-b"]  # cached
    assert len(emulator.requests) == 1
    clear_openai_compatible_models_cache()


def test_the_catalog_helper_returns_nothing_when_the_server_fails_or_is_not_set(emulator, settings):
    clear_openai_compatible_models_cache()
    emulator.configure(fault="drop")
    assert openai_compatible_models() == []
    settings.OPENAI_COMPATIBLE_BASE_URL = ""
    assert openai_compatible_models() == []
    clear_openai_compatible_models_cache()


def test_available_when_its_base_url_is_set(settings):
    settings.OPENAI_COMPATIBLE_BASE_URL = ""
    settings.OPENAI_COMPATIBLE_API_KEY = ""
    assert unavailable_reason("openai_compatible") == "OPENAI_COMPATIBLE_BASE_URL is not set"
    settings.OPENAI_COMPATIBLE_BASE_URL = "http://127.0.0.1:9/v1"
    assert unavailable_reason("openai_compatible") is None
