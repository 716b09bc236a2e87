import pytest
from django.core.cache import cache
from django.test import Client, override_settings

from accounts.models import ApiKey, User
from chat.models import Chat, ChatQuery
from testsupport.polar_emulator import POLAR_TEST_TOKEN, POLAR_WEBHOOK_TEST_SECRET
from testsupport.scripted import SCRIPTED_MODEL, install_scripted_model, uninstall_scripted_model


@pytest.fixture(autouse=True)
def _clear_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def _fast_password_hashing():
    """Production hashing is deliberately slow; tests create many users, so they use a fast hasher."""
    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        yield


@pytest.fixture
def owner(db):
    return User.objects.create_user("owner@example.com", "correct horse battery")


@pytest.fixture
def other(db):
    return User.objects.create_user("other@example.com", "another good password")


@pytest.fixture
def owner_key(owner):
    return ApiKey.generate(owner, "tests")[1]


@pytest.fixture
def other_key(other):
    return ApiKey.generate(other, "tests")[1]


@pytest.fixture
def scripted(db):
    """The scripted provider as the default model; fast flushes so persistence is observable."""
    provider, _ = install_scripted_model()
    # No fallbacks and no chat naming unless a test asks: they would otherwise call the real local model.
    with override_settings(
        DEFAULT_MODEL=SCRIPTED_MODEL,
        RESPONSE_FLUSH_SECONDS=0.01,
        FALLBACK_MODELS=[],
        UTILITY_MODELS=[SCRIPTED_MODEL],
        CHAT_NAMING=False,
    ):
        yield provider
    uninstall_scripted_model()


@pytest.fixture
def owner_client(owner):
    """A browser session logged in as `owner` (for the HTMX pages)."""
    client = Client()
    client.force_login(owner)
    return client


@pytest.fixture
def other_client(other):
    client = Client()
    client.force_login(other)
    return client


@pytest.fixture
def make_chat(db):
    """Build a chat straight in the database: make_chat(user, [(prompt, answer), ...], **chat_fields).

    Every turn is saved `complete`; pass status=... in a turn's third item to change that."""

    from chat.services import title_from_prompt

    def make(user, turns=(("First question", "First answer"),), **fields):
        fields.setdefault("title", title_from_prompt(turns[0][0]) if turns else "New Chat")
        fields.setdefault("model", SCRIPTED_MODEL)
        chat = Chat.objects.create(owner=user, **fields)
        previous = None  # one branch: each turn follows the one before it
        for prompt, response, *status in turns:
            previous = ChatQuery.objects.create(
                chat=chat,
                parent=previous,
                prompt=prompt,
                response=response,
                model=chat.model,
                system_prompt=chat.system_prompt,
                status=status[0] if status else ChatQuery.Status.COMPLETE,
            )
        return chat

    return make


# --- a real server for end-to-end tests (chat/tests/test_live_server.py, test_browser.py) ---------------------


@pytest.fixture(scope="session")
def daphne_server(tmp_path_factory):
    """A real daphne process on 127.0.0.1 (free port) with its own SQLite file and the real local model.

    Session-scoped: it starts once (migrate, collectstatic, model preload) for every live test, and stops at the
    end. Make users and API keys in its database with `daphne_server.create_user_with_key(email, password)`."""
    from testsupport.live import LiveServer

    # One llama.cpp thread: on 2 cores shared with pytest and Chromium, two threads spinning on each other's
    # barriers run 3x slower than one (see bench/README.md), which would make the browser tests slow and jittery.
    server = LiveServer(tmp_path_factory.mktemp("live-server"), extra_env={"LOCAL_MODEL_THREADS": "1"}).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def live_server_url(daphne_server):
    """The base URL of the real server, e.g. http://127.0.0.1:41234 (no trailing slash)."""
    return daphne_server.url


@pytest.fixture(scope="module")
def emulator_server(tmp_path_factory, provider_emulator):
    """A real daphne (one per test module) whose only provider is the session's provider emulator, reset for it:
    its tests `provider_emulator.configure()` the reply they want (testsupport.browser.start_emulator_server)."""
    from testsupport.browser import start_emulator_server

    provider_emulator.reset()
    server = start_emulator_server(tmp_path_factory.mktemp("emulator-live"), provider_emulator.url)
    yield server
    server.stop()
    provider_emulator.reset()


