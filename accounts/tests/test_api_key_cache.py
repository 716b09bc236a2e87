"""A key found valid is answered from memory for API_KEY_CACHE_SECONDS (accounts/key_cache.py), so a client's next
request or socket handshake costs no query; revoking the key or changing its user takes effect at once."""

import pytest
from channels.testing import WebsocketCommunicator
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts import key_cache
from accounts.models import ApiKey, hash_api_key
from accounts.services import cached_user_for_bearer_token, user_for_api_key
from querynox.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _empty_cache():
    key_cache.clear()
    yield
    key_cache.clear()


def queries_for(raw_key):
    with CaptureQueriesContext(connection) as captured:
        user = user_for_api_key(raw_key)
    return user, len(captured)


def test_a_second_lookup_of_a_valid_key_asks_no_database(owner, owner_key):
    first, first_queries = queries_for(owner_key)
    again, again_queries = queries_for(owner_key)

    assert first == owner and again == owner
    assert first_queries >= 1
    assert again_queries == 0


def test_a_wrong_key_is_never_remembered(db):
    assert queries_for("qnx_not-a-real-key") == (None, 1)
    assert queries_for("qnx_not-a-real-key") == (None, 1)


def test_a_revoked_key_is_refused_at_once(owner, owner_key):
    assert user_for_api_key(owner_key) == owner

    ApiKey.objects.get(user=owner).revoke()

    assert cached_user_for_bearer_token(owner_key) is None
    assert user_for_api_key(owner_key) is None


def test_a_deleted_key_is_refused_at_once(owner, owner_key):
    assert user_for_api_key(owner_key) == owner

    ApiKey.objects.filter(user=owner).delete()

    assert user_for_api_key(owner_key) is None


def test_a_deactivated_user_is_refused_at_once(owner, owner_key):
    assert user_for_api_key(owner_key) == owner

    owner.is_active = False
    owner.save()

    assert user_for_api_key(owner_key) is None


def test_an_expired_entry_asks_the_database_again(owner, owner_key, settings, monkeypatch):
    assert user_for_api_key(owner_key) == owner
    ApiKey.objects.filter(user=owner).update(revoked_at="2020-01-01T00:00:00Z")  # no signal: only the TTL tells
    later = key_cache.time.monotonic() + settings.API_KEY_CACHE_SECONDS + 1
    monkeypatch.setattr(key_cache.time, "monotonic", lambda: later)

    assert user_for_api_key(owner_key) is None


def test_a_ttl_of_zero_turns_the_cache_off(owner, owner_key, settings):
    settings.API_KEY_CACHE_SECONDS = 0
    assert queries_for(owner_key)[0] == owner
    assert queries_for(owner_key)[1] >= 1


def test_each_caller_gets_its_own_user_object(owner, owner_key):
    user_for_api_key(owner_key)
    first = user_for_api_key(owner_key)
    first.first_name = "changed by one request"
    second = user_for_api_key(owner_key)

    assert second is not first
    assert second.first_name != "changed by one request"
    assert second.pk == owner.pk


def test_a_lookup_that_raced_an_invalidation_stores_nothing(owner, owner_key):
    mark = key_cache.invalidation_mark()
    ApiKey.objects.get(user=owner).revoke()  # the key changed after the lookup read it
    key_cache.remember(hash_api_key(owner_key), owner, mark)

    assert cached_user_for_bearer_token(owner_key) is None


async def test_a_socket_handshake_with_a_remembered_key_needs_no_lookup(owner, owner_key, monkeypatch):
    from asgiref.sync import sync_to_async

    await sync_to_async(user_for_api_key)(owner_key)  # the key's first use

    def no_lookup(token):
        raise AssertionError("the handshake looked the key up again")

    monkeypatch.setattr("accounts.auth.user_for_bearer_token", no_lookup)
    headers = [(b"host", b"127.0.0.1:8000"), (b"authorization", f"Bearer {owner_key}".encode())]
    comm = WebsocketCommunicator(application, "/ws/chat/", headers=headers)
    connected, _ = await comm.connect()
    await comm.send_json_to({"action": "follow", "queryId": "6f1c1a8e-0000-4000-8000-000000000000"})
    answer = await comm.receive_json_from(timeout=5)
    await comm.disconnect()

    assert connected
    assert answer["code"] == "not_found"  # authenticated as the owner: an anonymous socket is closed at once
