import pytest
from django.core.cache import cache
from django.test import override_settings

from accounts.models import ApiKey, User
from querynox.testing import SCRIPTED_MODEL, install_scripted_model, uninstall_scripted_model


@pytest.fixture(autouse=True)
def _clear_cache():
    cache.clear()
    yield
    cache.clear()


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


def bearer(raw_key: str) -> dict:
    return {"Authorization": f"Bearer {raw_key}"}


@pytest.fixture
def scripted(db):
    """The scripted provider as the default model; fast flushes so persistence is observable."""
    provider, _ = install_scripted_model()
    with override_settings(DEFAULT_MODEL=SCRIPTED_MODEL, RESPONSE_FLUSH_SECONDS=0.01):
        yield provider
    uninstall_scripted_model()
