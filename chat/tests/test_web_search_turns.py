"""Web search inside a turn: the query written by the utility model, the results as numbered [W1] sources and as
context, one web-search quota unit per search, and an answer that goes on when search is off or failing."""

import pytest
from asgiref.sync import sync_to_async
from django.core.files.uploadedfile import SimpleUploadedFile

from billing.models import UsagePeriod
from testsupport.http import ServerAsyncClient, bearer, parse_sse, read_streaming

pytestmark = pytest.mark.django_db(transaction=True)



@pytest.fixture
def google(emulator, settings):
    """Google Custom Search pointed at the emulator; the answer and the query writer are the scripted model."""
    settings.WEB_SEARCH_BACKEND = "google"
    settings.GOOGLE_API_KEY = "AIza-emulator-google"
    settings.GOOGLE_SEARCH_ENGINE_ID = "emulator-cx"
    settings.GOOGLE_SEARCH_BASE_URL = f"{emulator.url}/customsearch/v1"
    settings.WEB_SEARCH_TIMEOUT = 2
    settings.WEB_SEARCH_RESULTS = 3
    return emulator


async def stream_turn(key, payload: dict, files=None) -> list[dict]:
    client = ServerAsyncClient()
    if files:
        response = await client.post("/api/v1/chat/stream", {**payload, "files": files}, headers=bearer(key))
    else:
        response = await client.post(
            "/api/v1/chat/stream", payload, content_type="application/json", headers=bearer(key)
        )
    assert response.status_code == 200, response.content
    return parse_sse(await read_streaming(response))


@sync_to_async
def usage(user) -> tuple[int, int, int]:
    period = UsagePeriod.objects.filter(user=user).first()
    return (period.chats_used, period.web_searches_used, period.file_rag_used) if period else (0, 0, 0)


def statuses(events) -> list[str]:
    return [e["message"] for e in events if e["type"] == "status"]


def web_context(call: dict) -> str:
    texts = [m["content"] for m in call["messages"] if "<web_search_results>" in m["content"]]
    assert len(texts) == 1, call["messages"]
    return texts[0]


async def test_a_web_search_turn_cites_numbered_results_and_is_charged_once(scripted, google, owner, owner_key):
    events = await stream_turn(owner_key, {"prompt": "Latest Django release?", "webSearch": True})

    assert "Searching the web…" in statuses(events)
    kinds = [e["type"] for e in events]
    assert kinds.index("sources") < kinds.index("content")
    sources = next(e for e in events if e["type"] == "sources")["sources"]
    assert [(s["n"], s["ref"], s["kind"]) for s in sources] == [(1, "W1", "web"), (2, "W2", "web"), (3, "W3", "web")]
    assert all(s["url"].startswith("https://") and s["title"] and s["snippet"] for s in sources)

    # The utility model wrote the query from the conversation, and that query is what was searched.
    writer_call, answer_call = scripted.calls
    assert "Latest Django release?" in writer_call["messages"][-1]["content"]
    (search,) = [r for r in google.requests if r["api"] == "search"]
    assert search["search_query"] == "Hello, world!"
    context = web_context(answer_call)
    assert context.startswith("<web_search_results>")
    assert f"[W1] {sources[0]['title']} — {sources[0]['url']}" in context
    assert answer_call["messages"][-1] == {"role": "user", "content": "Latest Django release?"}

    complete = events[-2]
    assert complete["type"] == "complete"
    assert complete["query"]["metadata"]["sources"] == sources
    assert await usage(owner) == (1, 1, 0)


async def test_without_the_flag_nothing_is_searched(scripted, google, owner, owner_key):
    events = await stream_turn(owner_key, {"prompt": "Hi", "webSearch": False})

    assert "Searching the web…" not in statuses(events)
    assert google.requests == []
    assert "sources" not in [e["type"] for e in events]
    assert await usage(owner) == (1, 0, 0)


async def test_unconfigured_search_says_so_and_the_answer_goes_on_uncharged(scripted, settings, owner, owner_key):
    settings.WEB_SEARCH_BACKEND = ""

    events = await stream_turn(owner_key, {"prompt": "News today?", "webSearch": True})

    assert any(m.startswith("Web search is not configured") and "without web results" in m for m in statuses(events))
    assert events[-2]["type"] == "complete" and events[-2]["query"]["response"] == "Hello, world!"
    assert "sources" not in [e["type"] for e in events]
    assert len(scripted.calls) == 1  # no query was written either
    assert await usage(owner) == (1, 0, 0)


@pytest.mark.parametrize(
    "fault, phrase",
    [("http_500", "failed with HTTP 500"), ({"kind": "slow_first_byte", "delay": 3}, "timed out after 1 second")],
)
async def test_failing_search_says_so_and_the_answer_goes_on_with_the_quota_returned(
    scripted, google, settings, owner, owner_key, fault, phrase
):
    settings.WEB_SEARCH_TIMEOUT = 1
    google.configure(fault=fault)

    events = await stream_turn(owner_key, {"prompt": "News today?", "webSearch": True})

    failure = [m for m in statuses(events) if phrase in m]
    assert failure and "Google Custom Search" in failure[0] and "without web results" in failure[0]
    assert events[-2]["type"] == "complete" and events[-2]["query"]["response"] == "Hello, world!"
    assert "<web_search_results>" not in str(scripted.calls[-1]["messages"])
    assert await usage(owner) == (1, 0, 0)


async def test_an_exhausted_web_search_quota_skips_the_search_and_answers(scripted, google, settings, owner, owner_key):
    settings.FREE_TIER_LIMITS = {**settings.FREE_TIER_LIMITS, "web_search_limit": 0}

    events = await stream_turn(owner_key, {"prompt": "News today?", "webSearch": True})

    assert any(m.startswith("Web search skipped: You have used 0 of 0 web searches") for m in statuses(events))
    assert google.requests == []
    assert events[-2]["type"] == "complete"
    assert await usage(owner) == (1, 0, 0)


async def test_files_and_web_results_are_numbered_apart_and_each_charged_once(scripted, google, owner, owner_key):
    notes = SimpleUploadedFile("notes.txt", b"The boiler was serviced on 3 March by Ada's Heating Ltd.")

    events = await stream_turn(owner_key, {"prompt": "When was the boiler serviced?", "webSearch": "true"}, [notes])

    sources = next(e for e in events if e["type"] == "sources")["sources"]
    assert [(s["ref"], s["kind"]) for s in sources] == [("1", "file"), ("W1", "web"), ("W2", "web"), ("W3", "web")]
    assert sources[0]["documentName"] == "notes.txt"
    context = web_context(scripted.calls[-1])
    assert "[1] notes.txt, page 1" in context and "serviced on 3 March" in context
    assert context.index("</file_excerpts>") < context.index("<web_search_results>")
    assert await usage(owner) == (1, 1, 1)
