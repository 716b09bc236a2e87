import pytest
from django.test import AsyncClient

from chat.models import ChatQuery
from testsupport.http import bearer, parse_sse, read_streaming, stream_turn

pytestmark = pytest.mark.django_db(transaction=True)


async def test_new_chat_streams_events_in_pipeline_order(scripted, owner_key):
    events = await stream_turn(AsyncClient(), owner_key, {"prompt": "Say hello"})

    kinds = [e["type"] for e in events]
    assert kinds[0] == "status" and events[0]["message"] == "Loading chat…"
    assert kinds[1] == "metadata"
    assert kinds[-2:] == ["complete", "done"]
    assert "".join(e["content"] for e in events if e["type"] == "content") == "Hello, world!"
    assert [e["seq"] for e in events if "seq" in e] == list(range(1, len(events)))

    complete = events[-2]
    assert complete["status"] == "complete"
    saved = await ChatQuery.objects.aget(pk=events[1]["queryId"])
    assert saved.response == "Hello, world!"
    assert saved.status == "complete"
    assert complete["usage"]["outputTokens"] == 4


async def test_follow_up_sends_history_to_the_model(scripted, owner_key):
    client = AsyncClient()
    first = await stream_turn(client, owner_key, {"prompt": "First question"})
    chat_id = first[1]["chatId"]
    scripted.tokens = ["Second", " answer"]

    await stream_turn(client, owner_key, {"prompt": "Second question"}, f"/api/v1/chat/{chat_id}/stream")

    messages = scripted.calls[-1]["messages"]
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "First question"),
        ("assistant", "Hello, world!"),
        ("user", "Second question"),
    ]


async def test_bad_input_is_refused_before_the_stream_starts(scripted, owner_key):
    response = await AsyncClient().post(
        "/api/v1/chat/stream", {"prompt": "   "}, content_type="application/json", headers=bearer(owner_key)
    )
    assert response.status_code == 400
    assert response.json()["code"] == "empty_prompt"
    assert not await ChatQuery.objects.aexists()


async def test_resume_with_last_event_id_sends_only_later_events(scripted, owner_key):
    client = AsyncClient()
    events = await stream_turn(client, owner_key, {"prompt": "Say hello"})
    query_id = events[1]["queryId"]

    response = await client.get(
        f"/api/v1/chat/queries/{query_id}/events", headers={**bearer(owner_key), "Last-Event-ID": "4"}
    )
    resumed = parse_sse(await read_streaming(response))

    assert [e["seq"] for e in resumed if "seq" in e] == [e["seq"] for e in events if e.get("seq", 0) > 4]
