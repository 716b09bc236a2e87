"""The ASGI handler's pooled request threads and persistent connections (core/asgi_handler.py), through the real
HTTP application (querynox/asgi.py's handler), on whatever database the suite runs on."""

import asyncio
import threading

import pytest
from django.conf import settings
from django.db import connection, connections
from django.db.backends.signals import connection_created

from accounts.models import ApiKey
from core.asgi_handler import PooledThreadASGIHandler, RequestThreads

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def handler(monkeypatch):
    # Persistent connections whatever DB_CONN_MAX_AGE the suite runs with: each thread's connection reads this.
    monkeypatch.setitem(connections.settings["default"], "CONN_MAX_AGE", 300)
    handler = PooledThreadASGIHandler(keep_idle=4)
    yield handler
    handler.threads.retire_idle(wait=True)  # closes their connections before the test database is flushed


@pytest.fixture
def key(owner):
    return ApiKey.generate(owner, "threads")[1]


async def call(app, path, key=None, method="GET", body=b"", headers=()):
    """One request straight into the ASGI app: (status, headers, body)."""
    request_headers = [(b"host", b"127.0.0.1"), *headers]
    if key:
        request_headers.append((b"authorization", f"Bearer {key}".encode()))
    if body:
        request_headers.append((b"content-length", str(len(body)).encode()))
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": request_headers,
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
    }  # fmt: skip
    done = asyncio.Event()
    sent_request = False
    start, chunks = {}, []

    async def receive():
        nonlocal sent_request
        if not sent_request:
            sent_request = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            start.update(message)
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                done.set()

    await asyncio.wait_for(app(scope, receive, send), 30)
    return start["status"], {name.lower(): value for name, value in start["headers"]}, b"".join(chunks)


class ConnectionCount:
    def __init__(self):
        self.count = 0

    def __call__(self, sender, connection, **kwargs):
        self.count += 1


@pytest.fixture
def new_connections():
    counter = ConnectionCount()
    connection_created.connect(counter)
    yield counter
    connection_created.disconnect(counter)


async def test_sequential_requests_reuse_one_thread_and_one_connection(handler, key, new_connections):
    for _ in range(10):
        status, _, _ = await call(handler, "/api/v1/user", key)  # reads the user's usage: database work
        assert status == 200

    assert new_connections.count <= 1
    assert handler.threads.created == 1
    assert handler.threads.idle_count() == 1


async def test_a_request_leaves_its_connection_in_autocommit_outside_any_transaction(handler, key):
    assert (await call(handler, "/api/v1/chat/folders", key))[0] == 200
    thread = handler.threads.lease()
    try:
        state = thread.submit(lambda: (connection.connection is not None, connection.get_autocommit(),
                                       connection.in_atomic_block)).result(timeout=10)  # fmt: skip
    finally:
        handler.threads.release(thread)
    assert state == (True, True, False)


async def test_concurrent_requests_each_get_their_own_thread(handler, key):
    results = await asyncio.gather(*(call(handler, "/api/v1/user", key) for _ in range(3)))

    assert [status for status, _, _ in results] == [200, 200, 200]
    assert handler.threads.created == 3  # the three overlapped: none shared a thread
    assert handler.threads.idle_count() == 3


async def test_a_broken_connection_is_replaced_after_at_most_one_failed_request(handler, key, new_connections):
    assert (await call(handler, "/api/v1/user", key))[0] == 200
    thread = handler.threads.lease()
    thread.submit(lambda: connection.connection.close()).result(timeout=10)  # the driver's connection, under Django
    handler.threads.release(thread)

    statuses = [(await call(handler, "/api/v1/user", key))[0] for _ in range(3)]

    # PostgreSQL's health check finds the dead connection before the request uses it; SQLite's cannot (its
    # is_usable() is always true), so that request fails, and its thread and connection are retired.
    assert statuses[1:] == [200, 200], statuses
    assert statuses[0] in (200, 500)
    assert new_connections.count == 2


async def test_an_async_view_makes_at_most_three_trips_to_its_thread(handler, monkeypatch):
    """request_started's receivers, the view's own database check, and the response's close (request_finished):
    Django's header-only middleware (security, CSRF, clickjacking) now runs on the loop instead of in the thread."""
    from core import asgi_handler

    trips = []
    original = asgi_handler.RequestThread.submit

    def counting(self, fn, /, *args, **kwargs):
        trips.append(fn)
        return original(self, fn, *args, **kwargs)

    monkeypatch.setattr(asgi_handler.RequestThread, "submit", counting)

    status, _, _ = await call(handler, "/api/v1/health")

    assert status == 200
    assert len(trips) <= 3, trips


