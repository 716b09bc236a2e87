"""What every cloud provider module shares: settings-driven SDK clients, timeouts, retries and error mapping.

Each provider module (openai_provider, anthropic_provider, groq_provider, gemini_provider) subclasses
`SDKProvider` and implements `_stream`, `_complete` and `_health` with its official SDK. This module makes sure
that, whatever the SDK raised, the pipeline only ever sees a `ProviderError` whose message names the provider
and is safe to show (never the key, never the provider's raw response for an authentication failure).
"""

import asyncio
import functools
import importlib
import json
import logging
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any

from django.conf import settings

from chat.providers.base import Completion, Provider, ProviderError, StreamItem

logger = logging.getLogger(__name__)

_RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529}
_TIMEOUT_NAMES = {"APITimeoutError", "TimeoutException", "TimeoutError"}
_TRANSPORT_NAMES = {"APIConnectionError", "TransportError", "NetworkError", "ProtocolError", "StreamError"}
_MALFORMED_NAMES = {
    "JSONDecodeError",
    "ValidationError",
    "APIResponseValidationError",
    "DecodingError",
    "UnknownApiResponseError",
}
_CONNECT_NAMES = {"ConnectError", "ConnectTimeout"}


def _class_names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _causes(exc: BaseException):
    """The exception and the chain of causes behind it (SDKs wrap their HTTP client's errors)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def status_of(exc: BaseException) -> int | None:
    """The HTTP status an SDK exception carries (Stainless SDKs: status_code; google-genai: code)."""
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        return status
    if type(exc).__module__.startswith("google.genai"):
        code = getattr(exc, "code", None)
        if isinstance(code, int):
            return code
    return None


def _provider_message(exc: BaseException) -> str:
    """The provider's own explanation of a rejected request, when it gave one."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
    message = getattr(exc, "message", None)
    return message if isinstance(message, str) else ""


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    text = " ".join(text.split())
    return text[:300] + ("…" if len(text) > 300 else "")


def map_error(
    exc: BaseException, *, label: str, key_setting: str = "", secrets: list[str] | None = None, mid_stream: bool
) -> ProviderError:
    """A ProviderError with a user-safe message for whatever an SDK (or its HTTP client) raised."""
    if isinstance(exc, ProviderError):
        return exc
    subject = label[:1].upper() + label[1:]  # for the start of a sentence
    names = _class_names(exc)
    status = status_of(exc)
    if status is not None:
        if status in (401, 403):
            where = f"; check {key_setting}" if key_setting else ""
            return ProviderError(f"{subject} rejected the API key{where}.", status_code=status)
        if status == 429:
            return ProviderError(
                f"{subject} is rate-limiting requests right now; try again shortly.", retryable=True, status_code=status
            )
        if status in _RETRYABLE_STATUS or status >= 500:
            return ProviderError(
                f"{subject} had a server error (HTTP {status}); try again shortly.", retryable=True, status_code=status
            )
        detail = _scrub(_provider_message(exc), secrets or [])
        detail = f": {detail}" if detail else "."
        if status == 404:
            return ProviderError(f"{subject} does not offer this model or endpoint{detail}", status_code=status)
        return ProviderError(f"{subject} rejected the request (HTTP {status}){detail}", status_code=status)
    if names & _TIMEOUT_NAMES:
        if mid_stream:
            return ProviderError(f"{subject} stopped sending mid-answer (timed out).", retryable=True)
        return ProviderError(f"{subject} did not answer in time.", retryable=True)
    if names & _TRANSPORT_NAMES:
        if mid_stream:
            return ProviderError(f"The connection to {label} broke off mid-answer.", retryable=True)
        if any(_class_names(cause) & _CONNECT_NAMES for cause in _causes(exc)):
            return ProviderError(f"Could not reach {label}.", retryable=True)
        return ProviderError(f"The connection to {label} closed before an answer arrived.", retryable=True)
    if names & _MALFORMED_NAMES or isinstance(exc, json.JSONDecodeError):
        return ProviderError(f"{subject} sent a malformed response.", retryable=True)
    if "APIError" in names:  # an error event inside a stream, without an HTTP status
        return ProviderError(f"{subject} reported an error mid-answer.", retryable=True)
    logger.warning("unexpected provider exception", extra={"provider": label, "exception": type(exc).__name__})
    return ProviderError(f"{subject} failed unexpectedly ({type(exc).__name__}).")


