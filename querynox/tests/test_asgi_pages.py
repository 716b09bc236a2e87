"""Pages served through Django's ASGI handler, as daphne serves them (the sync test Client would take the WSGI path,
where the middleware chain runs differently): template responses, sessions, messages and CSRF all on the loop."""

import pytest

from testsupport.http import ServerAsyncClient

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("path", ["/accounts/login/", "/accounts/signup/", "/pricing/"])
async def test_public_pages_render_through_the_asgi_handler(path):
    response = await ServerAsyncClient().get(path)

    assert response.status_code == 200, response.content[:300]
    assert b"<html" in response.content and "Content-Security-Policy" in response


async def test_a_logged_in_chat_page_renders_through_the_asgi_handler(owner):
    client = ServerAsyncClient()
    await client.aforce_login(owner)

    response = await client.get("/chat/")

    assert response.status_code == 200, response.content[:300]
    assert b'id="prompt"' in response.content


async def test_a_form_post_passes_csrf_and_sets_the_session_through_the_asgi_handler(owner):
    client = ServerAsyncClient(enforce_csrf_checks=True)
    login_page = await client.get("/accounts/login/")
    token = login_page.cookies["csrftoken"].value

    response = await client.post(
        "/accounts/login/",
        {"username": "owner@example.com", "password": "correct horse battery", "csrfmiddlewaretoken": token},
    )

    assert response.status_code == 302 and response["Location"] == "/"
    assert "sessionid" in response.cookies
