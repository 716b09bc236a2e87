"""Polar webhooks: signed over the raw body (Standard Webhooks), applied once per delivery id, refused with 403 and
no trace when the signature, headers or timestamp are wrong."""

import json
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test import Client

from billing.models import Product, WebhookEvent
from testsupport.polar_emulator import POLAR_WEBHOOK_TEST_SECRET, sign_webhook

WEBHOOK = "/api/v1/payments/webhook"


def iso(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat()


def product_data(product_id="prod_pro", name="Pro", **changes) -> dict:
    data = {
        "id": product_id,
        "name": name,
        "description": "For heavy users",
        "recurring_interval": "month",
        "is_recurring": True,
        "is_archived": False,
        "organization_id": "org_1",
        "metadata": {"chat_limit": 1000, "image_limit": "50", "web_search_limit": 100},
        "prices": [],
        "benefits": [],
    }
    data.update(changes)
    return data


def subscription(user, product_id="prod_pro", status="active", **changes) -> dict:
    data = {
        "id": "sub_1",
        "status": status,
        "product_id": product_id,
        "product": product_data(product_id),
        "customer_id": "cus_1",
        "customer": {"id": "cus_1", "email": user.email, "external_id": str(user.pk)},
        "metadata": {},
        "cancel_at_period_end": False,
        "current_period_start": iso(timedelta(days=-1)),
        "current_period_end": iso(timedelta(days=29)),
        "ended_at": None,
    }
    data.update(changes)
    return data


@pytest.fixture
def pro(db):
    return Product.objects.create(external_id="prod_pro", name="Pro", chat_limit=1000)


@pytest.fixture
def team(db):
    return Product.objects.create(external_id="prod_team", name="Team", chat_limit=5000)


def product_of(user):
    user.refresh_from_db()
    return user.product.external_id if user.product_id else None


# --- applied once ---------------------------------------------------------------------------------------------


def test_a_valid_delivery_is_applied_and_recorded(send_webhook, owner, pro):
    response = send_webhook("subscription.active", subscription(owner), delivery_id="msg_1")

    assert response.status_code == 200
    assert response.json()["applied"] is True
    assert product_of(owner) == "prod_pro"
    event = WebhookEvent.objects.get()
    assert (event.delivery_id, event.type, event.applied) == ("msg_1", "subscription.active", True)
    assert event.payload["data"]["id"] == "sub_1"


def test_a_duplicate_delivery_is_answered_200_without_effect(send_webhook, owner, pro):
    assert send_webhook("subscription.active", subscription(owner), delivery_id="msg_dup").status_code == 200
    owner.product = None
    owner.save(update_fields=["product"])

    again = send_webhook("subscription.active", subscription(owner), delivery_id="msg_dup")

    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    assert product_of(owner) is None
    assert WebhookEvent.objects.count() == 1


def test_a_redelivered_id_with_a_fresh_signature_is_not_applied_again(send_webhook, owner, pro, team):
    """A replay of an old delivery id (Polar retrying, or anyone re-sending it) changes nothing, even when the
    payload sent under that id is different."""
    assert send_webhook("subscription.revoked", subscription(owner), delivery_id="msg_old").status_code == 200
    owner.product = team
    owner.save(update_fields=["product"])

    replay = send_webhook("subscription.revoked", subscription(owner, "prod_team"), delivery_id="msg_old")

    assert replay.status_code == 200 and replay.json()["duplicate"] is True
    assert product_of(owner) == "prod_team"


@pytest.mark.django_db(transaction=True)
def test_the_same_delivery_arriving_twice_at_once_is_applied_once(settings, owner, pro):
    settings.POLAR_WEBHOOK_SECRET = POLAR_WEBHOOK_TEST_SECRET
    body = json.dumps({"type": "subscription.active", "data": subscription(owner)}).encode()
    headers = sign_webhook(POLAR_WEBHOOK_TEST_SECRET.encode(), body, "msg_concurrent")
    barrier = threading.Barrier(2)
    answers = []

    def deliver():
        barrier.wait()
        try:
            response = Client().post(WEBHOOK, body, content_type="application/json", headers=headers)
            answers.append((response.status_code, response.json()))
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(status for status, _ in answers) == [200, 200]
    assert sorted(bool(body.get("duplicate")) for _, body in answers) == [False, True]
    assert WebhookEvent.objects.filter(delivery_id="msg_concurrent").count() == 1
    assert product_of(owner) == "prod_pro"


# --- refused: 403 and nothing stored or applied ---------------------------------------------------------------


def post_raw(body: bytes, headers: dict):
    return Client().post(WEBHOOK, body, content_type="application/json", headers=headers)


def event_body(owner) -> bytes:
    return json.dumps({"type": "subscription.active", "data": subscription(owner)}).encode()


def forged(owner):
    body = event_body(owner)
    return body, sign_webhook(b"not-the-secret", body, "msg_forged")


def tampered(owner):
    body = event_body(owner)
    headers = sign_webhook(POLAR_WEBHOOK_TEST_SECRET.encode(), body, "msg_tampered")
    return body.replace(b'"active"', b'"trialing"'), headers


def other_delivery_id(owner):
    body = event_body(owner)
    headers = sign_webhook(POLAR_WEBHOOK_TEST_SECRET.encode(), body, "msg_signed")
    return body, {**headers, "webhook-id": "msg_swapped"}


def stale(owner):
    body = event_body(owner)
    return body, sign_webhook(POLAR_WEBHOOK_TEST_SECRET.encode(), body, "msg_stale", int(time.time()) - 6 * 60)


def from_the_future(owner):
    body = event_body(owner)
    return body, sign_webhook(POLAR_WEBHOOK_TEST_SECRET.encode(), body, "msg_future", int(time.time()) + 6 * 60)


def unsigned(owner):
    return event_body(owner), {"webhook-id": "msg_unsigned", "webhook-timestamp": str(int(time.time()))}


def no_headers(owner):
    return event_body(owner), {}


def garbage_signature(owner):
    body = event_body(owner)
    headers = sign_webhook(POLAR_WEBHOOK_TEST_SECRET.encode(), body, "msg_garbage")
    return body, {**headers, "webhook-signature": "garbage"}


def bad_base64_signature(owner):
    body = event_body(owner)
    headers = sign_webhook(POLAR_WEBHOOK_TEST_SECRET.encode(), body, "msg_b64")
    return body, {**headers, "webhook-signature": "v1,%%%not-base64%%%"}


def bad_timestamp(owner):
    body = event_body(owner)
    headers = sign_webhook(POLAR_WEBHOOK_TEST_SECRET.encode(), body, "msg_ts")
    return body, {**headers, "webhook-timestamp": "yesterday"}


REJECTED = [
    forged,
    tampered,
    other_delivery_id,
    stale,
    from_the_future,
    unsigned,
    no_headers,
    garbage_signature,
    bad_base64_signature,
    bad_timestamp,
]


@pytest.mark.parametrize("make", REJECTED, ids=[f.__name__ for f in REJECTED])
def test_bad_signatures_are_403_with_nothing_stored_or_applied(send_webhook, owner, pro, make):
    body, headers = make(owner)

    response = post_raw(body, headers)

    assert response.status_code == 403
    assert response.json()["code"] == "invalid_signature"
    assert WebhookEvent.objects.count() == 0
    assert product_of(owner) is None


def test_a_captured_delivery_replayed_later_is_refused(send_webhook, owner, pro):
    """The same bytes and headers, sent again after the five-minute tolerance, fail the timestamp check."""
    body = event_body(owner)
    captured = sign_webhook(POLAR_WEBHOOK_TEST_SECRET.encode(), body, "msg_captured", int(time.time()) - 3600)

    response = post_raw(body, captured)

    assert response.status_code == 403
    assert not WebhookEvent.objects.filter(delivery_id="msg_captured").exists()
    assert product_of(owner) is None


def test_without_a_secret_the_receiver_is_503(send_webhook, settings, owner, pro):
    settings.POLAR_WEBHOOK_SECRET = ""

    response = send_webhook("subscription.active", subscription(owner))

    assert response.status_code == 503
    assert response.json()["code"] == "payments_not_configured"
    assert WebhookEvent.objects.count() == 0


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"data": {}}', b'{"type": "product.created"}'])
def test_a_signed_body_that_is_not_an_event_is_400(send_webhook, body):
    response = send_webhook(None, None, body=body)

    assert response.status_code == 400
    assert WebhookEvent.objects.count() == 0


