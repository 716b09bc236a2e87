"""/metrics: basic auth in front of Prometheus's text format, with our own turn, token, quota and socket metrics."""

import base64

import pytest
from channels.testing import WebsocketCommunicator
from django.test import AsyncClient, Client
from prometheus_client import REGISTRY

from billing import quota
from billing.models import UsagePeriod
from querynox.asgi import application
from testsupport.http import bearer, stream_turn
from testsupport.scripted import SCRIPTED_MODEL, SCRIPTED_PROVIDER, install_scripted_model, uninstall_scripted_model

pytestmark = pytest.mark.django_db(transaction=True)

OUR_METRICS = (
    "querynox_time_to_first_token_seconds",
    "querynox_tokens_streamed_total",
    "querynox_turns_total",
    "querynox_provider_errors_total",
    "querynox_fallbacks_total",
    "querynox_quota_refusals_total",
    "querynox_websockets_open",
    "querynox_generation_queue_length",
)


def basic(username: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()}


def sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def credentials(settings):
    settings.METRICS_USERNAME, settings.METRICS_PASSWORD = "scraper", "scrape secret"
    return "scraper", "scrape secret"


def test_without_credentials_the_answer_is_401_with_a_basic_challenge(credentials):
    response = Client().get("/metrics")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Basic ")
    assert b"querynox_" not in response.content


@pytest.mark.parametrize(
    "headers",
    [basic("scraper", "wrong"), basic("someone", "scrape secret"), {"Authorization": "Bearer scrape secret"}],
)
def test_wrong_credentials_get_401(credentials, headers):
    response = Client().get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Basic ")


def test_with_no_credentials_configured_the_endpoint_does_not_exist(settings):
    settings.METRICS_USERNAME = settings.METRICS_PASSWORD = ""
    assert Client().get("/metrics", headers=basic("", "")).status_code == 404


def test_with_credentials_prometheus_text_with_our_metrics_and_django_prometheus(credentials):
    response = Client().get("/metrics", headers=basic(*credentials))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    body = response.content.decode()
    for name in OUR_METRICS:
        assert f"# TYPE {name.removesuffix('_total')}" in body, name  # counters: with or without _total
    # django-prometheus: HTTP by view and the database wrapper.
    assert "django_http_requests_latency_seconds_by_view_method" in body
    assert "django_db_execute_total" in body


async def test_a_scripted_turn_counts_the_turn_its_tokens_and_time_to_first_token(scripted, owner_key):
    labels = {"model": SCRIPTED_MODEL, "provider": SCRIPTED_PROVIDER}
    turns = sample("querynox_turns_total", outcome="complete")
    tokens = sample("querynox_tokens_streamed_total", **labels)
    ttft = sample("querynox_time_to_first_token_seconds_count", **labels)

    events = await stream_turn(AsyncClient(), owner_key, {"prompt": "Say hello"})

    assert events[-2]["type"] == "complete"
    assert sample("querynox_turns_total", outcome="complete") == turns + 1
    assert sample("querynox_tokens_streamed_total", **labels) == tokens + 4  # the scripted usage: 4 output tokens
    assert sample("querynox_time_to_first_token_seconds_count", **labels) == ttft + 1
    assert sample("querynox_time_to_first_token_seconds_sum", **labels) > 0


async def test_a_failed_provider_counts_an_error_turn_and_a_provider_error(scripted, owner_key):
    scripted.fail_before_first = "scripted outage"
    errors = sample("querynox_provider_errors_total", provider=SCRIPTED_PROVIDER)
    turns = sample("querynox_turns_total", outcome="error")

    events = await stream_turn(AsyncClient(), owner_key, {"prompt": "Say hello"})

    assert any(e["type"] == "error" for e in events)
    assert sample("querynox_provider_errors_total", provider=SCRIPTED_PROVIDER) == errors + 1
    assert sample("querynox_turns_total", outcome="error") == turns + 1


def test_a_quota_refusal_is_counted_by_kind(scripted, owner, owner_key, settings):
    settings.FREE_TIER_LIMITS = {**settings.FREE_TIER_LIMITS, "chat_limit": 1}
    UsagePeriod.objects.create(user=owner, month=quota.current_month(), chats_used=1)
    refusals = sample("querynox_quota_refusals_total", kind="chat")

    response = Client().post(
        "/api/v1/chat/stream", {"prompt": "hi"}, content_type="application/json", headers=bearer(owner_key)
    )

    assert response.status_code == 429
    assert sample("querynox_quota_refusals_total", kind="chat") == refusals + 1


@pytest.fixture
def backup(scripted, settings):
    provider, _ = install_scripted_model(name="backup-model", provider_name="backup")
    settings.FALLBACK_MODELS = ["backup-model"]
    yield provider
    uninstall_scripted_model("backup")


async def test_a_fallback_counts_the_failed_provider(scripted, backup, owner_key):
    scripted.fail_before_first = "scripted is down"
    fallbacks = sample("querynox_fallbacks_total", provider=SCRIPTED_PROVIDER)
    errors = sample("querynox_provider_errors_total", provider=SCRIPTED_PROVIDER)
    tokens = sample("querynox_tokens_streamed_total", model="backup-model", provider="backup")

    events = await stream_turn(AsyncClient(), owner_key, {"prompt": "Say hello"})

    assert events[-2]["type"] == "complete"
    assert sample("querynox_fallbacks_total", provider=SCRIPTED_PROVIDER) == fallbacks + 1
    assert sample("querynox_provider_errors_total", provider=SCRIPTED_PROVIDER) == errors + 1
    assert sample("querynox_tokens_streamed_total", model="backup-model", provider="backup") == tokens + 4


async def test_open_websockets_go_up_on_connect_and_down_on_disconnect(owner_key):
    before = sample("querynox_websockets_open")
    comm = WebsocketCommunicator(application, "/ws/chat/", headers=[(b"authorization", f"Bearer {owner_key}".encode())])
    connected, _ = await comm.connect()
    assert connected
    assert sample("querynox_websockets_open") == before + 1
    await comm.disconnect()
    assert sample("querynox_websockets_open") == before
