"""Signing up, logging in and out with an email address and a password."""

import pytest
from django.contrib.auth import SESSION_KEY
from django.test import Client

from accounts.models import User

GOOD_PASSWORD = "tangerine-harbour-91"


def signup(client, email, password=GOOD_PASSWORD, confirm=None):
    return client.post("/accounts/signup/", {"email": email, "password1": password, "password2": confirm or password})


def logged_in_user_id(client):
    return client.session.get(SESSION_KEY)


def test_signup_creates_the_account_logs_in_and_opens_a_new_chat(db):
    client = Client()

    response = signup(client, "new.person@example.com")

    assert response.status_code == 302
    assert response["Location"] == "/chat/"
    user = User.objects.get(email="new.person@example.com")
    assert user.check_password(GOOD_PASSWORD)
    assert str(user.pk) == logged_in_user_id(client)
    assert client.get("/chat/").status_code == 200


def test_signup_stores_the_address_in_lower_case(db):
    signup(Client(), "Mixed.Case@Example.COM")

    assert User.objects.filter(email="mixed.case@example.com").exists()


@pytest.mark.parametrize("email", ["owner@example.com", "Owner@Example.com", " OWNER@EXAMPLE.COM "])
def test_a_taken_email_is_refused(owner, email):
    client = Client()

    response = signup(client, email)

    assert response.status_code == 400
    assert "already exists" in response.content.decode()
    assert User.objects.filter(email__iexact="owner@example.com").count() == 1
    assert logged_in_user_id(client) is None


@pytest.mark.parametrize(
    "password,complaint",
    [
        ("short1", "too short"),
        ("password123", "too common"),
        ("83920175364", "entirely numeric"),
        ("weak.person@example.com", "too similar"),
    ],
)
def test_a_weak_password_is_refused(db, password, complaint):
    client = Client()

    response = signup(client, "weak.person@example.com", password)

    assert response.status_code == 400
    assert complaint in response.content.decode()
    assert not User.objects.filter(email="weak.person@example.com").exists()
    assert logged_in_user_id(client) is None


def test_mismatched_passwords_are_refused(db):
    response = signup(Client(), "someone@example.com", GOOD_PASSWORD, GOOD_PASSWORD + "x")

    assert response.status_code == 400
    assert not User.objects.filter(email="someone@example.com").exists()


@pytest.mark.parametrize("email", ["", "not-an-email"])
def test_a_bad_email_is_refused(db, email):
    response = signup(Client(), email)

    assert response.status_code == 400
    assert User.objects.count() == 0


def test_the_signup_page_renders_and_sends_logged_in_users_to_the_chat(owner_client):
    assert Client().get("/accounts/signup/").status_code == 200

    response = owner_client.get("/accounts/signup/")

    assert response.status_code == 302


# --- login / logout ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("email", ["owner@example.com", "Owner@Example.COM"])
def test_login_with_the_right_password(owner, email):
    client = Client()

    response = client.post("/accounts/login/", {"username": email, "password": "correct horse battery"}, follow=True)

    assert response.redirect_chain[-1][0] == "/chat/"
    assert response.status_code == 200
    assert logged_in_user_id(client) == str(owner.pk)


def test_login_returns_to_the_page_asked_for(owner):
    client = Client()

    response = client.post(
        "/accounts/login/",
        {"username": "owner@example.com", "password": "correct horse battery", "next": "/chat/bookmarked/"},
    )

    assert response["Location"] == "/chat/bookmarked/"


@pytest.mark.parametrize(
    "email,password",
    [
        ("owner@example.com", "wrong password"),
        ("nobody@example.com", "correct horse battery"),
        ("owner@example.com", ""),
    ],
)
def test_login_with_wrong_credentials_is_refused(owner, email, password):
    client = Client()

    response = client.post("/accounts/login/", {"username": email, "password": password})

    assert response.status_code == 200
    assert logged_in_user_id(client) is None
    if password:
        assert "Please enter a correct email address and password" in response.content.decode()


def test_an_inactive_user_cannot_log_in(owner):
    User.objects.filter(pk=owner.pk).update(is_active=False)
    client = Client()

    client.post("/accounts/login/", {"username": "owner@example.com", "password": "correct horse battery"})

    assert logged_in_user_id(client) is None


def test_logout_is_a_post(owner_client):
    assert owner_client.get("/accounts/logout/").status_code == 405
    assert logged_in_user_id(owner_client) is not None

    response = owner_client.post("/accounts/logout/")

    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/"
    assert logged_in_user_id(owner_client) is None
    assert owner_client.get("/chat/")["Location"].startswith("/accounts/login/")


def test_logout_is_csrf_protected(owner):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)

    assert client.post("/accounts/logout/").status_code == 403
    assert logged_in_user_id(client) == str(owner.pk)


def test_the_home_page_sends_visitors_to_login_and_users_to_the_chat(owner_client):
    assert Client().get("/")["Location"] == "/accounts/login/"
    assert owner_client.get("/")["Location"] == "/chat/"
