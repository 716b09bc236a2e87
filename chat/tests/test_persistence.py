"""The answer is saved as it grows (batched, not per token), and survives the client going away."""

import asyncio

import pytest
from django.test import AsyncClient

from chat.models import ChatQuery
from chat.pipeline import ResponseWriter
from testsupport.http import bearer, parse_sse, read_streaming, read_until_query_id

pytestmark = pytest.mark.django_db(transaction=True)


async def wait_for_status(query_id, status, timeout=5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        query = await ChatQuery.objects.aget(pk=query_id)
        if query.status == status:
            return query
        await asyncio.sleep(0.02)
    raise AssertionError(f"query never reached {status}")


async def test_the_row_exists_from_the_start_and_the_partial_answer_is_saved_in_batches(
    scripted, owner_key, settings, monkeypatch
):
    settings.RESPONSE_FLUSH_SECONDS = 0.05
    scripted.tokens = [f"w{i} " for i in range(60)]
    scripted.delay = 0.005
    gate = scripted.hold_at(40)
    writes = []
    original_flush = ResponseWriter.flush

    async def counting_flush(self):
        writes.append(len(self.text))
        await original_flush(self)

    monkeypatch.setattr(ResponseWriter, "flush", counting_flush)

    response = await AsyncClient().post(
        "/api/v1/chat/stream", {"prompt": "Count"}, content_type="application/json", headers=bearer(owner_key)
    )
    stream = response.streaming_content
    query_id = await read_until_query_id(stream)
    query = await ChatQuery.objects.aget(pk=query_id)
    assert query.status == "streaming"  # the row exists before any token

    while scripted.tokens_sent < 40:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    partial = (await ChatQuery.objects.aget(pk=query_id)).response
    assert partial and "".join(scripted.tokens).startswith(partial)

    gate.set()
    await read_streaming(response)
    final = await wait_for_status(query_id, "complete")
    assert final.response == "".join(scripted.tokens)
    assert 1 < len(writes) < 20, writes  # batched: far fewer writes than the 60 tokens


async def test_a_client_that_goes_away_does_not_stop_the_answer(scripted, owner_key):
    scripted.tokens = [f"t{i} " for i in range(10)]
    gate = scripted.hold_at(3)
    response = await AsyncClient().post(
        "/api/v1/chat/stream", {"prompt": "Go on"}, content_type="application/json", headers=bearer(owner_key)
    )
    stream = response.streaming_content
    query_id = await read_until_query_id(stream)
    await stream.aclose()  # the client disconnects mid-answer

    gate.set()
    final = await wait_for_status(query_id, "complete")
    assert final.response == "".join(scripted.tokens)


async def test_provider_status_reaches_the_client_as_a_status_event(scripted, owner_key):
    scripted.waiting_message = "Waiting for the local model (1 turn(s) ahead)…"
    response = await AsyncClient().post(
        "/api/v1/chat/stream", {"prompt": "Hi"}, content_type="application/json", headers=bearer(owner_key)
    )
    events = parse_sse(await read_streaming(response))
    assert {"type": "status", "message": scripted.waiting_message} in [
        {k: v for k, v in e.items() if k != "seq"} for e in events
    ]


async def test_a_query_left_streaming_by_a_dead_process_is_reported_not_left_hanging(scripted, owner, owner_key):
    from chat.models import Chat

    chat = await Chat.objects.acreate(owner=owner, title="Old", model="scripted-model")
    orphan = await ChatQuery.objects.acreate(
        chat=chat, prompt="Before the restart", model="scripted-model", response="half an ans", status="streaming"
    )

    response = await AsyncClient().get(f"/api/v1/chat/queries/{orphan.pk}/events", headers=bearer(owner_key))
    events = parse_sse(await read_streaming(response))

    assert [e["type"] for e in events] == ["metadata", "content", "error", "done"]
    assert events[1]["content"] == "half an ans"
    saved = await ChatQuery.objects.aget(pk=orphan.pk)
    assert (saved.status, saved.response) == ("error", "half an ans")
