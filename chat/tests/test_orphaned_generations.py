"""Nothing stays `streaming` forever: the sweeper settles answers whose instance died, a stop on such an answer
keeps its text, and shutdown lets running generations finish or saves them as stopped."""

import asyncio
import datetime as dt

import pytest
from django.utils import timezone

from chat import generations
from chat.models import Chat, ChatQuery

pytestmark = pytest.mark.django_db(transaction=True)


async def orphan(owner, response="half an ans", age_seconds=60) -> ChatQuery:
    chat = await Chat.objects.acreate(owner=owner, title="Old", model="scripted-model")
    query = await ChatQuery.objects.acreate(
        chat=chat, prompt="Before the crash", model="scripted-model", response=response, status="streaming"
    )
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
    while scripted.tokens_sent < 4:
        await asyncio.sleep(0.01)

    await generations.shutdown(grace_seconds=0.2)

    saved = await ChatQuery.objects.aget(pk=query.pk)
    assert (saved.status, saved.response) == ("stopped", "w0 w1 w2 w3 ")
    assert scripted.closed_early == 1
    gate.set()
