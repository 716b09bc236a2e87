"""Authentication for API clients: bearer tokens on HTTP and on WebSockets. A token is a personal API key (it
starts with `qnx_`) or, when Clerk is configured, a Clerk session JWT (accounts/clerk.py)."""

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.security.websocket import AllowedHostsOriginValidator, OriginValidator
from ninja.security import HttpBearer, django_auth

from accounts.services import user_for_bearer_token


class BearerTokenAuth(HttpBearer):
    # Sync on purpose: ninja runs sync authenticators in a thread for async views, and an async one
    # would hand sync views a (truthy) coroutine instead of a user.
    def authenticate(self, request, token):
        user = user_for_bearer_token(token)
        if user is not None:
            request.user = user
        return user


# API clients send a key or a Clerk session token; the web UI's own fetches ride on the session (CSRF on writes).
API_AUTH = [BearerTokenAuth(), django_auth]


def bearer_token_from_scope(scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token:
                return token.strip()
    return None


class BearerWebSocketMiddleware:
    """Lets API clients open the chat socket with `Authorization: Bearer <key or Clerk token>` instead of a
    session. There is no other way in: no user id is ever taken from the query string."""

    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        token = bearer_token_from_scope(scope)
        if token:
            user = await database_sync_to_async(user_for_bearer_token)(token)
            if user is not None:
                scope = dict(scope, user=user, api_client=True)
        return await self.inner(scope, receive, send)


def websocket_auth_stack(inner):
    # Session auth runs first and sets scope["user"]; a valid bearer token then takes precedence.
    return AuthMiddlewareStack(BearerWebSocketMiddleware(inner))


class BrowserOriginValidator(OriginValidator):
    """Browsers always send Origin on WebSockets, so a foreign Origin is refused (cross-site socket hijacking).
    Clients that send none are not browsers and cannot carry a victim's session cookie; they still need a key
    or a session to get past the consumer."""

    def valid_origin(self, parsed_origin):
        return parsed_origin is None or super().valid_origin(parsed_origin)


def websocket_origin_guard(inner):
    allowed_hosts_validator = AllowedHostsOriginValidator(inner)
    return BrowserOriginValidator(inner, allowed_hosts_validator.allowed_origins)
