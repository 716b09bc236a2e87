"""What happens to a reservation (documented in billing/quota.py): returned when the turn produced nothing
(the provider failed before its first token, or the user stopped before it), charged when anything was produced."""

import asyncio

import pytest

from billing.models import UsageEntry, UsagePeriod
from testsupport.http import ServerAsyncClient, bearer, parse_sse, read_streaming, read_until_query_id

pytestmark = pytest.mark.django_db(transaction=True)


async def turn(key):
    response = await ServerAsyncClient().post(
        "/api/v1/chat/stream", {"prompt": "hi"}, content_type="application/json", headers=bearer(key)
    )
    return parse_sse(await read_streaming(response))


async def used(user):
    period = await UsagePeriod.objects.filter(user=user).afirst()
    return period.chats_used if period else 0


async def test_a_failure_before_any_output_returns_the_reservation(scripted, owner, owner_key):
    scripted.fail_before_first = "down"
    events = await turn(owner_key)
    assert events[-2]["type"] == "error"
    assert await used(owner) == 0
    assert not await UsageEntry.objects.aexists()


async def test_a_failure_after_output_stays_charged_and_is_in_the_ledger(scripted, owner, owner_key):
    scripted.fail_after = (2, "cut")
    await turn(owner_key)
    assert await used(owner) == 1
    assert await UsageEntry.objects.filter(user=owner, action="chat").acount() == 1


async def test_stopping_before_the_first_token_returns_it(scripted, owner, owner_key):
    from chat.generations import stop_generation

    gate = scripted.hold_at(0)
    response = await ServerAsyncClient().post(
        "/api/v1/chat/stream", {"prompt": "hi"}, content_type="application/json", headers=bearer(owner_key)
    )
    query_id = await read_until_query_id(response.streaming_content)
    assert await used(owner) == 1  # charged while it runs
    await stop_generation(query_id)
    await read_streaming(response)
    gate.set()
    for _ in range(100):
        if await used(owner) == 0:
            break
        await asyncio.sleep(0.02)
    assert await used(owner) == 0


async def test_a_completed_turn_is_charged_once(scripted, owner, owner_key):
    await turn(owner_key)
    await turn(owner_key)
    assert await used(owner) == 2
    assert await UsageEntry.objects.filter(user=owner).acount() == 2
