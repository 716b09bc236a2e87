"""The web search query: written by the utility model from the conversation (through the real OpenAI SDK against
the provider emulator), billed as a utility call, cleaned, and the user's prompt when no model can write it."""

import pytest

from billing.models import UsageEntry
from chat.assist import BilledTo
from chat.models import AIModel
from chat.websearch import QUERY_MAX_CHARS, clean_search_query, make_search_query

pytestmark = pytest.mark.django_db(transaction=True)

HISTORY = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Who wrote Dune?"},
    {"role": "assistant", "content": "Frank Herbert wrote Dune."},
]


@pytest.fixture
async def utility(emulator):
    """The seed catalog's gpt-3.5-turbo (OpenAI provider), served by the emulator."""
    return await AIModel.objects.aget(name="gpt-3.5-turbo")


async def test_the_utility_model_writes_the_query_from_the_conversation_and_is_billed(emulator, utility, owner):
    emulator.configure(reply='Search query: "Frank Herbert date of death"\nThis finds when he died.')

    query = await make_search_query("When did he die?", HISTORY, utility, billed_to=BilledTo(owner.id, None))

    assert query == "Frank Herbert date of death"
    (request,) = emulator.requests
    assert request["path"] == "/v1/chat/completions" and request["model"] == utility.full_name
    instruction, material = request["messages"]
    assert instruction["role"] == "system" and "web search query" in instruction["content"]
    assert material["content"] == (
        "User: Who wrote Dune?\nAssistant: Frank Herbert wrote Dune.\nLatest user message: When did he die?"
    )  # the system prompt is not part of the conversation the writer sees
    entry = await UsageEntry.objects.aget(user=owner)
    assert (entry.action, entry.model) == ("utility", "gpt-3.5-turbo")
    assert (entry.input_tokens, entry.output_tokens) == (
        request["usage"]["input_tokens"],
        request["usage"]["output_tokens"],
    )


async def test_only_the_recent_conversation_is_sent_and_the_prompt_only_once(emulator, utility, owner):
    emulator.configure(reply="turn 11")
    history = [{"role": "user" if n % 2 else "assistant", "content": f"message {n}"} for n in range(1, 16)]
    history.append({"role": "user", "content": "the new question"})  # a caller that already appended the prompt

    await make_search_query("the new question", history, utility, billed_to=BilledTo(owner.id, None))

    material = emulator.requests[0]["messages"][1]["content"]
    assert material.splitlines() == [
        *(f"{'User' if n % 2 else 'Assistant'}: message {n}" for n in range(6, 16)),
        "Latest user message: the new question",
    ]


async def test_without_a_utility_model_the_prompt_is_the_query(emulator, owner):
    query = await make_search_query(
        "  what is new\nin   Django 5.2? ", HISTORY, None, billed_to=BilledTo(owner.id, None)
    )

    assert query == "what is new in Django 5.2?"
    long_query = await make_search_query("word " * 200, [], None, billed_to=BilledTo(owner.id, None))
    assert len(long_query) <= QUERY_MAX_CHARS and long_query.endswith("word…")
    assert emulator.requests == []
    assert not await UsageEntry.objects.filter(user=owner).aexists()


async def test_a_failing_utility_model_falls_back_to_the_prompt(emulator, utility, owner):
    emulator.configure(fault="http_500")  # every attempt, retries included

    query = await make_search_query("When did he die?", HISTORY, utility, billed_to=BilledTo(owner.id, None))

    assert query == "When did he die?"
    assert emulator.requests and {r["outcome"] for r in emulator.requests} == {"http_500"}
    assert not await UsageEntry.objects.filter(user=owner).aexists()


@pytest.mark.parametrize("reply", ["", '""', "Query:"])
async def test_an_empty_answer_falls_back_to_the_prompt(reply, emulator, utility, owner):
    emulator.configure(reply=reply)

    query = await make_search_query("When did he die?", HISTORY, utility, billed_to=BilledTo(owner.id, None))

    assert query == "When did he die?"
    assert len(emulator.requests) == 1  # the model was asked (and its tokens billed), its answer unusable
    assert await UsageEntry.objects.filter(user=owner, action="utility").acount() == 1


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        ("django channels redis", "django channels redis"),
        ('"django channels redis"', "django channels redis"),
        ("“Frank Herbert” death", "Frank Herbert death"),
        ("Search query: Python's GIL removal", "Python's GIL removal"),
        ("'single quoted'", "single quoted"),
        ("\n\n  Query:   rust   borrow checker \nexplanation line", "rust borrow checker"),
        ("`code` span", "code span"),
        ("", ""),
    ],
)
def test_the_models_answer_is_reduced_to_one_plain_query(raw, cleaned):
    assert clean_search_query(raw) == cleaned


def test_a_long_answer_is_cut_at_a_word():
    cleaned = clean_search_query("token " * 100)

    assert len(cleaned) <= QUERY_MAX_CHARS and cleaned.endswith("token…") and "\n" not in cleaned
