"""A user at their limit is refused before anything runs: 429 naming the limit, the use and the reset date,
or an error event on a socket. A new month starts a fresh row, with no reset job."""

import datetime as dt
import json

import pytest
from channels.testing import WebsocketCommunicator
from django.test import Client

from billing import quota
from billing.models import Product, UsagePeriod
from chat.models import ChatQuery
from querynox.asgi import application
from testsupport.http import bearer

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def at_limit(owner, settings):
    settings.FREE_TIER_LIMITS = {**settings.FREE_TIER_LIMITS, "chat_limit": 3}
    return UsagePeriod.objects.create(user=owner, month=quota.current_month(), chats_used=3)


def test_the_api_answers_429_with_limit_use_and_reset_date(scripted, at_limit, owner_key):
    response = Client().post(
        "/api/v1/chat/stream", {"prompt": "hi"}, content_type="application/json", headers=bearer(owner_key)
    )

    assert response.status_code == 429
    body = response.json()
    assert body["code"] == "quota_exceeded"
    reset = quota.next_month(quota.current_month()).isoformat()
    assert "3 of 3 chat generations" in body["error"] and reset in body["error"]
    assert not ChatQuery.objects.exists()
    at_limit.refresh_from_db()
    assert at_limit.chats_used == 3


async def test_a_socket_gets_an_error_event_with_the_same_message(scripted, at_limit, owner_key):
    comm = WebsocketCommunicator(application, "/ws/chat/", headers=[(b"authorization", f"Bearer {owner_key}".encode())])
    await comm.connect()
    await comm.send_json_to({"prompt": "hi"})
    event = json.loads(await comm.receive_from())
    assert event["type"] == "error" and event["code"] == "quota_exceeded" and "3 of 3" in event["message"]
    await comm.disconnect()


def test_bad_input_is_refused_before_the_quota_is_charged(scripted, owner, owner_key):
    Client().post("/api/v1/chat/stream", {"prompt": ""}, content_type="application/json", headers=bearer(owner_key))
    Client().post(
        "/api/v1/chat/stream",
        {"prompt": "x", "model": "nope"},
        content_type="application/json",
        headers=bearer(owner_key),
    )
    assert not UsagePeriod.objects.filter(user=owner, chats_used__gt=0).exists()


def test_a_product_raises_the_limit(scripted, at_limit, owner, owner_key):
    owner.product = Product.objects.create(external_id="prod_pro", name="Pro", chat_limit=1000)
    owner.save()
    response = Client().post(
        "/api/v1/chat", {"prompt": "hi"}, content_type="application/json", headers=bearer(owner_key)
    )
    assert response.status_code == 201
    at_limit.refresh_from_db()
    assert at_limit.chats_used == 4


def test_each_month_has_its_own_row_so_no_reset_job_is_needed(owner, settings, monkeypatch):
    settings.FREE_TIER_LIMITS = {**settings.FREE_TIER_LIMITS, "chat_limit": 1}
    monkeypatch.setattr(quota, "current_month", lambda now=None: dt.date(2026, 11, 1))
    quota.reserve(owner, "chat")
    with pytest.raises(quota.QuotaExceeded) as refused:
        quota.reserve(owner, "chat")
    assert refused.value.resets_on == dt.date(2026, 12, 1)

    monkeypatch.setattr(quota, "current_month", lambda now=None: dt.date(2026, 12, 1))
    quota.reserve(owner, "chat")
    assert dict(UsagePeriod.objects.values_list("month", "chats_used")) == {
        dt.date(2026, 11, 1): 1,
        dt.date(2026, 12, 1): 1,
    }


def test_month_arithmetic_wraps_the_year():
    assert quota.next_month(dt.date(2026, 12, 1)) == dt.date(2027, 1, 1)
    assert quota.current_month(dt.datetime(2026, 12, 31, 23, 59, tzinfo=dt.UTC)) == dt.date(2026, 12, 1)