def test_a_standard_whsec_secret_is_accepted(send_webhook, settings, owner, pro):
    import base64

    key = b"a raw 24 byte signing key"
    settings.POLAR_WEBHOOK_SECRET = "whsec_" + base64.b64encode(key).decode()
    body = event_body(owner)

    assert post_raw(body, sign_webhook(key, body, "msg_whsec")).status_code == 200
    assert product_of(owner) == "prod_pro"


# --- unknown types --------------------------------------------------------------------------------------------


def test_an_unknown_type_is_202_and_only_recorded(send_webhook, owner):
    response = send_webhook("order.paid", {"id": "ord_1", "customer": {"external_id": str(owner.pk)}})

    assert response.status_code == 202
    event = WebhookEvent.objects.get()
    assert (event.type, event.applied) == ("order.paid", False)


# --- the subscription lifecycle -------------------------------------------------------------------------------


def test_the_subscription_lifecycle_moves_the_users_product(send_webhook, owner, pro, team):
    steps = [
        ("subscription.created", subscription(owner, status="incomplete"), None),
        ("subscription.active", subscription(owner), "prod_pro"),
        ("subscription.updated", subscription(owner, "prod_team"), "prod_team"),
        (
            "subscription.canceled",
            subscription(owner, "prod_team", cancel_at_period_end=True, ends_at=iso(timedelta(days=20))),
            "prod_team",
        ),
        ("subscription.uncanceled", subscription(owner, "prod_team"), "prod_team"),
        ("subscription.revoked", subscription(owner, "prod_team", status="canceled", ended_at=iso(timedelta(0))), None),
    ]
    for event_type, data, expected in steps:
        assert send_webhook(event_type, data).status_code == 200, event_type
        assert product_of(owner) == expected, event_type


