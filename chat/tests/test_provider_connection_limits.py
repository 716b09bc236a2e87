"""Every provider client may hold PROVIDER_MAX_CONNECTIONS connections at once. The SDKs' own caps (1,000; 100 for
google-genai's httpx client) made the streams past them wait for a free connection and fail: 1,076 of 2,000
concurrent WebSocket turns on one model did (bench/README.md, WebSockets)."""

import pytest

from chat.providers import get_provider


def pool_of(name: str, client):
    http = client._api_client._async_httpx_client if name == "gemini" else client._client
    return http._transport._pool


@pytest.mark.parametrize("name", ["openai", "anthropic", "groq", "gemini"])
async def test_a_provider_client_holds_as_many_connections_as_configured(name, emulator, settings):
    settings.PROVIDER_MAX_CONNECTIONS = 4321  # clients are made per event loop, and each test has its own
    provider = get_provider(name)

    pool = pool_of(name, provider.client())

    assert pool._max_connections == 4321
    assert pool._max_connections > 1000
