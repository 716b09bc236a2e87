"""The ledger against real SDK traffic: for a scripted series of turns across providers, the ledger's token sums
equal what the provider emulator reported, and its costs are the catalog's prices applied to those tokens."""

import asyncio
import math

import pytest

from billing.models import UsageEntry
from chat.models import AIModel
from testsupport.http import ServerAsyncClient, bearer, parse_sse, read_streaming

pytestmark = pytest.mark.django_db(transaction=True)

SERIES = [
    ("gpt-3.5-turbo", "Short answer.", "What is 2+2?"),
    ("llama-3.3-70b-versatile", "A somewhat longer answer from Groq, with more words in it.", "Tell me more"),
    ("gemini-1.5-flash", "Gemini answers in a few tokens.", "And Gemini?"),
    ("gpt-oss-120b", "OpenRouter relays this one.", "Via OpenRouter?"),
    ("gpt-3.5-turbo", "Again OpenAI, a second time.", "Once more " * 20),
]
PRICES = {
    "gpt-3.5-turbo": (0.5, 1.5),
    "llama-3.3-70b-versatile": (0.59, 0.79),
    "gemini-1.5-flash": (0.075, 0.3),
    "gpt-oss-120b": (0.1, 0.5),
}


async def test_ledger_token_sums_and_costs_match_the_providers_reported_usage(emulator, owner, owner_key, settings):
    settings.FALLBACK_MODELS = []
    settings.CHAT_NAMING = True  # each new chat's name is a provider call the ledger must match too
    for name, (input_price, output_price) in PRICES.items():
        await AIModel.objects.filter(name=name).aupdate(
            input_price_per_million=input_price, output_price_per_million=output_price
        )

    for model, reply, prompt in SERIES:
        emulator.configure(reply=reply)
        response = await ServerAsyncClient().post(
            "/api/v1/chat/stream",
            {"prompt": prompt, "model": model},
            content_type="application/json",
            headers=bearer(owner_key),
        )
        events = parse_sse(await read_streaming(response))
        assert events[-2]["type"] == "complete", events[-2]

    # Chat naming runs in the background after each first answer and is billed too: wait for it to settle.
    for _ in range(250):
        reported = [r for r in emulator.requests if r.get("usage")]
        if len(reported) == len(SERIES) * 2 and await UsageEntry.objects.acount() == len(reported):
            break
        await asyncio.sleep(0.02)
    assert len(reported) == len(SERIES) * 2  # each turn's answer, and each new chat's name

    entries = [e async for e in UsageEntry.objects.filter(user=owner)]
    assert sorted(e.action for e in entries) == ["chat"] * len(SERIES) + ["utility"] * len(SERIES)
    assert sum(e.input_tokens for e in entries) == sum(r["usage"]["input_tokens"] for r in reported)
    assert sum(e.output_tokens for e in entries) == sum(r["usage"]["output_tokens"] for r in reported)
    for entry in entries:
        input_price, output_price = PRICES[entry.model]
        exact = entry.input_tokens * input_price + entry.output_tokens * output_price
        assert entry.cost_micros == math.floor(exact + 0.5 + 1e-9)  # half-up to whole micro-units
    total_cost = sum(e.cost_micros for e in entries)
    print(
        f"ledger: {len(entries)} rows ({len(SERIES)} turns + {len(SERIES)} chat names), "
        f"{sum(e.input_tokens for e in entries)} in / {sum(e.output_tokens for e in entries)} out tokens, "
        f"{total_cost} micro-USD; emulator reported the same token sums"
    )
