"""After a chat's first answer a cheap model names it, in the background, without delaying the answer."""

import asyncio

import pytest
from django.test import override_settings

from chat.assist import clean_chat_name
from chat.models import Chat
from testsupport.http import ServerAsyncClient, bearer, parse_sse, read_streaming
from testsupport.scripted import install_scripted_model, uninstall_scripted_model

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def namer(scripted):
    provider, _ = install_scripted_model(name="cheap-model", provider_name="cheap")
    provider.tokens = ['"Title: Weekend ', 'trip to Paris."']
    with override_settings(UTILITY_MODELS=["cheap-model"], CHAT_NAMING=True):
        yield provider
    uninstall_scripted_model("cheap")


async def wait_for_name(chat_id, expected, timeout=5.0):
    for _ in range(int(timeout / 0.02)):
        chat = await Chat.objects.aget(pk=chat_id)
        if chat.name == expected:
            return chat
        await asyncio.sleep(0.02)
    raise AssertionError(f"chat was never named {expected!r}; it is {chat.name!r}")


async def test_the_first_answer_is_not_delayed_and_the_chat_gets_a_short_name(scripted, namer, owner_key):
    gate = namer.hold_at(0)  # the namer is stuck until released
    response = await ServerAsyncClient().post(
        "/api/v1/chat/stream",
        {"prompt": "Plan my weekend in Paris please"},
        content_type="application/json",
        headers=bearer(owner_key),
    )
    events = parse_sse(await read_streaming(response))  # completes while the namer is still blocked

    assert events[-2]["type"] == "complete"
    chat_id = events[1]["chatId"]
    assert (await Chat.objects.aget(pk=chat_id)).name == "Plan my weekend in Paris please"
    gate.set()
    chat = await wait_for_name(chat_id, "Weekend trip to Paris")
    assert chat.title == "Plan my weekend in Paris please"  # the user's title is untouched


async def test_later_turns_do_not_rename(scripted, namer, owner_key):
    client = ServerAsyncClient()
    first = parse_sse(
        await read_streaming(
            await client.post(
                "/api/v1/chat/stream", {"prompt": "Hello"}, content_type="application/json", headers=bearer(owner_key)
            )
        )
    )
    chat_id = first[1]["chatId"]
    await wait_for_name(chat_id, "Weekend trip to Paris")
    namer.tokens = ["Something else"]

    await read_streaming(
        await client.post(
            f"/api/v1/chat/{chat_id}/stream",
            {"prompt": "More"},
            content_type="application/json",
            headers=bearer(owner_key),
        )
    )
    await asyncio.sleep(0.2)

    assert (await Chat.objects.aget(pk=chat_id)).name == "Weekend trip to Paris"
    assert len(namer.calls) == 1


@pytest.mark.parametrize(
    "raw, expected",
    [('"Title: Trip to Paris."', "Trip to Paris"), ("**Budget review**\n", "Budget review"), ("x" * 80, "x" * 60)],
)
def test_names_are_cleaned(raw, expected):
    assert clean_chat_name(raw) == expected