def capped_retry_wait(wait: float) -> float:
    """The SDK's own backoff (or the server's Retry-After), never longer than PROVIDER_RETRY_MAX_WAIT."""
    return max(0.0, min(wait, settings.PROVIDER_RETRY_MAX_WAIT))


class CappedRetryWait:
    """Mixin for the Stainless-generated SDK clients (openai, anthropic, groq): cap the wait between retries."""

    def _calculate_retry_timeout(self, *args, **kwargs) -> float:
        return capped_retry_wait(super()._calculate_retry_timeout(*args, **kwargs))


def timeout_kwargs() -> dict:
    """httpx(2).Timeout arguments from settings: connect (and pool) vs read (and write)."""
    return {
        "connect": settings.PROVIDER_CONNECT_TIMEOUT,
        "read": settings.PROVIDER_READ_TIMEOUT,
        "write": settings.PROVIDER_READ_TIMEOUT,
        "pool": settings.PROVIDER_CONNECT_TIMEOUT,
    }


@functools.cache
def ssl_context(http_library: str = "httpx2") -> ssl.SSLContext:
    """One TLS context per HTTP library (httpx2 for openai/anthropic/google-genai, httpx for groq) for the whole
    process, built the way that library builds its default. Building one costs ~50 ms; every SDK client (one per
    event loop and settings) would otherwise build its own."""
    return importlib.import_module(http_library).create_ssl_context()


class SDKProvider(Provider):
    """A cloud provider reached through its official SDK. Subclasses set the class attributes and implement
    `_client_settings`, `_make_client`, `_stream`, `_complete` and `_health`."""

    label = ""  # how users know the provider ("OpenAI")
    key_setting = ""  # the setting holding its key; empty when no key is needed

    def __init__(self):
        # SDK clients hold connection pools bound to an event loop: one cache per loop, keyed by the settings
        # they were built from (settings are read at call time, so a changed key or URL builds a new client).
        # Entries of closed loops are dropped (production has one loop; tests open one per test).
        self._clients: dict[asyncio.AbstractEventLoop, dict] = {}

    # --- configuration --------------------------------------------------------------------------------------
    def api_key(self) -> str:
        return getattr(settings, self.key_setting, "") if self.key_setting else ""

    def unavailable_reason(self) -> str | None:
        if self.key_setting and not self.api_key():
            return f"{self.key_setting} is not set"
        return None

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
    async def stream(self, model_id: str, messages: list[dict], *, max_tokens: int) -> AsyncIterator[StreamItem]:
        # The inner generator owns the SDK stream; closing this one (aclose, or cancellation) closes it, which
        # closes the HTTP response and with it the connection to the provider.
        inner = self._stream(model_id, messages, max_tokens)
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

    async def complete(self, model_id: str, messages: list[dict], *, max_tokens: int) -> Completion:
        try:
            return await self._complete(model_id, messages, max_tokens)
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

    def _stream(self, model_id: str, messages: list[dict], max_tokens: int) -> AsyncIterator[StreamItem]:
        raise NotImplementedError

    async def _complete(self, model_id: str, messages: list[dict], max_tokens: int) -> Completion:
        raise NotImplementedError

    async def _health(self) -> None:
        raise NotImplementedError


def split_system(messages: list[dict]) -> tuple[str | None, list[dict]]:
    """For providers with a separate system field: the joined system text, and the other messages."""
    system = [m["content"] for m in messages if m.get("role") == "system" and m.get("content")]
    rest = [{"role": m["role"], "content": m["content"]} for m in messages if m.get("role") != "system"]
    return ("\n\n".join(system) if system else None), rest


async def close_quietly(close: Callable[[], Any]) -> None:
    """Await a close() that must not mask the exception (or cancellation) already on its way out."""
    try:
        await close()
    except Exception:  # the connection is being torn down anyway
        logger.debug("closing a provider stream failed", exc_info=True)
