"""The generation's event log (chat/generations.py Generation): kept compact while the turn runs and joined into
one string once it ends, yet every follower, early or late, from the start or from any seq, gets exactly the
events that were published, in order, each once."""

import asyncio
import json
import sys
import uuid

import pytest

from chat import events, generations
from chat.models import ChatQuery
from testsupport.sockets import chat_socket, events_until

# Chunks as providers send them: words, spaces alone, non-ASCII, an empty-looking newline, an emoji.
TOKENS = ["Hel", "lo", ",", " ", "wörld", " 🌍", "\n", "naïve ", "end."]


async def _published(generation: generations.Generation, items, gate: asyncio.Event | None = None, hold_at=None):
    async def pipeline():
        for index, item in enumerate(items):
            if gate is not None and index == hold_at:
                await gate.wait()
            yield item

    await generation.drive(pipeline())


def _script() -> list[dict]:
    return [
        events.status("Loading chat…"),
        {"type": "metadata", "queryId": "q", "chatId": "c", "chatName": "n", "title": "t", "model": "m"},
        events.status("Generating…"),
        *[events.content(token) for token in TOKENS[:4]],
        events.status("Still here"),  # a non-content event between content events
        *[events.content(token) for token in TOKENS[4:]],
        events.complete({"status": "complete", "response": "".join(TOKENS)}, {"inputTokens": 1, "outputTokens": 2}),
    ]


def _expected() -> list[dict]:
    return [{**event, "seq": seq} for seq, event in enumerate(_script(), start=1)]


async def _collect(generation, after=0) -> list[dict]:
    return [event async for event in generation.events_after(after)]


async def _collect_batches(generation, after=0) -> list[dict]:
    return [event async for batch in generation.batches_after(after) for event in batch]


@pytest.fixture
def no_redis(settings):
    settings.REDIS_URL = ""  # the in-memory log only: what is tested here


async def test_a_follower_from_the_start_gets_every_event_with_its_seq_while_the_turn_runs(no_redis):
    generation = generations.Generation(uuid.uuid4())
    live = asyncio.create_task(_collect(generation))
    live_batches = asyncio.create_task(_collect_batches(generation))
    await asyncio.sleep(0)
    await _published(generation, _script())

    assert await live == _expected()
    assert await live_batches == _expected()


async def test_a_late_follower_gets_the_exact_events_after_the_log_is_compacted(no_redis):
    generation = generations.Generation(uuid.uuid4())
    await _published(generation, _script())
    assert generation.finished

    assert await _collect(generation) == _expected()
    assert await _collect_batches(generation) == _expected()
    assert generation.events == _expected()
    # From any position: a client that had the first `after` events gets the rest, each once.
    for after in range(len(_expected()) + 1):
        assert await _collect(generation, after) == _expected()[after:]
        assert await _collect_batches(generation, after) == _expected()[after:]
    answer = "".join(event["content"] for event in await _collect(generation) if event["type"] == "content")
    assert answer == "".join(TOKENS)


async def test_the_finished_log_keeps_the_answer_as_one_string_not_an_object_per_token(no_redis):
    tokens = [f"token{i} " for i in range(500)]
    generation = generations.Generation(uuid.uuid4())
    await _published(generation, [events.content(token) for token in tokens])

    text_objects = [entry for entry in generation._log if isinstance(entry, str | dict)]
    assert text_objects == []  # the 500 texts live in one string
    assert generation._text == "".join(tokens)
    assert sys.getsizeof(generation._ends) < 4 * len(tokens) + 200
    assert [event["content"] for event in generation.events] == tokens


async def test_a_follower_joining_mid_turn_gets_what_was_published_then_the_rest(no_redis):
    generation = generations.Generation(uuid.uuid4())
    gate = asyncio.Event()
    driving = asyncio.create_task(_published(generation, _script(), gate, hold_at=6))
    for _ in range(200):
        if len(generation) == 6:
            break
        await asyncio.sleep(0.005)
    assert len(generation) == 6 and not generation.finished

    early = generation.events_after(3)  # a follower that had three events
    assert await anext(early) == _expected()[3]
    await early.aclose()
    joined = asyncio.create_task(_collect(generation, 2))
    await asyncio.sleep(0.01)
    gate.set()
    await driving

    assert await joined == _expected()[2:]


async def test_a_follower_that_goes_away_while_waiting_leaves_nothing_behind(no_redis):
    generation = generations.Generation(uuid.uuid4())
    gate = asyncio.Event()
    driving = asyncio.create_task(_published(generation, _script(), gate, hold_at=2))
    followers = [asyncio.create_task(_collect(generation)) for _ in range(5)]
    for _ in range(200):
        if len(generation._waiters) == 5:
            break
        await asyncio.sleep(0.005)
    assert len(generation._waiters) == 5

    for follower in followers:
        follower.cancel()
    await asyncio.gather(*followers, return_exceptions=True)
    assert generation._waiters == []

    gate.set()
    await driving
    assert await _collect(generation) == _expected()


async def test_content_events_with_more_than_text_are_kept_whole(no_redis):
    unusual = [{"type": "content", "content": "x", "extra": 1}, events.content("y")]
    generation = generations.Generation(uuid.uuid4())
    await _published(generation, unusual)

    assert generation.events == [{**unusual[0], "seq": 1}, {"type": "content", "content": "y", "seq": 2}]


@pytest.mark.django_db(transaction=True)
async def test_a_socket_following_a_finished_turn_from_a_seq_gets_the_exact_rest(scripted, owner_key):
    scripted.tokens = TOKENS
    comm = chat_socket(owner_key)
    await comm.connect()
    await comm.send_json_to({"prompt": "Say it"})
    live = await events_until(comm, "complete")
    query_id = live[1]["queryId"]
    assert generations._running[uuid.UUID(query_id)]._ends is not None  # finished: compacted, still in memory

    await comm.send_json_to({"action": "follow", "queryId": query_id, "after": 4})
    replay = await events_until(comm, "complete")

    assert [e["seq"] for e in replay] == list(range(5, len(live) + 1))
    assert [e["content"] for e in replay if e["type"] == "content"] == [
        e["content"] for e in live[4:] if e["type"] == "content"
    ]
    assert "".join(e["content"] for e in live if e["type"] == "content") == "".join(TOKENS)
    assert (await ChatQuery.objects.aget(pk=query_id)).response == "".join(TOKENS)
    assert json.loads(json.dumps(replay)) == replay
    await comm.disconnect()

