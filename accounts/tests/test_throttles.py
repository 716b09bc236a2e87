"""Throttles where attackers push: log-in (per account, failures only, and per client address), sign-up (per
address) and API-key creation (per user). Each refusal is a 429 with Retry-After and says how long to wait; each
limit is a window of minutes, so nobody is locked out for long."""

from types import SimpleNamespace

import pytest
from django.contrib.auth import SESSION_KEY
from django.test import Client

from accounts.models import ApiKey, User
from core import ratelimit

PASSWORD = "correct horse battery"  # the `owner` fixture's


@pytest.fixture
def clock(monkeypatch):
    """A frozen clock for the rate limiter at the start of an hour (so of every window here); advance clock.now."""
    state = SimpleNamespace(now=1_800_000_000 // 3600 * 3600 + 0.5)
    monkeypatch.setattr(ratelimit, "time", SimpleNamespace(time=lambda: state.now))
    return state


def log_in(email, password, address="203.0.113.7", client=None):
    client = client or Client()
    response = client.post("/accounts/login/", {"username": email, "password": password}, REMOTE_ADDR=address)
    response.client = client
    return response


def logged_in(response) -> bool:
    return SESSION_KEY in response.client.session


def test_the_defaults(settings):
    assert settings.LOGIN_RATE_WINDOW == 300
    assert (settings.LOGIN_ACCOUNT_FAILURE_LIMIT, settings.LOGIN_ADDRESS_RATE_LIMIT) == (10, 30)
    assert (settings.SIGNUP_RATE_LIMIT, settings.SIGNUP_RATE_WINDOW) == (10, 3600)
    assert (settings.API_KEY_RATE_LIMIT, settings.API_KEY_RATE_WINDOW) == (10, 3600)


# --- log-in, per account ---------------------------------------------------------------------------------------


def test_after_10_wrong_passwords_the_account_refuses_even_the_right_one_for_the_window(owner, clock):
    for attempt in range(10):
        # Each from another address, as a distributed guesser would: the per-account limit still counts them.
        response = log_in("owner@example.com", "wrong", address=f"198.51.100.{attempt}")
        assert response.status_code == 200 and not logged_in(response)

    refused = log_in("Owner@Example.com", PASSWORD)  # the same account however it is spelled

    assert refused.status_code == 429
    assert refused["Retry-After"] == "300"
    assert "Too many failed log-ins for this account; try again in 5 minutes." in refused.content.decode()
    assert not logged_in(refused)

    clock.now += 300  # the next window: the owner logs in at once
    assert logged_in(log_in("owner@example.com", PASSWORD))


def test_successful_log_ins_do_not_count_against_the_account(owner, clock):
    for _ in range(15):
        assert logged_in(log_in("owner@example.com", PASSWORD, address="198.51.100.1"))


def test_a_stranger_failing_on_one_account_does_not_touch_another(owner, other, clock):
    for _ in range(12):
        log_in("owner@example.com", "wrong")
    assert logged_in(log_in("other@example.com", "another good password", address="198.51.100.2"))


# --- log-in, per address ----------------------------------------------------------------------------------------


def test_an_address_gets_30_attempts_per_window_of_any_outcome(owner, other, clock):
    for attempt in range(30):
        email = f"nobody{attempt}@example.com"  # spread over accounts, so only the address limit applies
        assert log_in(email, "wrong", address="203.0.113.50").status_code == 200

    refused = log_in("owner@example.com", PASSWORD, address="203.0.113.50")

    assert refused.status_code == 429
    assert refused["Retry-After"] == "300"
    assert "Too many log-in attempts from your address; try again in 5 minutes." in refused.content.decode()
    assert not logged_in(refused)
    # Another address, and the same account, are unaffected.
    assert logged_in(log_in("owner@example.com", PASSWORD, address="203.0.113.51"))


def test_the_log_in_page_itself_is_not_throttled(db, clock):
    for _ in range(40):
        assert Client().get("/accounts/login/", REMOTE_ADDR="203.0.113.60").status_code == 200


# --- sign-up, per address ---------------------------------------------------------------------------------------


def sign_up(email, address="203.0.113.7"):
    data = {"email": email, "password1": "tangerine-harbour-91", "password2": "tangerine-harbour-91"}
    return Client().post("/accounts/signup/", data, REMOTE_ADDR=address)


def test_an_address_may_sign_up_10_times_per_hour(db, clock):
    for n in range(10):
        assert sign_up(f"person{n}@example.com").status_code == 302

    refused = sign_up("person10@example.com")

    assert refused.status_code == 429
    assert refused["Retry-After"] == "3600"
    assert "Too many sign-ups from your address; try again in 60 minutes." in refused.content.decode()
    assert not User.objects.filter(email="person10@example.com").exists()
    assert sign_up("person10@example.com", address="198.51.100.9").status_code == 302

    clock.now += 3600
    assert sign_up("person11@example.com").status_code == 302


# --- API keys, per user ------------------------------------------------------------------------------------------


def create_key(client, name):
    return client.post("/accounts/keys/", {"name": name}, HTTP_HX_REQUEST="true")


def test_a_user_may_create_10_keys_per_hour(owner, owner_client, other_client, clock):
    for n in range(10):
        assert create_key(owner_client, f"key {n}").status_code == 200

    refused = create_key(owner_client, "key 10")

    assert refused.status_code == 429
    assert refused["Retry-After"] == "3600"
    assert "try again in 60 minutes" in refused.content.decode()
    assert ApiKey.objects.filter(user=owner).count() == 10
    assert create_key(other_client, "their first").status_code == 200  # per user

    clock.now += 3600
    assert create_key(owner_client, "key 11").status_code == 200


def test_with_redis_the_counters_live_in_redis(owner, clock, settings, redis_url):
    # REDIS_URL makes the default cache Redis (querynox/settings.py), so every instance counts in the same place.
    import redis

    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": redis_url}}
    settings.LOGIN_ACCOUNT_FAILURE_LIMIT = 2
    log_in("owner@example.com", "wrong", client=Client())
    log_in("owner@example.com", "wrong", client=Client())

    assert log_in("owner@example.com", PASSWORD, client=Client()).status_code == 429
    server = redis.Redis.from_url(redis_url)
    counters = server.keys("*ratelimit:login-*")  # Django names them :<version>:ratelimit:<scope>:…
    assert {key.decode().split(":")[3] for key in counters} == {"login-account", "login-address"}
    server.delete(*counters)
