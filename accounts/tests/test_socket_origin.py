"""The chat socket trusts the session cookie only from the origins Django's CSRF check accepts: this site's own
scheme://host:port and CSRF_TRUSTED_ORIGINS. A page on another port or scheme of the same host (the audit's
http://127.0.0.1:8399 against :8300) is refused at the handshake; bearer-token sockets are not cookie-trusting."""

import json

import pytest
from django.test import Client

from accounts.auth import origin_trusted_by_csrf
from chat.models import Chat
from testsupport.sockets import chat_socket

pytestmark = pytest.mark.django_db(transaction=True)

HOST = b"127.0.0.1:8000"


@pytest.fixture
def owner_cookie(owner) -> bytes:
    client = Client()
    client.force_login(owner)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


def socket(origin: bytes | None, cookie: bytes | None = None, key: str | None = None, host: bytes = HOST):
    return chat_socket(key, origin=origin, cookie=cookie, host=host)


async def run_turn(comm) -> list[dict]:
    await comm.send_json_to({"prompt": "Say hello"})
    received = []
    for _ in range(200):
        event = json.loads(await comm.receive_from(timeout=5))
        received.append(event)
        if event["type"] in ("complete", "error"):
            break
    return received


async def chats_of(user) -> int:
    return await Chat.objects.filter(owner=user).acount()


async def test_the_sites_own_origin_may_use_the_session(scripted, owner, owner_cookie):
    comm = socket(b"http://127.0.0.1:8000", owner_cookie)
    connected, _ = await comm.connect()
    assert connected
    assert (await run_turn(comm))[-1]["type"] == "complete"
    assert await chats_of(owner) == 1
    await comm.disconnect()


@pytest.mark.parametrize(
    "origin",
    [
        b"http://127.0.0.1:8399",  # the audit's page: same host, another port
        b"https://127.0.0.1:8000",  # same host and port, another scheme
        b"http://127.0.0.1",  # the default port is another port
        b"http://localhost:8000",  # another allowed host is still another origin
        b"https://evil.example",
        b"null",  # sandboxed frames and file:// pages
    ],
)
async def test_other_origins_are_refused_with_the_session_and_run_nothing(scripted, owner, origin, owner_cookie):
    comm = socket(origin, owner_cookie)
    connected, _ = await comm.connect()
    assert not connected
    assert await chats_of(owner) == 0


async def test_a_foreign_origin_is_refused_without_a_session_too(db):
    connected, _ = await socket(b"http://127.0.0.1:8399").connect()
    assert not connected


async def test_a_host_outside_allowed_hosts_has_no_own_origin(scripted, owner, owner_cookie):
    comm = socket(b"http://evil.example:8000", owner_cookie, host=b"evil.example:8000")
    connected, _ = await comm.connect()
    assert not connected


async def test_csrf_trusted_origins_may_use_the_session(scripted, owner, settings, owner_cookie):
    settings.CSRF_TRUSTED_ORIGINS = ["https://chat.example.org", "https://*.example.com"]
    for origin in (b"https://chat.example.org", b"https://eu.example.com"):
        comm = socket(origin, owner_cookie)
        connected, _ = await comm.connect()
        assert connected, origin
        await comm.disconnect()
    for origin in (b"http://chat.example.org", b"http://eu.example.com", b"https://example.com.evil.org"):
        connected, _ = await socket(origin, owner_cookie).connect()
        assert not connected, origin


async def test_no_origin_with_a_cookie_is_not_a_browser_and_may_connect(scripted, owner, owner_cookie):
    # Browsers always send Origin on a WebSocket handshake, so a hijacking page can never omit it; a client that
    # sends none is not a victim's browser but holds the cookie itself (like curl with a copied session).
    comm = socket(None, owner_cookie)
    connected, _ = await comm.connect()
    assert connected
    assert (await run_turn(comm))[-1]["type"] == "complete"
    await comm.disconnect()


async def test_an_api_key_socket_is_not_cookie_trusting_and_ignores_origin(scripted, owner, owner_key):
    comm = socket(b"http://127.0.0.1:8399", key=owner_key)
    connected, _ = await comm.connect()
    assert connected
    assert (await run_turn(comm))[-1]["type"] == "complete"
    await comm.disconnect()


async def test_an_invalid_key_with_a_session_cookie_is_judged_by_origin(scripted, owner, owner_cookie):
    comm = socket(b"http://127.0.0.1:8399", owner_cookie, key="qnx_not-a-real-key")
    connected, _ = await comm.connect()
    assert not connected


def handshake(origin: str, host="app.example.com", scheme="ws", **headers) -> dict:
    extra = [(name.replace("_", "-").encode(), value.encode()) for name, value in headers.items()]
    return {
        "type": "websocket",
        "scheme": scheme,
        "path": "/ws/chat/",
        "headers": [(b"host", host.encode()), (b"origin", origin.encode()), *extra],
    }


@pytest.fixture
def app_host(settings):
    settings.ALLOWED_HOSTS = ["app.example.com"]
    settings.CSRF_TRUSTED_ORIGINS = []


def test_wss_is_https_and_ws_is_http(app_host):
    assert origin_trusted_by_csrf(handshake("https://app.example.com", scheme="wss"))
    assert not origin_trusted_by_csrf(handshake("http://app.example.com", scheme="wss"))
    assert origin_trusted_by_csrf(handshake("http://app.example.com", scheme="ws"))
    assert not origin_trusted_by_csrf(handshake("https://app.example.com", scheme="ws"))


def test_the_forwarded_proto_counts_only_when_secure_proxy_ssl_header_is_set(app_host, settings):
    behind_tls_proxy = handshake("https://app.example.com", x_forwarded_proto="https")
    settings.SECURE_PROXY_SSL_HEADER = None
    assert not origin_trusted_by_csrf(behind_tls_proxy)
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert origin_trusted_by_csrf(behind_tls_proxy)
    assert not origin_trusted_by_csrf(handshake("http://app.example.com", x_forwarded_proto="https"))
