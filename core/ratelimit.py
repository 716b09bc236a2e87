"""Fixed-window request counting in the shared cache (Redis in production, so limits hold across instances)."""

import time

from django.core.cache import cache


def client_ip(request) -> str:
    # Behind a proxy, deployers set the real client address in REMOTE_ADDR (daphne --proxy-headers).
    return request.META.get("REMOTE_ADDR") or "unknown"


def allow(scope: str, identity: str, limit: int, window_seconds: int) -> tuple[bool, int]:
    """Count one request; returns (allowed, seconds until the window resets)."""
    window = int(time.time() // window_seconds)
    key = f"ratelimit:{scope}:{identity}:{window}"
    cache.add(key, 0, timeout=window_seconds + 1)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=window_seconds + 1)
        count = 1
    retry_after = window_seconds - int(time.time() % window_seconds)
    return count <= limit, retry_after


def exceeded(scope: str, identity: str, limit: int, window_seconds: int) -> tuple[bool, int]:
    """Whether `identity` has already used its `limit` in this window, without counting a request; returns
    (exceeded, seconds until the window resets). For limits that count only some outcomes (failed log-ins)."""
    window = int(time.time() // window_seconds)
    count = cache.get(f"ratelimit:{scope}:{identity}:{window}") or 0
    return count >= limit, window_seconds - int(time.time() % window_seconds)


def wait_text(seconds: int) -> str:
    """"45 seconds", "3 minutes": how long a refused client waits, for people."""
    if seconds < 90:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes = -(-seconds // 60)
    return f"{minutes} minutes"