async def test_the_middleware_on_the_loop_still_sets_djangos_headers_and_checks_csrf(handler, owner):
    status, headers, _ = await call(handler, "/accounts/login/")
    assert status == 200
    assert headers[b"x-frame-options"] == b"DENY"
    assert headers[b"x-content-type-options"] == b"nosniff"
    assert b"content-security-policy" in headers
    cookie = headers[b"set-cookie"].decode()
    assert cookie.startswith("csrftoken=")
    token = cookie.split(";", 1)[0].split("=", 1)[1]

    form = b"username=owner%40example.com&password=correct+horse+battery"
    form_type = (b"content-type", b"application/x-www-form-urlencoded")
    refused, _, _ = await call(handler, "/accounts/login/", method="POST", body=form, headers=[form_type])
    assert refused == 403  # no CSRF cookie or token

    with_token = form + b"&csrfmiddlewaretoken=" + token.encode()
    cookies = (b"cookie", f"csrftoken={token}".encode())
    status, headers, _ = await call(handler, "/accounts/login/", method="POST", body=with_token,
                                    headers=[form_type, cookies])  # fmt: skip
    assert status == 302 and headers[b"location"] == b"/"


def test_settings_keep_djangos_middleware_names_for_check_deploy(handler):
    assert "django.middleware.security.SecurityMiddleware" in settings.MIDDLEWARE
    assert "django.middleware.csrf.CsrfViewMiddleware" in settings.MIDDLEWARE
    assert "django.middleware.clickjacking.XFrameOptionsMiddleware" in settings.MIDDLEWARE
    assert not any(path.startswith("core.async_middleware.AsyncSecurity") for path in settings.MIDDLEWARE)


# --- the pool itself ------------------------------------------------------------------------------------------------


def test_threads_are_lent_most_recent_first_and_idle_ones_are_bounded():
    pool = RequestThreads(keep_idle=2)
    first, second, third = pool.lease(), pool.lease(), pool.lease()
    assert len({first, second, third}) == 3

    pool.release(first)
    pool.release(second)
    pool.release(third)  # one more than keep_idle: the least recently used (first) is retired

    assert pool.idle_count() == 2
    assert pool.lease() is third
    assert pool.lease() is second
    assert first._shutdown


def test_a_thread_still_running_an_abandoned_call_is_never_lent_again():
    pool = RequestThreads(keep_idle=4)
    thread = pool.lease()
    gate = threading.Event()
    running = thread.submit(gate.wait, 10)

    pool.release(thread)  # its request ended (the client left) while the call runs on

    assert pool.idle_count() == 0
    assert pool.lease() is not thread
    gate.set()
    assert running.result(timeout=10) is True


def test_threads_unused_for_the_idle_time_are_retired_when_a_request_ends(monkeypatch):
    from core import asgi_handler

    now = [1000.0]
    monkeypatch.setattr(asgi_handler.time, "monotonic", lambda: now[0])
    pool = RequestThreads(keep_idle=4, idle_seconds=60)
    old, recent = pool.lease(), pool.lease()
    pool.release(old)
    now[0] += 61
    pool.release(recent)

    assert pool.idle_count() == 1
    assert pool.lease() is recent
    assert old._shutdown


# --- bearer keys on the loop for async views (accounts/auth.py) ------------------------------------------------------


def test_bearer_auth_answers_a_sync_view_with_the_user(owner, key):
    from django.test import RequestFactory

    from accounts.auth import BearerTokenAuth

    auth = BearerTokenAuth()
    request = RequestFactory().get("/", HTTP_AUTHORIZATION=f"Bearer {key}")

    assert auth.is_async is False  # no event loop in this thread: ninja calls it as a sync authenticator
    assert auth(request) == owner and request.user == owner


async def test_bearer_auth_answers_a_cached_key_on_the_loop_without_a_thread(owner, key, monkeypatch):
    from asgiref.sync import sync_to_async
    from django.test import RequestFactory

    from accounts import auth as auth_module

    bearer_auth = auth_module.BearerTokenAuth()
    first = RequestFactory().get("/", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert bearer_auth.is_async is True
    assert await bearer_auth(first) == owner  # not cached yet: looked up in a thread

    def no_thread(*args, **kwargs):
        raise AssertionError("a cached key went to a thread")

    monkeypatch.setattr(auth_module, "sync_to_async", no_thread)
    again = RequestFactory().get("/", HTTP_AUTHORIZATION=f"Bearer {key}")
    user = await bearer_auth(again)
    assert user == owner and again.user == owner

    wrong = RequestFactory().get("/", HTTP_AUTHORIZATION="Bearer qnx_not-a-key")
    monkeypatch.setattr(auth_module, "sync_to_async", sync_to_async)
    assert await bearer_auth(wrong) is None
    assert await sync_to_async(lambda: bearer_auth(RequestFactory().get("/")))() is None  # no header at all
