import logging
import re
import secrets
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts import key_cache
from accounts.clerk import ClerkTokenError, clerk_configured, email_from_claims, looks_like_jwt, verify_token
from accounts.models import API_KEY_PREFIX, ApiKey, User, hash_api_key

logger = logging.getLogger(__name__)

# Updating last_used_at on every request would turn each API call into a write.
LAST_USED_RESOLUTION = timedelta(minutes=5)


class ApiKeyError(ValueError):
    pass


def user_for_api_key(raw_key: str):
    """The active user owning this key, or None. A key found valid within API_KEY_CACHE_SECONDS is answered from
    memory (accounts/key_cache.py)."""
    if not raw_key or not raw_key.startswith(API_KEY_PREFIX):
        return None
    key_hash = hash_api_key(raw_key)
    user = key_cache.cached_user(key_hash)
    if user is not None:
        return user
    mark = key_cache.invalidation_mark()
    # The user's product with it: most requests read it (quota, the account), and the key cache keeps it too.
    key = ApiKey.objects.active().select_related("user", "user__product").filter(key_hash=key_hash).first()
    if key is None or not key.user.is_active:
        return None
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
    key_cache.remember(key_hash, key.user, mark)
    return key.user


def cached_user_for_bearer_token(token: str):
    """The user behind this token if that is known without the database (an API key looked up moments ago), else
    None: then ask user_for_bearer_token. Safe to call on the event loop."""
    if not token or not token.startswith(API_KEY_PREFIX):
        return None
    return key_cache.cached_user(hash_api_key(token))


def user_for_bearer_token(token: str):
    """The user behind an `Authorization: Bearer` token: a personal API key (qnx_…) or a Clerk session JWT."""
    if not token:
        return None
    if token.startswith(API_KEY_PREFIX):
        return user_for_api_key(token)
    return user_for_clerk_token(token)


def user_for_clerk_token(token: str):
    """The active user this Clerk session token belongs to (created on first sight), or None."""
    if not clerk_configured() or not looks_like_jwt(token):
        return None
    try:
        claims = verify_token(token)
    except ClerkTokenError as exc:
        logger.info("clerk token refused", extra={"reason": str(exc)[:200]})
        return None
    user = do_get_or_create_clerk_user(claims["sub"], email_from_claims(claims))
    return user if user.is_active else None


# Clerk users without an email claim (or whose email already belongs to another account) get a placeholder in
# the reserved .invalid domain: accounts are never linked by email, only by the Clerk user id.
CLERK_PLACEHOLDER_DOMAIN = "clerk.invalid"


def clerk_placeholder_email(clerk_id: str, suffix: str = "") -> str:
    local = re.sub(r"[^a-z0-9._-]", "-", clerk_id.lower()).strip(".") or "user"
    return f"{local}{suffix}@{CLERK_PLACEHOLDER_DOMAIN}"


def _clerk_email_candidates(clerk_id: str, email: str) -> list[str]:
    candidates = []
    try:
        validate_email(email)
        candidates.append(User.objects.normalize_email(email).lower())
    except ValidationError:
        pass
    candidates.append(clerk_placeholder_email(clerk_id))
    candidates.append(clerk_placeholder_email(clerk_id, "+" + secrets.token_hex(4)))
    return candidates


def do_get_or_create_clerk_user(clerk_id: str, email: str = "") -> User:
    """The user with this Clerk id, created on first sight. Concurrent first requests create one user: the loser
    of the race hits the unique clerk_id and reads the winner's row."""
    user = User.objects.filter(clerk_id=clerk_id).first()
    if user is not None:
        return user
    for candidate in _clerk_email_candidates(clerk_id, email):
        try:
            with transaction.atomic():
                return User.objects.create_user(candidate, None, clerk_id=clerk_id)
        except IntegrityError:
            user = User.objects.filter(clerk_id=clerk_id).first()
            if user is not None:
                return user
            # Otherwise the email is taken by another account: try the next candidate.
    raise IntegrityError(f"could not create a user for Clerk id {clerk_id!r}")


def check_api_key_name(user, name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise ApiKeyError("Give the key a name.")
    if len(name) > 100:
        raise ApiKeyError("Key names are at most 100 characters.")
    if ApiKey.objects.active().filter(user=user, name=name).exists():
        raise ApiKeyError(f"You already have an active key named “{name}”.")
    return name


@transaction.atomic
def do_create_api_key(user, name: str) -> tuple[ApiKey, str]:
    return ApiKey.generate(user, check_api_key_name(user, name))


def do_revoke_api_key(user, key_id: int) -> bool:
    key = ApiKey.objects.active().filter(user=user, pk=key_id).first()
    if key is None:
        return False
    key.revoke()
    return True
