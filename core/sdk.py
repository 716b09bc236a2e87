"""The HTTP/SDK plumbing shared by the chat providers and the embedders: error mapping, timeouts, retries, TLS.

Whatever an SDK (or its HTTP client) raised, `map_error` turns it into a `ProviderError` whose message names the
provider and is safe to show (never the key, never the provider's raw response for an authentication failure).
The chat providers (chat/providers/sdk.py) and the OpenAI embedder (rag/embeddings.py) both build on it.
"""

import functools
import importlib
import json
import logging
import ssl
from collections.abc import Callable
from typing import Any

from django.conf import settings

logger = logging.getLogger(__name__)


class ProviderError(Exception):
    """A provider failed; the message is safe to show to the user (it never contains a key).

    `retryable`: the failure is transient (rate limit, server error, timeout, broken connection), so the same
    request may succeed on a retry or another provider may be tried; False for a rejected key or request.
    `status_code`: the provider's HTTP status when it answered with one."""

    def __init__(self, message: str, *, retryable: bool = False, status_code: int | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.status_code = status_code

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


def connection_limits(http_library: str = "httpx2"):
    """httpx(2).Limits for a provider client: at most PROVIDER_MAX_CONNECTIONS connections at once. The SDKs' own
    default (1,000 for openai, anthropic and groq; httpx's 100 for google-genai's client) made every stream past it
    wait for a free connection and fail after the pool timeout: 2,000 concurrent WebSocket turns on one model ended
    with 1,076 "did not answer in time" errors (bench/README.md, WebSockets). Idle connections kept for reuse stay as
    the SDKs keep them."""
    return importlib.import_module(http_library).Limits(
        max_connections=settings.PROVIDER_MAX_CONNECTIONS, max_keepalive_connections=100, keepalive_expiry=5.0
    )


@functools.cache
def ssl_context(http_library: str = "httpx2") -> ssl.SSLContext:
    """One TLS context per HTTP library (httpx2 for openai/anthropic/google-genai, httpx for groq) for the whole
    process, built the way that library builds its default. Building one costs ~50 ms; every SDK client (one per
    event loop and settings) would otherwise build its own."""
    return importlib.import_module(http_library).create_ssl_context()


async def close_quietly(close: Callable[[], Any]) -> None:
    """Await a close() that must not mask the exception (or cancellation) already on its way out."""
    try:
        await close()
    except Exception:  # the connection is being torn down anyway
        logger.debug("closing a provider stream failed", exc_info=True)
