"""Provider registry: one row per provider (PROVIDERS), one instance per provider per process.

Adding a provider is one module (a `Provider` subclass) plus one row here, and its `AIModel.Provider` choice
(chat/models.py keeps the choices literal for its migrations; a test checks they match this table). A provider's
module is imported only when the provider is first used: each SDK costs start-up time, and a provider nobody
uses is never loaded."""

from dataclasses import dataclass

from django.conf import settings
from django.utils.module_loading import import_string

from chat.providers.base import Provider, ProviderError


@dataclass(frozen=True)
class ProviderSpec:
    """Where a provider's class lives and which settings it needs before it can serve."""

    class_path: str  # dotted path to the Provider subclass, imported on first use
    key_setting: str = ""  # the setting that must hold a key (a cloud provider's API key)
    url_setting: str = ""  # the setting that must hold a server address (a self-hosted server)

    def missing_setting(self) -> str | None:
        """Why the settings do not allow this provider yet, or None when they do."""
        for setting in (self.key_setting, self.url_setting):
            if setting and not getattr(settings, setting, ""):
                return f"{setting} is not set"
        return None


PROVIDERS: dict[str, ProviderSpec] = {
    "local": ProviderSpec("chat.providers.local.LocalProvider"),
    "openai": ProviderSpec("chat.providers.openai_provider.OpenAIProvider", key_setting="OPENAI_API_KEY"),
    "anthropic": ProviderSpec("chat.providers.anthropic_provider.AnthropicProvider", key_setting="CLAUDE_API_KEY"),
    "groq": ProviderSpec("chat.providers.groq_provider.GroqProvider", key_setting="GROQ_API_KEY"),
    "gemini": ProviderSpec("chat.providers.gemini_provider.GeminiProvider", key_setting="GEMINI_API_KEY"),
    "openrouter": ProviderSpec(
        "chat.providers.openai_provider.OpenRouterProvider", key_setting="OPENROUTER_API_KEY"
    ),
    "openai_compatible": ProviderSpec(
        "chat.providers.openai_provider.OpenAICompatibleProvider", url_setting="OPENAI_COMPATIBLE_BASE_URL"
    ),
}

_instances: dict[str, Provider] = {}


def provider_spec(name: str) -> ProviderSpec | None:
    return PROVIDERS.get(name)


def _build(name: str) -> Provider | None:
    spec = PROVIDERS.get(name)
    if spec is None:
        return None
    return import_string(spec.class_path)()


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
    spec = PROVIDERS.get(provider_name)
    # Checked before the provider is built, so an unconfigured provider's SDK is never imported.
    missing = spec.missing_setting() if spec else None
    if missing:
        return missing
    provider = get_provider(provider_name)
    if provider is None:
        return f"the {provider_name} provider is not part of this build yet"
    return provider.unavailable_reason()


__all__ = [
    "PROVIDERS",
    "Provider",
    "ProviderError",
    "ProviderSpec",
    "get_provider",
    "provider_spec",
    "register_provider",
    "unavailable_reason",
    "unregister_provider",
]
