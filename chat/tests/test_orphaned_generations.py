"""Nothing stays `streaming` forever: the sweeper settles answers whose instance died, a stop on such an answer
keeps its text, and shutdown lets running generations finish or saves them as stopped."""

import asyncio
import datetime as dt

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from billing import charges
from billing.models import Charge, UsageEntry, UsagePeriod
from chat import generations
from chat.models import Chat, ChatQuery

pytestmark = pytest.mark.django_db(transaction=True)


async def orphan(owner, response="half an ans", age_seconds=60, holds=()) -> ChatQuery:
    """A query left streaming by a dead instance, holding charges of `holds` (kinds) it never settled."""
    chat = await Chat.objects.acreate(owner=owner, title="Old", model="scripted-model")
    query = await ChatQuery.objects.acreate(
        chat=chat,
        prompt="Before the crash",
        model="scripted-model",
        response=response,
        status="streaming",
    )
    if holds:
        await sync_to_async(charges.do_reserve)(owner, list(holds), chat_query_id=query.pk)
    await ChatQuery.objects.filter(pk=query.pk).aupdate(created_at=timezone.now() - dt.timedelta(seconds=age_seconds))
    return query


async def test_the_sweeper_settles_old_orphans_and_keeps_their_partial_answers(owner):
    old = await orphan(owner)
    fresh = await orphan(owner, age_seconds=0)  # may still be announcing itself: left for the next round

    assert await generations.sweep_orphans(older_than_seconds=10) == 1

    old = await ChatQuery.objects.aget(pk=old.pk)
    assert (old.status, old.response) == ("error", "half an ans")
    assert old.error == generations.ORPHAN_MESSAGE
    assert (await ChatQuery.objects.aget(pk=fresh.pk)).status == "streaming"


async def test_the_sweeper_leaves_generations_running_here_alone(owner, monkeypatch):
    running = await orphan(owner)
    monkeypatch.setitem(generations._running, running.pk, generations.Generation(running.pk))

    assert await generations.sweep_orphans(older_than_seconds=10) == 0
    assert (await ChatQuery.objects.aget(pk=running.pk)).status == "streaming"


async def test_stopping_an_orphan_saves_it_as_stopped_with_its_text(owner):
    query = await orphan(owner, response="partial text")

    assert await generations.stop_generation(query.pk) is True

    saved = await ChatQuery.objects.aget(pk=query.pk)
    assert (saved.status, saved.response, saved.error) == ("stopped", "partial text", "")
    assert await generations.stop_generation(query.pk) is False  # nothing runs any more


async def test_shutdown_waits_for_a_generation_that_finishes_within_the_grace_period(scripted, owner):
    scripted.tokens = [f"w{i} " for i in range(10)]
    scripted.delay = 0.01
    query = await generations.begin_turn(owner, {"prompt": "Short"})

    await generations.shutdown(grace_seconds=5)

    saved = await ChatQuery.objects.aget(pk=query.pk)
    assert (saved.status, saved.response) == ("complete", "".join(scripted.tokens))


async def test_shutdown_stops_a_generation_that_outlasts_the_grace_period_and_keeps_its_text(scripted, owner):
    scripted.tokens = [f"w{i} " for i in range(10)]
    gate = scripted.hold_at(4)  # the provider hangs after four tokens
    query = await generations.begin_turn(owner, {"prompt": "Long"})
    generation = generations._running[query.pk]
    while sum(1 for event in generation.events if event["type"] == "content") < 4:
        await asyncio.sleep(0.01)

    await generations.shutdown(grace_seconds=0.2)

    saved = await ChatQuery.objects.aget(pk=query.pk)
    assert (saved.status, saved.response) == ("stopped", "w0 w1 w2 w3 ")
    assert scripted.closed_early == 1
    gate.set()


async def chats_used(user) -> int:
    return await UsagePeriod.objects.filter(user=user).values_list("chats_used", flat=True).aget()


async def charge_states(query) -> list[tuple[str, str]]:
    return [(c.kind, c.state) async for c in Charge.objects.filter(chat_query_id=query.pk).order_by("id")]


async def test_an_orphan_that_produced_nothing_gets_its_quota_back(scripted, owner):
    query = await orphan(owner, response="", holds=["chat"])
    assert await chats_used(owner) == 1

    await generations.sweep_orphans(older_than_seconds=10)
    await generations.sweep_orphans(older_than_seconds=10)  # settled once, however often it is swept

    assert await chats_used(owner) == 0
    assert not await UsageEntry.objects.filter(chat_query_id=query.pk).aexists()
    assert await charge_states(query) == [("chat", "released")]


async def test_an_orphan_with_a_partial_answer_stays_charged_with_estimated_tokens_in_the_ledger(scripted, owner):
    query = await orphan(owner, response="x" * 30, holds=["chat"])

    await generations.sweep_orphans(older_than_seconds=10)
    await generations.sweep_orphans(older_than_seconds=10)

    assert await chats_used(owner) == 1
    entry = await UsageEntry.objects.aget(chat_query_id=query.pk)
    assert (entry.action, entry.model, entry.output_tokens) == ("chat", "scripted-model", 10)  # 30 bytes / 3
    saved = await ChatQuery.objects.aget(pk=query.pk)
    assert saved.metadata["usage"]["estimated"] is True
    charge = await Charge.objects.aget(chat_query_id=query.pk)
    assert (charge.state, charge.entry_id) == ("settled", entry.pk)  # charged once, by the ledger row above
    assert not any(key.startswith("_") for key in saved.metadata)  # no server bookkeeping in the client's JSON


async def test_an_orphan_gives_back_the_files_and_web_search_it_never_settled(scripted, owner):
    query = await orphan(owner, response="partial", holds=["chat", "file_rag", "web_search"])

    await generations.sweep_orphans(older_than_seconds=10)

    assert await charge_states(query) == [("chat", "settled"), ("file_rag", "released"), ("web_search", "released")]
    period = await UsagePeriod.objects.aget(user=owner)
    assert (period.chats_used, period.file_rag_used, period.web_searches_used) == (1, 0, 0)


async def test_a_normal_turn_notes_its_reservation_and_settles_it_itself(scripted, owner):
    query = await generations.begin_turn(owner, {"prompt": "Hi"})
    async for _ in generations.follow(query.pk):
        pass

    assert await charge_states(query) == [("chat", "settled")]
    assert await UsageEntry.objects.filter(chat_query_id=query.pk, action="chat").acount() == 1
    assert await generations.sweep_orphans(older_than_seconds=0) == 0


async def test_a_cancelled_generation_ends_its_row_so_nothing_settles_it_twice(scripted, owner):
    scripted.tokens = ["one ", "two ", "three "]
    gate = scripted.hold_at(2)
    query = await generations.begin_turn(owner, {"prompt": "Cancel me"})
    generation = generations._running[query.pk]
    while sum(1 for event in generation.events if event["type"] == "content") < 2:  # both tokens in the answer
        await asyncio.sleep(0.01)

    task = generation.task
    task.cancel()
    await asyncio.wait([task])
    gate.set()

    saved = await ChatQuery.objects.aget(pk=query.pk)
    assert (saved.status, saved.response) == ("stopped", "one two ")
    assert await UsageEntry.objects.filter(chat_query_id=query.pk, action="chat").acount() == 1
    assert await charge_states(query) == [("chat", "settled")]
    assert await generations.sweep_orphans(older_than_seconds=0) == 0
