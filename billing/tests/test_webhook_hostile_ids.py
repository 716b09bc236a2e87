"""A correctly signed webhook whose customer ids are hostile: they match nobody (the same 200 outcome as any
customer we do not know, so Polar stops retrying) instead of raising (int() refuses 5,000 digits) and answering 500."""

import pytest

from billing.models import WebhookEvent

pytestmark = pytest.mark.django_db


def subscription_for(external_id) -> dict:
    return {
        "id": "sub_1",
        "status": "active",
        "product_id": "prod_pro",
        "customer": {"id": "cus_1", "email": "someone@example.com", "external_id": external_id},
        "metadata": {},
    }


@pytest.mark.parametrize(
    "external_id",
    [
        "9" * 5000,  # past Python's 4,300-digit int() limit
        "9" * 20,  # digits, but past the largest bigint id
        "²³",  # str.isdigit() says digits; int() disagrees
        "٣",  # an Arabic-Indic digit: a digit to int(), never one of our ids
    ],
)
def test_an_impossible_user_id_matches_nobody_and_is_answered_200(send_webhook, owner, external_id):
    response = send_webhook("subscription.active", subscription_for(external_id))

    assert response.status_code == 200
    assert response.json()["applied"] is False
    assert response.json()["outcome"] == "ignored: no user matches the customer's external id"
    assert WebhookEvent.objects.get().applied is False
    owner.refresh_from_db()
    assert owner.product_id is None


def test_a_real_user_id_still_matches(send_webhook, owner):
    response = send_webhook("subscription.active", subscription_for(str(owner.pk)))
    assert response.status_code == 200
    assert response.json()["applied"] is True


def test_a_signed_but_deeply_nested_body_is_a_400(send_webhook):
    nested = b'{"type": "x", "data": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    response = send_webhook("subscription.active", {}, body=nested)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_body"
    assert not WebhookEvent.objects.exists()