@pytest.fixture(scope="module")
def storage_state(browser, emulator_server, tmp_path_factory, request):
    """A logged-in session of the test module's user (its EMAIL and PASSWORD) on `emulator_server`, saved once and
    loaded by each test's own browser context."""
    from testsupport.browser import saved_login

    email, password = request.module.EMAIL, request.module.PASSWORD
    emulator_server.create_user(email, password)
    return saved_login(browser, emulator_server.url, email, password, tmp_path_factory.mktemp("state") / "state.json")


@pytest.fixture
def tab(browser, emulator_server, storage_state):
    """A logged-in tab under the site's real Content-Security-Policy."""
    from testsupport.browser import open_tab

    tab = open_tab(browser, emulator_server.url, storage_state)
    yield tab
    tab.close()


# --- a real S3 API (moto's server) on loopback, for the S3/R2 storage path ---------------------------------------


@pytest.fixture(scope="session")
def moto_endpoint():
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    from testsupport.http import free_port

    port = free_port()
    server = Path(sys.executable).with_name("moto_server")
    process = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        process.kill()
        raise RuntimeError("moto_server did not start")
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)


# --- headless Chromium (apt's /usr/bin/chromium) driven by Playwright, for the browser tests ----------------------

CHROMIUM = "/usr/bin/chromium"
# Nothing may reach the network: no background services, updates, sync or QUIC probes.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium per test module. Skipped without the binary, except in CI, where .ci/run installs it."""
    import os
    from pathlib import Path

    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is missing: apt-get install -y chromium chromium-driver"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(autouse=True)
def _media_in_tmp(settings, tmp_path):
    """Uploaded files, staged attachments and generated images go to the test's own folder, never media/."""
    settings.MEDIA_ROOT = tmp_path


# --- a real Redis (apt's redis-server) on loopback: the cross-instance channel layer, cache and generation log -------


@pytest.fixture(scope="session")
def redis_url():
    """redis://127.0.0.1:<free port>/0 served by a throwaway redis-server (no persistence). Skipped without the
    binary, except in CI, where .ci/run installs it."""
    import os
    import shutil
    import subprocess
    import time

    import redis

    from testsupport.http import free_port

    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is missing: .ci/run installs the redis-server package")
        pytest.skip("redis-server is not installed (apt-get install -y redis-server)")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 20
    while True:
        try:
            redis.Redis.from_url(url).ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError("redis-server did not start") from None
            time.sleep(0.05)
    yield url
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def s3_storage(moto_endpoint, settings):
    """Default storage switched to S3Storage against moto, with a fresh bucket; yields a boto3 client."""
    import uuid

    import boto3

    bucket = f"qnx-{uuid.uuid4().hex[:12]}"
    credentials = {"aws_access_key_id": "test", "aws_secret_access_key": "test", "region_name": "us-east-1"}
    client = boto3.client("s3", endpoint_url=moto_endpoint, **credentials)
    client.create_bucket(Bucket=bucket)
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": bucket,
                "endpoint_url": moto_endpoint,
                "access_key": "test",
                "secret_key": "test",
                "region_name": "us-east-1",
                "file_overwrite": False,
            },
        },
    }
    client.bucket = bucket
    return client


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """When a test that used the real server fails, show the end of the server's log with the failure."""
    outcome = yield
    report = outcome.get_result()
    funcargs = getattr(item, "funcargs", {})
    server = funcargs.get("daphne_server") or funcargs.get("emulator_server")
    if report.failed and server is not None:
        report.sections.append(("daphne log (last lines)", server.log_tail(60)))


# --- the provider emulator: the real SDKs against loopback HTTP (chat/tests/test_provider_*.py) ---------------


@pytest.fixture(scope="session")
def provider_emulator():
    """One in-process provider emulator for the session (testsupport/emulator.py)."""
    from testsupport.emulator import ProviderEmulator

    emulator = ProviderEmulator()
    emulator.start()
    yield emulator
    emulator.stop()


