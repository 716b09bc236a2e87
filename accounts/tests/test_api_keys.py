"""Personal API keys: created on the account page, shown once, stored hashed, usable as bearer tokens, revocable."""

import hashlib
import re

import pytest
from django.test import Client

from accounts.models import ApiKey
from testsupport.http import bearer

RAW_KEY = re.compile(r"qnx_[A-Za-z0-9_-]{40,}")


def create_key(client, name):
    return client.post("/accounts/keys/", {"name": name}, headers={"HX-Request": "true"})


def raw_keys_in(response) -> list[str]:
    return RAW_KEY.findall(response.content.decode())


def whoami(raw_key):
    return Client().get("/api/v1/user", headers=bearer(raw_key))


def test_a_new_key_is_shown_once_and_only_its_hash_is_stored(owner, owner_client):
    response = create_key(owner_client, "laptop script")

    assert response.status_code == 200
    [raw] = raw_keys_in(response)
    assert "will not be shown again" in response.content.decode()
    key = ApiKey.objects.get(user=owner, name="laptop script")
    assert key.key_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert raw.startswith(key.prefix) and len(key.prefix) < len(raw)
    stored = [str(value) for value in ApiKey.objects.filter(pk=key.pk).values().get().values()]
    assert not any(raw in value for value in stored)

    account_page = owner_client.get("/accounts/")
    assert raw_keys_in(account_page) == []
    assert "laptop script" in account_page.content.decode()
    assert key.prefix in account_page.content.decode()


def test_each_key_is_different(owner_client):
    first = raw_keys_in(create_key(owner_client, "one"))
    second = raw_keys_in(create_key(owner_client, "two"))

    assert len(first) == len(second) == 1
    assert first != second


def test_the_key_authenticates_api_calls_as_its_owner(owner, owner_client):
    [raw] = raw_keys_in(create_key(owner_client, "laptop"))

    response = whoami(raw)

    assert response.status_code == 200
    assert (response.json()["id"], response.json()["email"]) == (owner.pk, owner.email)
    assert ApiKey.objects.get(name="laptop").last_used_at is not None


@pytest.mark.parametrize("tamper", [lambda k: k[:-1], lambda k: k + "x", lambda k: k.upper(), lambda k: k[4:]])
def test_a_tampered_key_does_not_authenticate(owner_client, tamper):
    [raw] = raw_keys_in(create_key(owner_client, "laptop"))

    assert whoami(tamper(raw)).status_code == 401


def test_revoking_a_key_makes_it_401(owner, owner_client):
    [raw] = raw_keys_in(create_key(owner_client, "laptop"))
    key = ApiKey.objects.get(user=owner, name="laptop")
    assert whoami(raw).status_code == 200

    response = owner_client.post(f"/accounts/keys/{key.pk}/revoke/")

    assert response.status_code == 200
    assert "revoked" in response.content.decode()
    key.refresh_from_db()
    assert key.revoked_at is not None
    refused = whoami(raw)
    assert refused.status_code == 401
    assert refused.json()["code"] == "unauthenticated"


def test_revoking_one_key_leaves_the_others_working(owner_client):
    [kept] = raw_keys_in(create_key(owner_client, "kept"))
    create_key(owner_client, "dropped")
    dropped = ApiKey.objects.get(name="dropped")

    owner_client.post(f"/accounts/keys/{dropped.pk}/revoke/")

    assert whoami(kept).status_code == 200


def test_another_user_cannot_revoke_the_key(owner, owner_client, other_client):
    [raw] = raw_keys_in(create_key(owner_client, "laptop"))
    key = ApiKey.objects.get(user=owner)

    response = other_client.post(f"/accounts/keys/{key.pk}/revoke/")

    assert response.status_code == 404
    key.refresh_from_db()
    assert key.revoked_at is None
    assert whoami(raw).status_code == 200


def test_a_revoked_key_cannot_be_revoked_again(owner_client):
    create_key(owner_client, "laptop")
    key = ApiKey.objects.get(name="laptop")
    owner_client.post(f"/accounts/keys/{key.pk}/revoke/")
    revoked_at = ApiKey.objects.get(pk=key.pk).revoked_at

    assert owner_client.post(f"/accounts/keys/{key.pk}/revoke/").status_code == 404
    assert ApiKey.objects.get(pk=key.pk).revoked_at == revoked_at


def test_an_inactive_users_key_does_not_authenticate(owner, owner_key):
    assert whoami(owner_key).status_code == 200
    owner.is_active = False
    owner.save()

    assert whoami(owner_key).status_code == 401


@pytest.mark.parametrize("name", ["", "   "])
def test_an_empty_name_is_refused(owner, owner_client, name):
    response = create_key(owner_client, name)

    assert response.status_code == 400
    assert "Give the key a name." in response.content.decode()
    assert raw_keys_in(response) == []
    assert not ApiKey.objects.filter(user=owner).exists()


def test_an_overlong_name_is_refused(owner, owner_client):
    response = create_key(owner_client, "k" * 101)

    assert response.status_code == 400
    assert not ApiKey.objects.filter(user=owner).exists()


def test_a_duplicate_active_name_is_refused_until_the_first_is_revoked(owner, owner_client):
    create_key(owner_client, "laptop")

    duplicate = create_key(owner_client, " laptop ")

    assert duplicate.status_code == 400
    assert "already have an active key named" in duplicate.content.decode()
    assert raw_keys_in(duplicate) == []
    assert ApiKey.objects.filter(user=owner, name="laptop").count() == 1

    owner_client.post(f"/accounts/keys/{ApiKey.objects.get(name='laptop').pk}/revoke/")
    again = create_key(owner_client, "laptop")
    assert again.status_code == 200
    assert len(raw_keys_in(again)) == 1


def test_the_same_name_may_be_used_by_another_user(owner_client, other_client, other):
    create_key(owner_client, "laptop")

    assert create_key(other_client, "laptop").status_code == 200
    assert ApiKey.objects.filter(user=other, name="laptop").exists()


def test_key_management_needs_a_login_and_a_post(owner, owner_client):
    key, _ = ApiKey.generate(owner, "laptop")

    for path in ("/accounts/keys/", f"/accounts/keys/{key.pk}/revoke/"):
        anonymous = Client().post(path, {"name": "x"})
        assert anonymous.status_code == 302
        assert anonymous["Location"].startswith("/accounts/login/")
        assert owner_client.get(path).status_code == 405
    assert ApiKey.objects.filter(user=owner).count() == 1
    assert ApiKey.objects.get(pk=key.pk).revoked_at is None


def test_the_account_page_lists_only_the_users_own_keys(owner, other, owner_client):
    ApiKey.generate(owner, "mine")
    ApiKey.generate(other, "theirs")

    html = owner_client.get("/accounts/").content.decode()

    assert "mine" in html
    assert "theirs" not in html
