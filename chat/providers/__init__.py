"""Provider registry: one instance per provider per process."""

from django.conf import settings

from chat.providers.base import Provider, ProviderError

# The setting that must hold a key before a cloud provider's models are offered.
KEY_SETTINGS = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "CLAUDE_API_KEY",
    "groq": "GROQ_API_KEY",
    "gemini": "GEMINI_API_KEY",
    "openrouter": "OPENROUTER_API_KEY",
}
# Providers that need no key but a server address: a self-hosted OpenAI-compatible server.
URL_SETTINGS = {
    "openai_compatible": "OPENAI_COMPATIBLE_BASE_URL",
}

_instances: dict[str, Provider] = {}


def _build(name: str) -> Provider | None:
    # Imported on demand: each SDK costs start-up time, and a provider nobody uses is never loaded.
    if name == "local":
        from chat.providers.local import LocalProvider

        return LocalProvider()
    if name == "openai":
        from chat.providers.openai_provider import OpenAIProvider

        return OpenAIProvider()
    if name == "openrouter":
        from chat.providers.openai_provider import OpenRouterProvider

        return OpenRouterProvider()
    if name == "openai_compatible":
        from chat.providers.openai_provider import OpenAICompatibleProvider

        return OpenAICompatibleProvider()
    if name == "anthropic":
        from chat.providers.anthropic_provider import AnthropicProvider

        return AnthropicProvider()
    if name == "groq":
        from chat.providers.groq_provider import GroqProvider

        return GroqProvider()
    if name == "gemini":
        from chat.providers.gemini_provider import GeminiProvider

        return GeminiProvider()
    return None


def get_provider(name: str) -> Provider | None:
    if name not in _instances:
        provider = _build(name)
        if provider is None:
            return None
        _instances[name] = provider
    return _instances[name]


def register_provider(name: str, provider: Provider) -> None:
    """Install a provider instance (tests use this to plug in a scripted provider)."""
    _instances[name] = provider


def unregister_provider(name: str) -> None:
    _instances.pop(name, None)


def unavailable_reason(provider_name: str) -> str | None:
    """None when the provider can serve; otherwise a reason a user can act on."""
    key_setting = KEY_SETTINGS.get(provider_name)
    if key_setting and not getattr(settings, key_setting, ""):
        return f"{key_setting} is not set"
    url_setting = URL_SETTINGS.get(provider_name)
    if url_setting and not getattr(settings, url_setting, ""):
        return f"{url_setting} is not set"
    provider = get_provider(provider_name)
    if provider is None:
        return f"the {provider_name} provider is not part of this build yet"
    return provider.unavailable_reason()


__all__ = ["Provider", "ProviderError", "get_provider", "register_provider", "unavailable_reason"]
