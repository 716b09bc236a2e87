"""The pricing page: the free tier and the plans on sale with their limits; Upgrade goes to a Polar checkout,
Manage to the customer portal; errors are shown on the page."""

import re

import pytest
from django.test import Client

from billing.models import Product

FREE = {"chat_limit": 111, "image_limit": 7, "web_search_limit": 13, "file_rag_limit": 17, "files_per_request": 2}


@pytest.fixture(autouse=True)
def free_tier(settings):
    settings.FREE_TIER_LIMITS = FREE


@pytest.fixture
def plans(db, polar):
    polar.add_product("prod_pro", "Pro")
    polar.add_product("prod_team", "Team")
    pro = Product.objects.create(
        external_id="prod_pro", name="Pro", description="For heavy users", chat_limit=1234, image_limit=56,
        web_search_limit=78, file_rag_limit=90, files_per_request=4, recurring_interval="month",
    )  # fmt: skip
    team = Product.objects.create(external_id="prod_team", name="Team", chat_limit=9876)
    Product.objects.create(external_id="prod_old", name="Legacy plan", is_archived=True)
    return pro, team


def section(html: str, element_id: str) -> str:
    match = re.search(rf'<section[^>]*id="{element_id}".*?</section>', html, re.S)
    assert match, f"no section #{element_id}"
    return match.group(0)


def test_anonymous_visitors_see_the_free_tier_and_the_plans_on_sale(plans):
    response = Client().get("/pricing/")

    assert response.status_code == 200
    html = response.content.decode()
    free = section(html, "plan-free")
    for value in FREE.values():
        assert f"<td>{value}</td>" in free
    pro = section(html, "plan-prod_pro")
    assert "For heavy users" in pro
    for value in (1234, 56, 78, 90, 4):
        assert f"<td>{value}</td>" in pro
    assert "<td>9876</td>" in section(html, "plan-prod_team")
    assert "Legacy plan" not in html
    assert "Log in to upgrade" in pro and "/accounts/login/?next=/pricing/" in pro
    assert "manage-subscription" not in html


def test_a_free_user_gets_upgrade_buttons_and_no_manage_button(plans, owner_client):
    html = owner_client.get("/pricing/").content.decode()

    assert "Your plan: <strong>Free</strong>" in html
    assert 'action="/pricing/checkout/prod_pro/"' in section(html, "plan-prod_pro")
    assert 'action="/pricing/checkout/prod_team/"' in section(html, "plan-prod_team")
    assert "manage-subscription" not in html


def test_a_subscriber_sees_their_plan_and_a_manage_button(plans, owner, owner_client):
    pro, _ = plans
    owner.product = pro
    owner.save(update_fields=["product"])

    html = owner_client.get("/pricing/").content.decode()

    assert "Your plan: <strong>Pro</strong>" in html
    assert 'action="/pricing/portal/"' in html and "manage-subscription" in html
    assert "/pricing/checkout/prod_pro/" not in html  # no upgrading to the plan you have
    assert "/pricing/checkout/prod_team/" in html


def test_no_plans_on_sale(db):
    html = Client().get("/pricing/").content.decode()

    assert 'id="no-plans"' in html
    assert 'id="plan-free"' in html


def test_upgrade_redirects_to_a_checkout_for_the_user(plans, polar, owner, owner_client):
    response = owner_client.post("/pricing/checkout/prod_pro/")

    assert response.status_code == 302
    assert response["Location"].startswith(polar.url + "/checkout/")
    [checkout] = polar.requests_to("POST", "/v1/checkouts")
    assert checkout["json"]["external_customer_id"] == str(owner.pk)
    assert checkout["json"]["success_url"] == "http://testserver/pricing/?checkout_id={CHECKOUT_ID}"


def test_upgrade_needs_a_login_a_post_and_a_csrf_token(plans, polar, owner):
    anonymous = Client().post("/pricing/checkout/prod_pro/")
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/accounts/login/")

    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    assert client.get("/pricing/checkout/prod_pro/").status_code == 405
    assert client.post("/pricing/checkout/prod_pro/").status_code == 403
    assert polar.requests == []


def test_upgrading_to_an_unknown_product_shows_an_error(plans, polar, owner_client):
    response = owner_client.post("/pricing/checkout/prod_old/")

    assert response.status_code == 404
    assert "Unknown product." in response.content.decode()


def test_upgrade_when_payments_are_not_configured_shows_why(plans, owner_client, settings):
    settings.POLAR_ACCESS_TOKEN = ""

    response = owner_client.post("/pricing/checkout/prod_pro/")

    assert response.status_code == 503
    assert "Payments are not configured" in response.content.decode()


def test_a_provider_failure_shows_an_error(plans, polar, owner_client):
    polar.fail_next(500, match="/v1/checkouts")

    response = owner_client.post("/pricing/checkout/prod_pro/")

    assert response.status_code == 502
    assert "Payment provider error" in response.content.decode()


def test_manage_redirects_to_the_customer_portal(plans, polar, owner, owner_client):
    response = owner_client.post("/pricing/portal/")

    assert response.status_code == 302
    [session] = polar.sessions
    assert response["Location"] == session["customer_portal_url"]
    assert polar.customers[session["customer_id"]]["external_id"] == str(owner.pk)


def test_returning_from_checkout_shows_its_status_to_its_owner_only(plans, polar, owner_client, other_client):
    location = owner_client.post("/pricing/checkout/prod_pro/")["Location"]
    checkout_id = location.rsplit("/", 1)[1]
    polar.complete_checkout(checkout_id)

    mine = owner_client.get(f"/pricing/?checkout_id={checkout_id}").content.decode()
    theirs = other_client.get(f"/pricing/?checkout_id={checkout_id}").content.decode()

    assert "your payment went through" in mine
    assert "Checkout not found." in theirs and "your payment went through" not in theirs