def test_an_immediate_cancel_removes_the_product(send_webhook, owner, pro):
    send_webhook("subscription.active", subscription(owner))

    send_webhook("subscription.canceled", subscription(owner, status="canceled", ended_at=iso(timedelta(0))))

    assert product_of(owner) is None


def test_a_cancel_that_is_not_at_period_end_removes_the_product_even_inside_the_period(send_webhook, owner, pro):
    send_webhook("subscription.active", subscription(owner))

    send_webhook("subscription.canceled", subscription(owner, cancel_at_period_end=False))

    assert product_of(owner) is None


def test_a_cancel_whose_period_already_ended_removes_the_product(send_webhook, owner, pro):
    send_webhook("subscription.active", subscription(owner))

    late = subscription(owner, cancel_at_period_end=True, current_period_end=iso(-timedelta(days=1)))
    send_webhook("subscription.canceled", late)

    assert product_of(owner) is None


def test_an_update_to_unpaid_removes_and_past_due_keeps(send_webhook, owner, pro):
    send_webhook("subscription.active", subscription(owner))
    send_webhook("subscription.updated", subscription(owner, status="past_due"))
    assert product_of(owner) == "prod_pro"

    send_webhook("subscription.updated", subscription(owner, status="unpaid"))
    assert product_of(owner) is None


def test_revoking_an_old_plan_does_not_remove_the_new_one(send_webhook, owner, pro, team):
    send_webhook("subscription.active", subscription(owner, "prod_team"))

    send_webhook("subscription.revoked", subscription(owner, "prod_pro", id="sub_old"))

    assert product_of(owner) == "prod_team"


