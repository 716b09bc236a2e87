from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from accounts.models import API_KEY_PREFIX, ApiKey, hash_api_key

# Updating last_used_at on every request would turn each API call into a write.
LAST_USED_RESOLUTION = timedelta(minutes=5)


class ApiKeyError(ValueError):
    pass


def user_for_api_key(raw_key: str):
    """The active user owning this key, or None."""
    if not raw_key or not raw_key.startswith(API_KEY_PREFIX):
        return None
    key = ApiKey.objects.active().select_related("user").filter(key_hash=hash_api_key(raw_key)).first()
    if key is None or not key.user.is_active:
        return None
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
    return key.user


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
