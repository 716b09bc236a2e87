"""Long chats: turns that no longer fit the model's context are summarised once by a cheap model, and the
summary is stored on the chat so later turns reuse it."""

import pytest
from asgiref.sync import sync_to_async
from django.test import override_settings

from chat.models import Chat
from testsupport.http import ServerAsyncClient, bearer, parse_sse, read_streaming
from testsupport.scripted import install_scripted_model, uninstall_scripted_model

pytestmark = pytest.mark.django_db(transaction=True)

LONG = "word " * 120  # about 200 estimated tokens


@pytest.fixture
def small_context(scripted):
    provider, _ = install_scripted_model(context_limit=1200)  # 900 tokens for prompt and history
    return provider


@pytest.fixture
def summariser(scripted):
    provider, _ = install_scripted_model(name="cheap-model", provider_name="cheap")
    provider.tokens = ["They discussed ", "the plan."]
    with override_settings(UTILITY_MODELS=["gpt-3.5-turbo", "cheap-model"]):
        yield provider
    uninstall_scripted_model("cheap")


async def continue_chat(key, chat_id, prompt):
    response = await ServerAsyncClient().post(
        f"/api/v1/chat/{chat_id}/stream", {"prompt": prompt}, content_type="application/json", headers=bearer(key)
    )
    return parse_sse(await read_streaming(response))


async def test_old_turns_are_summarised_once_and_the_summary_is_reused(
    small_context, summariser, owner, owner_key, make_chat
):
    turns = [(f"Question {i} {LONG}", f"Answer {i} {LONG}") for i in range(8)]
    chat = await sync_to_async(make_chat)(owner, turns)

    events = await continue_chat(owner_key, chat.pk, "And now?")

    assert "Summarising the earlier conversation…" in [e.get("message") for e in events]
    assert len(summariser.calls) == 1
    summarised = summariser.calls[0]["messages"][-1]["content"]
    assert "Question 0" in summarised
    sent = small_context.calls[-1]["messages"]
    assert sent[0] == {"role": "user", "content": "Summary of our conversation so far: They discussed the plan."}
    assert sent[1] == {"role": "assistant", "content": "Summary noted."}
    assert sent[-1] == {"role": "user", "content": "And now?"}
    assert "Answer 7" in sent[-2]["content"]  # the newest turn is sent verbatim
    chat = await Chat.objects.aget(pk=chat.pk)
    assert chat.summary == "They discussed the plan." and chat.summary_until is not None

    await continue_chat(owner_key, chat.pk, "One more short one")
    assert len(summariser.calls) == 1  # the stored summary still covers what does not fit
    assert small_context.calls[-1]["messages"][0]["content"].endswith("They discussed the plan.")


async def test_a_failing_summariser_leaves_the_oldest_turns_out_and_the_turn_goes_on(
    small_context, summariser, owner, owner_key, make_chat
):
    summariser.fail_before_first = "cheap model down"
    chat = await sync_to_async(make_chat)(owner, [(f"Q{i} {LONG}", f"A{i} {LONG}") for i in range(8)])

    events = await continue_chat(owner_key, chat.pk, "Still there?")

    assert any("Could not summarise" in e.get("message", "") for e in events)
    assert events[-2]["type"] == "complete"
    sent = small_context.calls[-1]["messages"]
    assert "Q0" not in " ".join(m["content"] for m in sent)
    assert (await Chat.objects.aget(pk=chat.pk)).summary == ""