def test_a_late_delivery_of_an_older_event_does_not_undo_a_newer_one(send_webhook, owner, pro):
    """Polar retries failed deliveries, so `active` (sent first) can arrive after `revoked` (sent later)."""
    sent_active = datetime.now(UTC) - timedelta(minutes=3)
    sent_revoked = datetime.now(UTC) - timedelta(minutes=1)

    revoked = send_webhook("subscription.revoked", subscription(owner, status="canceled"), sent_at=sent_revoked)
    assert revoked.status_code == 200
    late = send_webhook("subscription.active", subscription(owner), sent_at=sent_active)

    assert late.status_code == 200 and late.json()["applied"] is False
    assert product_of(owner) is None
    # Another subscription's events are not affected.
    assert send_webhook("subscription.active", subscription(owner, id="sub_2"), sent_at=sent_active).status_code == 200
    assert product_of(owner) == "prod_pro"


def test_the_user_is_found_by_the_checkout_metadata_when_the_customer_has_no_external_id(send_webhook, owner, pro):
    data = subscription(
        owner, customer={"id": "cus_1", "external_id": None}, metadata={"externalCustomerId": str(owner.pk)}
    )

    send_webhook("subscription.active", data)

    assert product_of(owner) == "prod_pro"


def test_a_clerk_user_id_as_external_id_finds_the_clerk_user(send_webhook, owner, pro):
    owner.clerk_id = "user_2seedCustomer"
    owner.save(update_fields=["clerk_id"])

    send_webhook("subscription.active", subscription(owner, customer={"id": "c", "external_id": "user_2seedCustomer"}))

    assert product_of(owner) == "prod_pro"


def test_a_subscription_for_nobody_we_know_changes_nothing(send_webhook, owner, other, pro):
    data = subscription(owner, customer={"id": "cus_9", "external_id": "999999"})

    response = send_webhook("subscription.active", data)

    assert response.status_code == 200
    assert response.json()["applied"] is False
    assert product_of(owner) is None and product_of(other) is None


def test_a_subscription_to_a_product_not_seen_yet_creates_it(send_webhook, owner):
    send_webhook("subscription.active", subscription(owner, "prod_new", product=product_data("prod_new", "New")))

    assert product_of(owner) == "prod_new"
    product = Product.objects.get(external_id="prod_new")
    assert (product.name, product.chat_limit, product.image_limit) == ("New", 1000, 50)


# --- product webhooks -----------------------------------------------------------------------------------------


def test_product_webhooks_upsert_the_product(send_webhook):
    assert send_webhook("product.created", product_data()).status_code == 200
    product = Product.objects.get(external_id="prod_pro")
    assert (product.name, product.description, product.recurring_interval, product.is_archived) == (
        "Pro",
        "For heavy users",
        "month",
        False,
    )
    assert (product.chat_limit, product.image_limit, product.web_search_limit) == (1000, 50, 100)
    assert product.file_rag_limit == Product._meta.get_field("file_rag_limit").default

    updated = product_data(
        name="Pro+",
        description="More",
        recurring_interval="year",
        metadata={"chat_limit": "2000", "files_per_request": 5, "file_rag_limit": 40},
    )
    assert send_webhook("product.updated", updated).status_code == 200

    product.refresh_from_db()
    assert (product.name, product.description, product.recurring_interval) == ("Pro+", "More", "year")
    assert (product.chat_limit, product.image_limit, product.files_per_request, product.file_rag_limit) == (
        2000,
        50,
        5,
        40,
    )
    assert Product.objects.count() == 1


def test_archiving_a_product_by_webhook(send_webhook, pro):
    send_webhook("product.updated", product_data(is_archived=True))

    pro.refresh_from_db()
    assert pro.is_archived is True


def test_invalid_limit_metadata_is_ignored_and_seed_names_are_understood(send_webhook, pro):
    metadata = {"chat_limit": "lots", "image_limit": -3, "web_search_limit": True, "fileCountLimit": "7"}

    send_webhook("product.updated", product_data(metadata=metadata))

    pro.refresh_from_db()
    defaults = {f: Product._meta.get_field(f).default for f in ("image_limit", "web_search_limit")}
    assert pro.chat_limit == 1000  # unchanged
    assert (pro.image_limit, pro.web_search_limit) == (defaults["image_limit"], defaults["web_search_limit"])
    assert pro.files_per_request == 7
