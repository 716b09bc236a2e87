"""Who the API says you are: no key and no session is 401 (not a CSRF refusal), a logged-in session's write without
its CSRF token is still 403, and API keys never need a CSRF token."""

import uuid

import pytest
from django.middleware.csrf import get_token
from django.test import Client

from testsupport.http import bearer

WRITES = [
    ("post", "/api/v1/chat", {"prompt": "hello"}),
    ("patch", f"/api/v1/chat/{uuid.uuid4()}/share", {"shared": True}),
    ("delete", f"/api/v1/chat/{uuid.uuid4()}", None),
]


def send(client, method, path, body, **headers):
    return getattr(client, method)(path, data=body, content_type="application/json", headers=headers)


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_an_anonymous_write_is_told_to_authenticate(method, path, body):
    response = send(Client(enforce_csrf_checks=True), method, path, body)

    assert response.status_code == 401
    assert response.json()["code"] == "unauthenticated"
    assert response.json()["error"].startswith("Authentication required")


@pytest.mark.django_db
def test_a_wrong_key_is_told_to_authenticate():
    response = send(Client(enforce_csrf_checks=True), *WRITES[1], **bearer("qnx_not-a-real-key"))

    assert response.status_code == 401
    assert response.json()["code"] == "unauthenticated"


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_a_session_write_without_its_csrf_token_is_refused(owner, method, path, body):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)

    response = send(client, method, path, body)

    assert response.status_code == 403
    assert "CSRF" in response.json()["error"]


def test_a_session_write_with_its_csrf_token_gets_through(owner):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    token = get_token(client.get("/").wsgi_request)  # the token the page would carry
    client.cookies["csrftoken"] = token

    response = send(client, *WRITES[1], **{"X-CSRFToken": token})

    assert response.status_code == 404  # past authentication: this chat is not the owner's
    assert response.json()["code"] == "not_found"


def test_a_key_needs_no_csrf_token(owner_key):
    response = send(Client(enforce_csrf_checks=True), *WRITES[1], **bearer(owner_key))

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_an_anonymous_read_is_told_to_authenticate(db):
    response = Client().get("/api/v1/chat/user")

    assert response.status_code == 401
    assert response.json()["code"] == "unauthenticated"
