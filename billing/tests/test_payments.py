"""Payments API against the Polar emulator: checkout, checkout status, customer portal; who may see what; and the
errors a client gets when the product is unknown, Polar fails, or payments are not configured."""

from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import Client

from accounts.models import ApiKey, User
from billing.models import Product
from testsupport.http import bearer, free_port


@pytest.fixture
def pro(db, polar):
    polar.add_product("prod_pro", "Pro")
    return Product.objects.create(external_id="prod_pro", name="Pro", chat_limit=1000)


def get(path, key=None, **params):
    return Client().get(f"/api/v1/payments{path}", params, headers=bearer(key) if key else {})


def start_checkout(key, product="prod_pro", **params):
    return get(f"/checkout/{product}", key, **params)


def checkout_id_of(polar, url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[1]


# --- checkout -------------------------------------------------------------------------------------------------


def test_checkout_creates_the_customer_and_a_checkout_for_the_caller(polar, pro, owner, owner_key):
    response = start_checkout(owner_key)

    assert response.status_code == 200
    url = response.json()["url"]
    assert url.startswith(polar.url + "/checkout/")
    [created] = polar.requests_to("POST", "/v1/customers")
    assert created["json"]["external_id"] == str(owner.pk)
    assert created["json"]["email"] == owner.email
    [checkout] = polar.requests_to("POST", "/v1/checkouts")
    body = checkout["json"]
    assert body["products"] == ["prod_pro"]
    assert body["external_customer_id"] == str(owner.pk)
    assert body["metadata"] == {"externalCustomerId": str(owner.pk)}
    assert body["customer_id"] == next(iter(polar.customers))
    assert body["success_url"] == "http://testserver/pricing/?checkout_id={CHECKOUT_ID}"
    assert all(r["authorised"] for r in polar.requests)


def test_a_second_checkout_reuses_the_customer(polar, pro, owner_key):
    assert start_checkout(owner_key).status_code == 200
    assert start_checkout(owner_key).status_code == 200

    assert len(polar.requests_to("POST", "/v1/customers")) == 1
    assert len(polar.requests_to("POST", "/v1/checkouts")) == 2
    assert len(polar.customers) == 1


def test_the_callback_becomes_the_success_url(polar, pro, owner_key):
    response = start_checkout(owner_key, callback="https://app.example.com/thanks?from=pricing")

    assert response.status_code == 200
    [checkout] = polar.requests_to("POST", "/v1/checkouts")
    assert checkout["json"]["success_url"] == "https://app.example.com/thanks?from=pricing&checkout_id={CHECKOUT_ID}"


@pytest.mark.parametrize("callback", ["javascript:alert(1)", "/relative/path", "ftp://example.com/x"])
def test_a_callback_that_is_not_a_web_url_is_400(polar, pro, owner_key, callback):
    response = start_checkout(owner_key, callback=callback)

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_field"
    assert polar.requests == []


def test_a_user_with_a_placeholder_email_checks_out_without_a_precreated_customer(polar, pro):
    user = User.objects.create_user("user_2x@clerk.invalid", None, clerk_id="user_2x")
    key = ApiKey.generate(user, "t")[1]

    assert start_checkout(key).status_code == 200

    assert polar.requests_to("POST", "/v1/customers") == []
    [checkout] = polar.requests_to("POST", "/v1/checkouts")
    assert checkout["json"]["external_customer_id"] == str(user.pk)
    assert "customer_email" not in checkout["json"] and "customer_id" not in checkout["json"]


@pytest.mark.parametrize("product", ["prod_unknown", "prod_archived"])
def test_an_unknown_or_archived_product_is_404(polar, pro, owner_key, product):
    Product.objects.create(external_id="prod_archived", name="Old", is_archived=True)

    response = start_checkout(owner_key, product)

    assert response.status_code == 404
    assert response.json() == {"error": "Unknown product.", "code": "unknown_product"}
    assert polar.requests == []


def test_a_product_polar_does_not_know_is_a_502(polar, owner_key):
    Product.objects.create(external_id="prod_local_only", name="Local only")

    response = start_checkout(owner_key, "prod_local_only")

    assert response.status_code == 502
    assert response.json()["code"] == "payment_provider_error"
    assert "HTTP 422" in response.json()["error"]


def test_a_polar_server_error_is_a_502_with_a_clear_message(polar, pro, owner_key):
    polar.fail_next(500, match="/v1/checkouts")

    response = start_checkout(owner_key)

    assert response.status_code == 502
    assert response.json() == {
        "error": "Payment provider error: The payment provider answered HTTP 500. Please try again later.",
        "code": "payment_provider_error",
    }


def test_an_unreachable_polar_is_a_502(polar, pro, owner_key, settings):
    settings.POLAR_API_BASE_URL = f"http://127.0.0.1:{free_port()}"  # nobody listens there

    response = start_checkout(owner_key)

    assert response.status_code == 502
    assert "could not be reached" in response.json()["error"]


def test_a_wrong_access_token_is_a_502_not_a_401_for_the_caller(polar, pro, owner_key, settings):
    settings.POLAR_ACCESS_TOKEN = "polar_oat_wrong"

    response = start_checkout(owner_key)

    assert response.status_code == 502
    assert "HTTP 401" in response.json()["error"]


@pytest.mark.parametrize("path", ["/checkout/prod_pro", "/status/some-checkout", "/portal"])
def test_without_an_access_token_payments_are_503(polar, pro, owner_key, settings, path):
    settings.POLAR_ACCESS_TOKEN = ""

    response = get(path, owner_key)

    assert response.status_code == 503
    assert response.json()["code"] == "payments_not_configured"
    assert "POLAR_ACCESS_TOKEN" in response.json()["error"]
    assert polar.requests == []


@pytest.mark.parametrize("path", ["/checkout/prod_pro", "/status/some-checkout", "/portal"])
def test_anonymous_callers_get_401(polar, pro, path):
    response = get(path)

    assert response.status_code == 401
    assert polar.requests == []


# --- status ---------------------------------------------------------------------------------------------------


def test_the_owner_sees_the_checkout_status_move_to_succeeded(polar, pro, owner_key):
    checkout_id = checkout_id_of(polar, start_checkout(owner_key).json()["url"])

    before = get(f"/status/{checkout_id}", owner_key)
    polar.complete_checkout(checkout_id)
    after = get(f"/status/{checkout_id}", owner_key)

    assert before.status_code == after.status_code == 200
    assert (before.json()["status"], before.json()["succeeded"]) == ("open", False)
    assert (after.json()["status"], after.json()["succeeded"]) == ("succeeded", True)
    assert after.json()["id"] == checkout_id
    assert after.json()["productId"] == "prod_pro"
    assert after.json()["product"]["name"] == "Pro"


def test_someone_elses_checkout_is_404(polar, pro, owner_key, other_key):
    checkout_id = checkout_id_of(polar, start_checkout(owner_key).json()["url"])

    response = get(f"/status/{checkout_id}", other_key)

    assert response.status_code == 404
    assert response.json() == {"error": "Checkout not found.", "code": "not_found"}


def test_an_unknown_checkout_is_404(polar, pro, owner_key):
    assert get("/status/00000000-0000-0000-0000-000000000000", owner_key).status_code == 404


def test_the_success_url_carries_the_checkout_id(polar, pro, owner_key):
    checkout_id = checkout_id_of(polar, start_checkout(owner_key).json()["url"])

    success = polar.checkouts[checkout_id]["success_url"]

    assert parse_qs(urlsplit(success).query)["checkout_id"] == [checkout_id]


# --- portal ---------------------------------------------------------------------------------------------------


def test_the_portal_url_is_for_the_callers_customer(polar, pro, owner, owner_key):
    start_checkout(owner_key)
    [customer] = polar.customers.values()

    response = get("/portal", owner_key)

    assert response.status_code == 200
    [session] = polar.sessions
    assert response.json()["url"] == session["customer_portal_url"]
    assert session["customer_id"] == customer["id"]
    assert customer["external_id"] == str(owner.pk)
    assert session["return_url"] == "http://testserver/pricing/"


def test_the_portal_creates_the_customer_when_there_is_none_yet(polar, owner, owner_key):
    response = get("/portal", owner_key)

    assert response.status_code == 200
    [customer] = polar.customers.values()
    assert customer["external_id"] == str(owner.pk)


def test_two_users_get_their_own_portals(polar, pro, owner_key, other_key):
    first = get("/portal", owner_key).json()["url"]
    second = get("/portal", other_key).json()["url"]

    assert first != second
    assert [s["customer_id"] for s in polar.sessions] == [c["id"] for c in polar.customers.values()]


def test_a_user_without_a_billing_account_or_real_email_gets_a_clear_404(db, polar):
    user = User.objects.create_user("user_3y@clerk.invalid", None, clerk_id="user_3y")
    key = ApiKey.generate(user, "t")[1]

    response = get("/portal", key)

    assert response.status_code == 404
    assert response.json()["code"] == "no_billing_account"


def test_a_portal_failure_is_a_502(polar, owner_key):
    polar.fail_next(503, match="/v1/customer-sessions")

    response = get("/portal", owner_key)

    assert response.status_code == 502
    assert response.json()["code"] == "payment_provider_error"
