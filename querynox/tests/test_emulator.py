"""The provider emulator itself: control endpoint, command line, and the endpoints no provider module uses yet
(embeddings, images by URL, the web search APIs: Google Custom Search, SearXNG, Tavily, Brave)."""

import base64
import json
import math
import subprocess
import sys
import time

import httpx
import openai
import pytest

from testsupport.emulator import ProviderEmulator, count_tokens, embedding_vector
from testsupport.http import free_port


def test_only_loopback_addresses_are_accepted():
    with pytest.raises(ValueError, match="loopback"):
        ProviderEmulator(host="0.0.0.0")


def test_the_control_endpoint_takes_the_same_settings_as_configure(emulator):
    response = httpx.post(
        f"{emulator.url}/_emulator/config",
        json={"reply": "Configured over HTTP.", "fault": {"kind": "http_503", "times": 1}},
    )
    assert response.status_code == 200
    assert emulator.config["reply"] == "Configured over HTTP."
    assert emulator.config["fault"]["kind"] == "http_503"

    client = openai.OpenAI(api_key="k", base_url=f"{emulator.url}/v1", max_retries=1)
    reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])

    assert reply.choices[0].message.content == "Configured over HTTP."
    log = httpx.get(f"{emulator.url}/_emulator/requests").json()
    assert [entry["outcome"] for entry in log["requests"]] == ["http_503", "ok"]  # failed once, then answered

    bad = httpx.post(f"{emulator.url}/_emulator/config", json={"fault": "explode"})
    assert bad.status_code == 400 and "unknown fault kind" in bad.json()["error"]
    assert httpx.post(f"{emulator.url}/_emulator/config", json={"no_such_setting": 1}).status_code == 400

    httpx.post(f"{emulator.url}/_emulator/reset")
    assert emulator.requests == [] and emulator.config["fault"] is None


def test_embeddings_are_deterministic_unit_vectors_in_both_encodings(emulator):
    client = openai.OpenAI(api_key="k", base_url=f"{emulator.url}/v1", max_retries=0)

    floats = client.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta"], encoding_format="float")
    packed = client.embeddings.create(model="text-embedding-3-small", input="alpha")  # the SDK asks for base64

    assert [len(item.embedding) for item in floats.data] == [1536, 1536]
    assert math.isclose(sum(v * v for v in floats.data[0].embedding), 1.0, rel_tol=1e-6)
    assert floats.data[0].embedding == embedding_vector("alpha", 1536, "text-embedding-3-small")
    assert floats.data[0].embedding != floats.data[1].embedding
    assert packed.data[0].embedding == pytest.approx(floats.data[0].embedding, abs=1e-6)
    assert floats.usage.prompt_tokens == count_tokens("alpha") + count_tokens("beta")
    short = client.embeddings.create(model="text-embedding-3-small", input="alpha", dimensions=8)
    assert len(short.data[0].embedding) == 8


def test_images_as_base64_or_as_a_url_the_emulator_serves(emulator):
    client = openai.OpenAI(api_key="k", base_url=f"{emulator.url}/v1", max_retries=0)

    inline = client.images.generate(model="dall-e-3", prompt="a red kite", size="64x64", response_format="b64_json")
    linked = client.images.generate(model="dall-e-3", prompt="a red kite", size="64x64", response_format="url")

    png = base64.b64decode(inline.data[0].b64_json)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert httpx.get(linked.data[0].url).content == png


def test_google_custom_search(emulator):
    response = httpx.get(f"{emulator.url}/customsearch/v1", params={"key": "k", "cx": "engine", "q": "django channels"})

    items = response.json()["items"]
    assert len(items) == 10
    assert {"title", "snippet", "link"} <= set(items[0])
    assert "django channels" in items[0]["title"]
    (request,) = emulator.requests
    assert (request["search_query"], request["cx"], request["api_key"]) == ("django channels", "engine", "k")

    emulator.configure(search_items=[{"title": "Only", "snippet": "One result", "link": "https://example.org/"}])
    assert httpx.get(f"{emulator.url}/customsearch/v1", params={"key": "k", "q": "x"}).json()["items"] == [
        {"title": "Only", "snippet": "One result", "link": "https://example.org/"}
    ]
    assert httpx.get(f"{emulator.url}/customsearch/v1", params={"q": "x"}).status_code == 403  # no key


def test_google_custom_search_takes_the_key_as_a_header(emulator):
    response = httpx.get(
        f"{emulator.url}/customsearch/v1", params={"cx": "engine", "q": "x", "num": 2}, headers={"X-Goog-Api-Key": "k"}
    )

    assert response.status_code == 200 and len(response.json()["items"]) == 2
    assert (emulator.requests[0]["api"], emulator.requests[0]["api_key"]) == ("search", "k")


def test_searxng_json_api(emulator):
    response = httpx.get(f"{emulator.url}/searxng/search", params={"q": "django channels", "format": "json"})

    body = response.json()
    assert response.status_code == 200 and body["query"] == "django channels"
    assert len(body["results"]) == 10
    assert body["results"][0] == {
        "url": "https://example.com/django-channels/1",
        "title": "django channels — result 1",
        "content": "Snippet 1 about django channels.",
        "engine": "emulator",
        "engines": ["emulator"],
        "positions": [1],
        "score": 1.0,
        "category": "general",
    }
    (request,) = emulator.requests
    assert (request["api"], request["method"], request["search_query"], request["api_key"]) == (
        "searxng",
        "GET",
        "django channels",
        None,
    )
    # SearXNG serves HTML unless asked for JSON; the emulator serves JSON only, and says so.
    assert httpx.get(f"{emulator.url}/search", params={"q": "x"}).status_code == 400


