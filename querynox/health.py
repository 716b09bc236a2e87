"""Health checks: cheap liveness for load balancers, and a deep check of every configured dependency."""

import asyncio

from asgiref.sync import sync_to_async
from django.core.files.storage import default_storage
from django.db import connection

from accounts.services import user_for_bearer_token
from chat.models import AIModel
from chat.providers import get_provider, unavailable_reason
from core.metrics import metrics_credentials_match

PROVIDER_CHECK_SECONDS = 10


def database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:
        return False


def _storage_ok() -> bool:
    try:
        default_storage.exists("generation/.health")
        return True
    except Exception:
        return False


def may_see_deep_health(request) -> bool:
    """Staff (by session or API key) or whoever holds the metrics credentials."""
    authorization = request.headers.get("Authorization", "")
    if metrics_credentials_match(authorization):
        return True
    user = request.user if getattr(request, "user", None) and request.user.is_authenticated else None
    if user is None and authorization.lower().startswith("bearer "):
        user = user_for_bearer_token(authorization[7:].strip())
    return bool(user and user.is_staff)


async def _provider_ok(name: str) -> bool:
    provider = get_provider(name)
    if provider is None:
        return False
    try:
        return bool(await asyncio.wait_for(provider.health(), PROVIDER_CHECK_SECONDS))
    except Exception:
        return False


async def deep_health() -> dict:
    providers = sorted(
        {
            name
            async for name in AIModel.objects.filter(enabled=True).values_list("provider", flat=True).distinct()
            if unavailable_reason(name) is None
        }
    )
    database, storage, *provider_results = await asyncio.gather(
        sync_to_async(database_ok)(), sync_to_async(_storage_ok)(), *(_provider_ok(name) for name in providers)
    )
    checks = {
        "database": database,
        "storage": storage,
        **{f"provider:{n}": ok for n, ok in zip(providers, provider_results, strict=True)},
    }
    return {"status": "ok" if all(checks.values()) else "degraded", "checks": checks}
