"""The embedded default provider: the real SmolLM2 GGUF run by llama.cpp on the CPU."""

import asyncio

import pytest
from django.test import override_settings

from chat.providers import get_provider
from chat.providers.base import Delta, Usage, Waiting

pytestmark = pytest.mark.local_model

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(autouse=True)
def _repeatable(settings):
    settings.LOCAL_MODEL_TEMPERATURE = 0.0


@pytest.fixture(scope="module")
def local():
    provider = get_provider("local")
    assert provider.unavailable_reason() is None
    provider.load()
    return provider


async def collect(stream):
    return [item async for item in stream]


async def test_answers_a_factual_question_with_streamed_deltas_and_usage(local):
    items = await collect(local.stream("SmolLM2-135M-Instruct", QUESTION, max_tokens=64))

    deltas = [item.text for item in items if isinstance(item, Delta)]
    assert len(deltas) > 3
    assert "Paris" in "".join(deltas)
    usage = items[-1]
    assert isinstance(usage, Usage)
    assert usage.input_tokens > 5 and usage.output_tokens == pytest.approx(len(deltas), abs=2)


async def test_closing_the_stream_stops_generation_early(local):
    long_request = [{"role": "user", "content": "Write a very long story about a dragon and a knight."}]
    stream = local.stream("SmolLM2-135M-Instruct", long_request, max_tokens=1500)
    received = 0
    async for item in stream:
        if isinstance(item, Delta):
            received += 1
            if received == 5:
                break
    await stream.aclose()

    # The slot is free again at once: a new turn does not wait for the abandoned 1,500 tokens (over 20 s).
    started = asyncio.get_running_loop().time()
    items = await collect(local.stream("SmolLM2-135M-Instruct", QUESTION, max_tokens=8))
    assert not any(isinstance(item, Waiting) for item in items)
    assert asyncio.get_running_loop().time() - started < 10


@override_settings(LOCAL_MODEL_MAX_CONCURRENT=1)
async def test_concurrent_turns_queue_with_a_status_instead_of_sharing_the_cpu(local):
    first = local.stream("SmolLM2-135M-Instruct", QUESTION, max_tokens=32)
    second = local.stream("SmolLM2-135M-Instruct", QUESTION, max_tokens=32)
    first_items, second_items = await asyncio.gather(collect(first), collect(second))

    waits = [item for item in first_items + second_items if isinstance(item, Waiting)]
    assert len(waits) == 1 and "Waiting for the local model" in waits[0].message
    assert all(isinstance(items[-1], Usage) for items in (first_items, second_items))


def test_a_missing_model_file_is_reported_not_crashed(settings, tmp_path):
    from chat.providers.local import LocalProvider

    settings.LOCAL_MODEL_PATH = str(tmp_path / "absent.gguf")
    reason = LocalProvider().unavailable_reason()
    assert reason and "absent.gguf" in reason
