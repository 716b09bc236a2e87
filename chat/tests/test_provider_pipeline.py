"""Whole turns answered by cloud providers: the SSE endpoint, the pipeline, the real SDKs and the emulator."""

import pytest
from django.test import override_settings

from chat.models import ChatQuery
from testsupport.http import ServerAsyncClient, bearer, parse_sse, read_streaming

pytestmark = pytest.mark.django_db(transaction=True)


async def turn(key, **payload):
    response = await ServerAsyncClient().post(
        "/api/v1/chat/stream", payload, content_type="application/json", headers=bearer(key)
    )
    return parse_sse(await read_streaming(response))


async def test_a_turn_answered_by_openai_saves_the_answer_and_the_providers_usage(emulator, owner_key):
    emulator.configure(reply="Paris is the capital of France.")

    events = await turn(owner_key, prompt="Capital of France?", model="gpt-3.5-turbo", systemPrompt="Be brief.")

    assert "".join(e["content"] for e in events if e["type"] == "content") == "Paris is the capital of France."
    (request,) = emulator.requests
    assert request["model"] == "gpt-3.5-turbo"
    assert request["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of France?"},
    ]
    saved = await ChatQuery.objects.aget(pk=events[1]["queryId"])
    assert (saved.status, saved.response) == ("complete", "Paris is the capital of France.")
    assert saved.metadata["usage"] == {
        "inputTokens": request["usage"]["input_tokens"],
        "outputTokens": request["usage"]["output_tokens"],
    }


async def test_a_provider_down_before_its_first_token_hands_the_turn_to_the_fallback(emulator, owner_key):
    emulator.configure(reply="Answered by Gemini.", fault={"kind": "http_503", "match": "/chat/completions"})

    with override_settings(FALLBACK_MODELS=["gemini-1.5-flash"]):
        events = await turn(owner_key, prompt="Hello?", model="gpt-3.5-turbo")

    assert "".join(e["content"] for e in events if e["type"] == "content") == "Answered by Gemini."
    statuses = [e["message"] for e in events if e["type"] == "status"]
    assert any("OpenAI had a server error (HTTP 503)" in status for status in statuses)
    assert [r["path"].rsplit("/", 1)[-1] for r in emulator.requests] == [
        "completions",
        "completions",
        "completions",  # the SDK's two retries, then the fallback
        "gemini-1.5-flash:streamGenerateContent",
    ]
    saved = await ChatQuery.objects.aget(pk=events[1]["queryId"])
    assert (saved.status, saved.model) == ("complete", "gemini-1.5-flash")


async def test_a_stream_cut_mid_answer_keeps_the_partial_answer(emulator, owner_key):
    emulator.configure(reply="one two three four", fault={"kind": "cut", "after_chunks": 2})

    events = await turn(owner_key, prompt="Count", model="gpt-3.5-turbo")

    assert "".join(e["content"] for e in events if e["type"] == "content") == "one two"
    error = next(e for e in events if e["type"] == "error")
    assert error["message"] == "The connection to OpenAI broke off mid-answer."
    saved = await ChatQuery.objects.aget(pk=events[1]["queryId"])
    assert (saved.status, saved.response) == ("error", "one two")
