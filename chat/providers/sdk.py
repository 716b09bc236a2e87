"""What every cloud provider module shares: a settings-driven SDK client per event loop, and the Provider
interface implemented on top of `_stream`, `_complete` and `_health` (errors mapped by core.sdk)."""

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from django.conf import settings

from chat.providers import ProviderSpec, provider_spec
from chat.providers.base import DEFAULT_SAMPLING, Completion, Provider, ProviderError, Sampling, StreamItem
from core.sdk import map_error, timeout_kwargs

logger = logging.getLogger(__name__)


class SDKProvider(Provider):
    """A cloud provider reached through its official SDK. Subclasses set the class attributes and implement
    `_client_settings`, `_make_client`, `_stream`, `_complete` and `_health`."""

    label = ""  # how users know the provider ("OpenAI")

    def __init__(self):
        # SDK clients hold connection pools bound to an event loop: one cache per loop, keyed by the settings
        # they were built from (settings are read at call time, so a changed key or URL builds a new client).
        # Entries of closed loops are dropped (production has one loop; tests open one per test).
        self._clients: dict[asyncio.AbstractEventLoop, dict] = {}

    # --- configuration --------------------------------------------------------------------------------------
    @property
    def spec(self) -> ProviderSpec:
        """This provider's row in the registry (chat.providers.PROVIDERS): the one place its settings are named."""
        return provider_spec(self.name) or ProviderSpec(class_path=f"{type(self).__module__}.{type(self).__name__}")

    @property
    def key_setting(self) -> str:
        """The setting holding its key; empty when no key is needed."""
        return self.spec.key_setting

    def api_key(self) -> str:
        return getattr(settings, self.key_setting, "") if self.key_setting else ""

    def unavailable_reason(self) -> str | None:
        return self.spec.missing_setting()

    def _client_settings(self) -> tuple:
        """Everything the client is built from (read from settings now)."""
        raise NotImplementedError

    def _make_client(self, client_settings: tuple) -> Any:
        raise NotImplementedError

    def client(self) -> Any:
        reason = self.unavailable_reason()
        if reason:
            raise ProviderError(f"{self.label[:1].upper()}{self.label[1:]} is not configured: {reason}.")
        key = (*self._client_settings(), tuple(timeout_kwargs().items()), settings.PROVIDER_MAX_RETRIES)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return self._make_client(key)
        for closed in [other for other in self._clients if other.is_closed()]:
            self._clients.pop(closed, None)
        per_loop = self._clients.setdefault(loop, {})
        if key not in per_loop:
            per_loop.clear()  # settings changed: the old client is not needed any more
            per_loop[key] = self._make_client(key)
        return per_loop[key]

    def error(self, exc: BaseException, *, mid_stream: bool = False) -> ProviderError:
        return map_error(
            exc, label=self.label, key_setting=self.key_setting, secrets=[self.api_key()], mid_stream=mid_stream
        )

    def ended_early(self) -> ProviderError:
        subject = self.label[:1].upper() + self.label[1:]
        return ProviderError(f"{subject}'s answer ended before it was finished.", retryable=True)

    # --- the Provider interface -----------------------------------------------------------------------------
    async def stream(
        self, model_id: str, messages: list[dict], *, max_tokens: int, sampling: Sampling = DEFAULT_SAMPLING
    ) -> AsyncIterator[StreamItem]:
        # The inner generator owns the SDK stream; closing this one (aclose, or cancellation) closes it, which
        # closes the HTTP response and with it the connection to the provider.
        inner = self._stream(model_id, messages, max_tokens, sampling)
        started = False
        try:
            async for item in inner:
                started = True
                yield item
        except ProviderError:
            raise
        except Exception as exc:
            raise self.error(exc, mid_stream=started) from exc
        finally:
            await inner.aclose()

    async def complete(
        self, model_id: str, messages: list[dict], *, max_tokens: int, sampling: Sampling = DEFAULT_SAMPLING
    ) -> Completion:
        try:
            return await self._complete(model_id, messages, max_tokens, sampling)
        except ProviderError:
            raise
        except Exception as exc:
            raise self.error(exc) from exc

    async def health(self) -> bool:
        if self.unavailable_reason():
            return False
        try:
            await self._health()
        except Exception as exc:
            reason = str(self.error(exc))
            logger.warning("provider health check failed", extra={"provider": self.name, "reason": reason})
            return False
        return True

    def _stream(
        self, model_id: str, messages: list[dict], max_tokens: int, sampling: Sampling = DEFAULT_SAMPLING
    ) -> AsyncIterator[StreamItem]:
        raise NotImplementedError

    async def _complete(
        self, model_id: str, messages: list[dict], max_tokens: int, sampling: Sampling = DEFAULT_SAMPLING
    ) -> Completion:
        raise NotImplementedError

    async def _health(self) -> None:
        raise NotImplementedError


def split_system(messages: list[dict]) -> tuple[str | None, list[dict]]:
    """For providers with a separate system field: the joined system text, and the other messages."""
    system = [m["content"] for m in messages if m.get("role") == "system" and m.get("content")]
    rest = [{"role": m["role"], "content": m["content"]} for m in messages if m.get("role") != "system"]
    return ("\n\n".join(system) if system else None), rest
