"""API keys found valid moments ago, remembered for API_KEY_CACHE_SECONDS so the next request or socket handshake
with the same key needs no database query.

Why: the lookup (a query through the ORM, and under CONN_MAX_AGE=0 a new database connection) was about 80 % of a
WebSocket handshake's CPU (bench/README.md, WebSockets), and a client's next request or reconnect comes with the same
key. Only successful lookups of personal API keys are kept; a wrong key always asks the database.

Revoking or deleting a key, or saving or deleting its user (deactivation, a new product), or changing any product
(users are kept with theirs), forgets it in this process at once (the signals below). Another instance learns of it
from the database when its entry expires, so a revoked key keeps working there for at most API_KEY_CACHE_SECONDS
(an open socket keeps its user for its whole life anyway).
API_KEY_CACHE_SECONDS=0 turns the cache off. Changes made with queryset.update() send no signal: they too take
effect within the TTL.
"""

import copy
import threading
import time

from django.conf import settings
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from accounts.models import ApiKey, User

# Bounded: past this many keys the expired entries go, and if none had expired, all of them.
MAX_ENTRIES = 10_000

# key hash -> (expires at, monotonic seconds; the user as loaded, never handed out itself)
_entries: dict[str, tuple[float, User]] = {}
_lock = threading.Lock()
# Bumped by every invalidation: a lookup that raced one (read the key before the revocation committed, stores after
# the signal ran) must not store what it read.
_invalidations = 0


def ttl() -> float:
    return settings.API_KEY_CACHE_SECONDS


def cached_user(key_hash: str) -> User | None:
    """A copy of the user whose valid key this is, if looked up within the TTL; else None. No database access."""
    entry = _entries.get(key_hash)
    if entry is None:
        return None
    expires, user = entry
    if expires <= time.monotonic():
        _entries.pop(key_hash, None)
        return None
    # A copy per caller: a request may load relations onto its user (product, …) or change fields, and that must not
    # leak into another request's user.
    return copy.copy(user)


def invalidation_mark() -> int:
    """Taken before a lookup's query and handed back to `remember`."""
    return _invalidations


def remember(key_hash: str, user: User, mark: int) -> None:
    if ttl() <= 0:
        return
    with _lock:
        if mark != _invalidations:
            return
        if len(_entries) >= MAX_ENTRIES:
            now = time.monotonic()
            for stale in [h for h, (expires, _) in _entries.items() if expires <= now]:
                del _entries[stale]
            if len(_entries) >= MAX_ENTRIES:
                _entries.clear()
        _entries[key_hash] = (time.monotonic() + ttl(), copy.copy(user))


def forget_key(key_hash: str) -> None:
    global _invalidations
    with _lock:
        _invalidations += 1
        _entries.pop(key_hash, None)


def forget_user(user_id) -> None:
    global _invalidations
    with _lock:
        _invalidations += 1
        for key_hash in [h for h, (_, user) in _entries.items() if user.pk == user_id]:
            del _entries[key_hash]


def clear() -> None:
    global _invalidations
    with _lock:
        _invalidations += 1
        _entries.clear()


@receiver(post_save, sender=ApiKey, dispatch_uid="accounts.key_cache.key_saved")
@receiver(post_delete, sender=ApiKey, dispatch_uid="accounts.key_cache.key_deleted")
def _key_changed(sender, instance, **kwargs):
    forget_key(instance.key_hash)


# Users are cached with their product (limits, archived or not): a changed product clears them all (it is rare).
@receiver(post_save, sender="billing.Product", dispatch_uid="accounts.key_cache.product_saved")
@receiver(post_delete, sender="billing.Product", dispatch_uid="accounts.key_cache.product_deleted")
def _product_changed(sender, instance, **kwargs):
    clear()


@receiver(post_save, sender=User, dispatch_uid="accounts.key_cache.user_saved")
@receiver(post_delete, sender=User, dispatch_uid="accounts.key_cache.user_deleted")
def _user_changed(sender, instance, **kwargs):
    forget_user(instance.pk)