def test_tavily_search_api_needs_a_bearer_key(emulator):
    ask = {"query": "django channels", "max_results": 3, "search_depth": "basic"}
    response = httpx.post(f"{emulator.url}/tavily/search", json=ask, headers={"Authorization": "Bearer tvly-k"})

    body = response.json()
    assert response.status_code == 200 and body["query"] == "django channels"
    assert [r["url"] for r in body["results"]] == [f"https://example.com/django-channels/{n}" for n in (1, 2, 3)]
    assert {"title", "url", "content", "score"} <= set(body["results"][0])
    request = emulator.requests[0]
    assert (request["api"], request["search_query"], request["search_depth"], request["api_key"]) == (
        "tavily",
        "django channels",
        "basic",
        "tvly-k",
    )

    refused = httpx.post(f"{emulator.url}/search", json=ask)  # no key: 401 in Tavily's error format
    assert refused.status_code == 401 and "API key" in refused.json()["detail"]["error"]


def test_brave_web_search_api_needs_a_subscription_token(emulator):
    response = httpx.get(
        f"{emulator.url}/res/v1/web/search",
        params={"q": "django channels", "count": 4},
        headers={"X-Subscription-Token": "brave-k"},
    )

    body = response.json()
    assert response.status_code == 200 and body["query"]["original"] == "django channels"
    results = body["web"]["results"]
    assert len(results) == 4
    assert results[0]["description"] == "Snippet 1 about <strong>django channels</strong>."  # Brave's decorations
    assert (results[0]["title"], results[0]["url"]) == (
        "django channels — result 1",
        "https://example.com/django-channels/1",
    )
    assert (emulator.requests[0]["api"], emulator.requests[0]["api_key"]) == ("brave", "brave-k")
    assert emulator.requests[0]["search_query"] == "django channels"

    refused = httpx.get(f"{emulator.url}/brave/res/v1/web/search", params={"q": "x"})  # any prefix works
    assert refused.status_code == 422
    assert refused.json()["type"] == "ErrorResponse" and refused.json()["error"]["code"] == "VALIDATION"


def test_every_search_api_serves_the_configured_items_in_its_own_format(emulator):
    emulator.configure(search_items=[{"title": "Only", "snippet": "One result", "link": "https://example.org/"}])

    searxng = httpx.get(f"{emulator.url}/search", params={"q": "x", "format": "json"}).json()["results"]
    tavily = httpx.post(f"{emulator.url}/search", json={"query": "x"}, headers={"Authorization": "Bearer k"})
    brave = httpx.get(f"{emulator.url}/res/v1/web/search", params={"q": "x"}, headers={"X-Subscription-Token": "k"})

    assert [(r["title"], r["content"], r["url"]) for r in searxng] == [("Only", "One result", "https://example.org/")]
    assert [(r["title"], r["content"], r["url"]) for r in tavily.json()["results"]] == [
        ("Only", "One result", "https://example.org/")
    ]
    assert [(r["title"], r["description"], r["url"]) for r in brave.json()["web"]["results"]] == [
        ("Only", "One result", "https://example.org/")
    ]


def test_search_apis_honour_faults_and_the_configured_key(emulator):
    emulator.configure(fault={"kind": "http_503", "times": 1, "match": "/tavily/"})
    tavily = f"{emulator.url}/tavily/search"
    failed = httpx.post(tavily, json={"query": "x"}, headers={"Authorization": "Bearer k"})
    recovered = httpx.post(tavily, json={"query": "x"}, headers={"Authorization": "Bearer k"})
    assert (failed.status_code, recovered.status_code) == (503, 200)
    assert "detail" in failed.json()  # the error in Tavily's format

    emulator.configure(fault={"kind": "stall", "delay": 2})
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(f"{emulator.url}/searxng/search", params={"q": "x", "format": "json"}, timeout=0.2)

    emulator.configure(fault=None, api_key="right")
    brave = f"{emulator.url}/res/v1/web/search"
    assert httpx.get(brave, params={"q": "x"}, headers={"X-Subscription-Token": "wrong"}).status_code == 401
    assert httpx.get(brave, params={"q": "x"}, headers={"X-Subscription-Token": "right"}).status_code == 200
    assert [(r["api"], r["fault"]) for r in emulator.requests] == [
        ("tavily", "http_503"),
        ("tavily", None),
        ("searxng", "stall"),
        ("brave", None),
        ("brave", None),
    ]
    assert [r["outcome"] for r in emulator.requests[-2:]] == ["unauthorized", "ok"]


def test_unknown_paths_are_a_404_in_the_providers_format(emulator):
    response = httpx.post(f"{emulator.url}/v1/no/such/thing", json={})
    assert response.status_code == 404 and "does not serve" in response.json()["error"]["message"]


def test_the_command_line_serves_until_terminated():
    port = free_port()
    config = json.dumps({"models": ["bench-model"]})
    command = [sys.executable, "-m", "testsupport.emulator", "--port", str(port), "--reply", "From the CLI."]
    process = subprocess.Popen([*command, "--config", config], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == f"provider emulator listening on http://127.0.0.1:{port}"
        client = openai.OpenAI(api_key="k", base_url=f"http://127.0.0.1:{port}/v1", max_retries=0)
        reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content == "From the CLI."
        assert [m.id for m in client.models.list()] == ["bench-model"]
    finally:
        started = time.monotonic()
        process.terminate()
        assert process.wait(timeout=5) == 0
        assert time.monotonic() - started < 3
