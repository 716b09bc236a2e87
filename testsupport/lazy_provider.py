"""A provider module that nothing imports: the registry test (chat/tests/test_provider_registry.py) points a
registry row at it and checks it is imported only when the provider is first used."""

from chat.providers.sdk import SDKProvider


class LazyProvider(SDKProvider):
    name = "lazy"
    label = "Lazy"
