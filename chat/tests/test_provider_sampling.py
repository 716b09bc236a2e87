"""Sampling controls (temperature, top_p, stop; the OpenAI-compatible API's) reach every cloud provider in its own
terms, through the real SDKs against the provider emulator; left at their defaults, nothing extra is sent."""

import pytest

from chat.providers import get_provider
from chat.providers.base import Sampling
from testsupport.scripted import PROVIDER_TEST_MESSAGES, drain

ASKED = Sampling(temperature=1.5, top_p=0.5, stop=("END",))

# provider, model id, what the provider's API receives for ASKED
CASES = [
    ("openai", "gpt-3.5-turbo", {"temperature": 1.5, "top_p": 0.5, "stop": ["END"]}),
    ("groq", "llama-3.3-70b-versatile", {"temperature": 1.5, "top_p": 0.5, "stop": ["END"]}),
    ("openrouter", "openai/gpt-oss-120b", {"temperature": 1.5, "top_p": 0.5, "stop": ["END"]}),
    # Anthropic's API takes no temperature or top_p any more (the OpenAI-compatible API refuses them for it).
    ("anthropic", "claude-3-5-sonnet-20240620", {"stop_sequences": ["END"]}),
    ("gemini", "gemini-1.5-flash", {"temperature": 1.5, "topP": 0.5, "stopSequences": ["END"]}),
]


@pytest.mark.parametrize(("name", "model_id", "received"), CASES)
async def test_sampling_reaches_the_provider_in_its_own_terms(emulator, name, model_id, received):
    provider = get_provider(name)
    _, _, error = await drain(provider.stream(model_id, PROVIDER_TEST_MESSAGES, max_tokens=16, sampling=ASKED))

    assert error is None
    (request,) = emulator.requests
    assert request["sampling"] == received


@pytest.mark.parametrize(("name", "model_id", "received"), CASES)
async def test_default_sampling_sends_nothing_extra(emulator, name, model_id, received):
    _, _, error = await drain(get_provider(name).stream(model_id, PROVIDER_TEST_MESSAGES, max_tokens=16))

    assert error is None
    (request,) = emulator.requests
    assert request["sampling"] == {}
