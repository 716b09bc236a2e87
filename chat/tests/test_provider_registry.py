"""The provider registry: one row per provider, each provider's class imported only when it is first used."""

import sys

import pytest
from django.utils.module_loading import import_string

from chat.models import AIModel
from chat.providers import (
    PROVIDERS,
    Provider,
    ProviderSpec,
    get_provider,
    unavailable_reason,
    unregister_provider,
)
from chat.providers.sdk import SDKProvider

LAZY_MODULE = "testsupport.lazy_provider"


def test_every_model_provider_choice_has_a_registry_row_and_every_row_a_choice():
    assert list(PROVIDERS) == list(AIModel.Provider.values)


@pytest.mark.parametrize("name", list(PROVIDERS))
def test_each_row_names_the_class_of_that_provider(name):
    spec = PROVIDERS[name]
    provider_class = import_string(spec.class_path)

    assert issubclass(provider_class, Provider)
    assert provider_class.name == name
    if issubclass(provider_class, SDKProvider):  # its key setting comes from the row, not from the class
        assert provider_class().key_setting == spec.key_setting


def test_a_name_without_a_row_has_no_provider():
    assert get_provider("no-such-provider") is None
    assert unavailable_reason("no-such-provider") == "the no-such-provider provider is not part of this build yet"


@pytest.fixture
def lazy_row(monkeypatch, settings):
    """A registry row pointing at a module nothing has imported yet."""
    sys.modules.pop(LAZY_MODULE, None)
    monkeypatch.setitem(PROVIDERS, "lazy", ProviderSpec(f"{LAZY_MODULE}.LazyProvider", key_setting="LAZY_API_KEY"))
    settings.LAZY_API_KEY = ""
    yield
    unregister_provider("lazy")
    sys.modules.pop(LAZY_MODULE, None)


def test_a_provider_module_is_imported_only_when_the_provider_is_first_used(lazy_row, settings):
    # Asking whether an unconfigured provider can serve reads the row's settings, not the module.
    assert unavailable_reason("lazy") == "LAZY_API_KEY is not set"
    assert LAZY_MODULE not in sys.modules

    settings.LAZY_API_KEY = "lazy-key"
    provider = get_provider("lazy")

    assert LAZY_MODULE in sys.modules
    assert type(provider).__module__ == LAZY_MODULE
    assert get_provider("lazy") is provider  # one instance per process
    assert provider.key_setting == "LAZY_API_KEY"
    assert provider.api_key() == "lazy-key"


def test_a_row_missing_its_setting_makes_the_provider_unavailable_with_that_reason(lazy_row, settings):
    settings.LAZY_API_KEY = "lazy-key"
    provider = get_provider("lazy")
    assert provider.unavailable_reason() is None

    settings.LAZY_API_KEY = ""

    assert provider.unavailable_reason() == "LAZY_API_KEY is not set"
    assert unavailable_reason("lazy") == "LAZY_API_KEY is not set"


def test_a_url_setting_is_required_like_a_key(settings):
    spec = ProviderSpec("unused.Provider", url_setting="OPENAI_COMPATIBLE_BASE_URL")
    settings.OPENAI_COMPATIBLE_BASE_URL = ""
    assert spec.missing_setting() == "OPENAI_COMPATIBLE_BASE_URL is not set"
    settings.OPENAI_COMPATIBLE_BASE_URL = "http://127.0.0.1:9/v1"
    assert spec.missing_setting() is None