@pytest.fixture
def emulator(provider_emulator, settings):
    """The emulator, reset for this test, with every cloud provider's key and base URL pointed at it and short
    timeouts and retry waits (see testsupport.scripted.emulator_settings)."""
    from testsupport.scripted import emulator_settings

    provider_emulator.reset()
    for name, value in emulator_settings(provider_emulator.url).items():
        setattr(settings, name, value)
    # A new chat's name would be asked of the emulator too, after the answer: a test counting the requests the
    # emulator received would race it. Tests of naming turn it back on.
    settings.CHAT_NAMING = False
    yield provider_emulator
    provider_emulator.reset()


# --- payments: the Polar emulator on loopback (testsupport/polar_emulator.py) and signed webhooks -------------------



@pytest.fixture(scope="session")
def polar_emulator_server():
    from testsupport.polar_emulator import PolarEmulator

    emulator = PolarEmulator(access_token=POLAR_TEST_TOKEN).start()
    yield emulator
    emulator.stop()


@pytest.fixture
def polar(polar_emulator_server, settings):
    """The Polar emulator, reset, with POLAR_API_BASE_URL and POLAR_ACCESS_TOKEN pointed at it."""
    polar_emulator_server.reset()
    settings.POLAR_API_BASE_URL = polar_emulator_server.url
    settings.POLAR_ACCESS_TOKEN = POLAR_TEST_TOKEN
    settings.POLAR_TIMEOUT = 5.0
    yield polar_emulator_server
    polar_emulator_server.reset()


@pytest.fixture
def send_webhook(db, settings):
    """send_webhook(event_type, data, delivery_id=None, timestamp=None, secret=None, body=None, sent_at=None) → the
    response of a signed POST to /api/v1/payments/webhook (Polar's scheme: the secret's UTF-8 bytes are the HMAC
    key). `timestamp` is the signature's (unix seconds), `sent_at` the event's own `timestamp` field."""
    import json
    import uuid
    from datetime import UTC, datetime

    from testsupport.polar_emulator import sign_webhook

    settings.POLAR_WEBHOOK_SECRET = POLAR_WEBHOOK_TEST_SECRET

    def send(event_type, data, delivery_id=None, timestamp=None, secret=None, body=None, sent_at=None):
        event = {"type": event_type, "timestamp": (sent_at or datetime.now(UTC)).isoformat(), "data": data}
        raw = body if body is not None else json.dumps(event).encode()
        key = (secret or POLAR_WEBHOOK_TEST_SECRET).encode()
        headers = sign_webhook(key, raw, delivery_id or f"msg_{uuid.uuid4().hex}", timestamp)
        # Polar sends no CSRF token or cookie, so neither do we.
        client = Client(enforce_csrf_checks=True)
        return client.post("/api/v1/payments/webhook", raw, content_type="application/json", headers=headers)

    return send


@pytest.fixture(autouse=True)
def _seeded_catalog(request):
    """Transactional tests flush every table afterwards, data migrations included; put the seed catalog back
    for any test that uses the database, so no test depends on the order tests run in."""
    marker = request.node.get_closest_marker("django_db")
    if marker is None and not {"db", "transactional_db"} & set(request.fixturenames):
        yield
        return
    request.getfixturevalue("transactional_db" if marker and marker.kwargs.get("transaction") else "db")
    import importlib

    from django.apps import apps

    from chat.models import AIModel

    if not AIModel.objects.filter(name="gpt-3.5-turbo").exists():
        importlib.import_module("chat.migrations.0002_seed_catalog").seed(apps, None)
        importlib.import_module("chat.migrations.0010_aimodel_vision").mark_vision_models(apps, None)
    yield
    # Set up after the database fixture, so this runs before its flush.
    _shared_sync_thread_idle()


def _shared_sync_thread_idle(timeout: float = 30) -> None:
    """An async test's background work (an unlisted chat deleted after its turn, a chat's name saved) can still be
    running on asgiref's shared sync thread once the test's loop has closed, and PostgreSQL deadlocks when the
    tables are flushed meanwhile (TRUNCATE against the DELETE). That thread runs one call at a time, so a no-op
    queued behind that work returns once it is done."""
    from asgiref.sync import SyncToAsync

    SyncToAsync.single_thread_executor.submit(lambda: None).result(timeout=timeout)
