"""The JSON API root: mounts each app's router under /api/v1 and maps refusals to clear 4xx answers."""

from asgiref.sync import sync_to_async
from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError

from accounts.api import router as user_router
from accounts.auth import API_AUTH
from billing.api import router as payments_router
from billing.payments import PaymentError
from chat.api import public_router
from chat.api import router as chat_router
from chat.services import ChatError
from core.schemas import OpenSchema, errors
from querynox.health import database_ok, deep_health, may_see_deep_health

api = NinjaAPI(
    title="QueryNox API",
    version="1",
    description="Chat with many models. Authenticate with `Authorization: Bearer <API key>` "
    "(create keys on your account page) or `Authorization: Bearer <Clerk session token>`.",
    auth=API_AUTH,
    urls_namespace="api",
)
api.add_router("/chat", chat_router)
api.add_router("/user", user_router)
api.add_router("/public", public_router)
api.add_router("/payments", payments_router)


def _error(message: str, code: str, status: int, **extra):
    return JsonResponse({"error": message, "code": code, **extra}, status=status)


@api.exception_handler(ChatError)
def on_chat_error(request, exc: ChatError):
    return _error(exc.message, exc.code, exc.status)


@api.exception_handler(PaymentError)
def on_payment_error(request, exc: PaymentError):
    return _error(exc.message, exc.code, exc.status)


@api.exception_handler(ValidationError)
def on_validation_error(request, exc: ValidationError):
    problems = []
    for error in exc.errors:
        where = ".".join(str(part) for part in error.get("loc", ()) if part not in ("body", "payload"))
        problems.append(f"{where}: {error.get('msg')}" if where else str(error.get("msg")))
    return _error("Invalid request: " + "; ".join(problems), "invalid_body", 400, details=exc.errors)


@api.exception_handler(AuthenticationError)
def on_unauthenticated(request, exc):
    return _error(
        "Authentication required: send `Authorization: Bearer <API key or Clerk session token>`.",
        "unauthenticated",
        401,
    )


@api.exception_handler(HttpError)
def on_http_error(request, exc: HttpError):
    # ninja's own refusals (an unparseable body is a 400) get the same error shape as ours.
    return _error(str(exc), "invalid_body" if exc.status_code == 400 else "http_error", exc.status_code)


@api.exception_handler(RequestDataTooBig)
def on_too_big(request, exc):
    return _error("The request body is too large.", "body_too_large", 413)


class HealthOut(OpenSchema):
    """`{"status": "ok"}`; the deep check adds one entry per dependency, and a failing check answers 503 with the
    same shape (plus `error` and `code` when the database itself is unreachable)."""

    status: str


class HelpOut(OpenSchema):
    docs: str
    openapi: str
    message: str


@api.get(
    "/health",
    auth=None,
    response={200: HealthOut, 503: HealthOut, **errors(400, 401)},
    tags=["meta"],
    summary="Liveness (the database answers); ?deep=1 checks every dependency",
)
async def health(request, deep: bool = False):
    if deep:
        if not await sync_to_async(may_see_deep_health)(request):
            return _error("The deep health check needs staff or metrics credentials.", "unauthenticated", 401)
        report = await deep_health()
        return JsonResponse(report, status=200 if report["status"] == "ok" else 503)
    if not await sync_to_async(database_ok)():
        return _error("The database is unreachable.", "unhealthy", 503, status="error")
    return {"status": "ok"}


@api.get("/help", auth=None, response=HelpOut, tags=["meta"], summary="Where the documentation is")
def help_(request):
    return {
        "docs": request.build_absolute_uri("/api/v1/docs"),
        "openapi": request.build_absolute_uri("/api/v1/openapi.json"),
        "message": "Interactive API documentation is at /api/v1/docs.",
    }
