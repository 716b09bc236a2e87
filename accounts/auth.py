"""Authentication for API clients: bearer tokens on HTTP and on WebSockets. A token is a personal API key (it
starts with `qnx_`) or, when Clerk is configured, a Clerk session JWT (accounts/clerk.py)."""

import asyncio

from asgiref.sync import sync_to_async
from channels.auth import AuthMiddleware
from channels.db import database_sync_to_async
from channels.security.websocket import WebsocketDenier
from channels.sessions import CookieMiddleware, SessionMiddleware
from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest
from django.middleware.csrf import CsrfViewMiddleware
from ninja.security import HttpBearer, SessionAuth

from accounts.services import cached_user_for_bearer_token, user_for_bearer_token


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class BearerTokenAuth(HttpBearer):
    """Sync for sync views, async for async ones. ninja calls a sync view's authenticators in the view's own thread,
    and an async view's on the event loop, sending a sync authenticator to a thread first (a trip there and back
    per request, even for a key the cache answers). ninja asks `is_async` right where it calls: on the loop it
    is true and `authenticate` returns a coroutine, which answers a cached key on the loop and only goes to a
    thread for the database; in a sync view's thread it is false and `authenticate` returns the user."""

    @property
    def is_async(self) -> bool:
        return _on_event_loop()

    @is_async.setter
    def is_async(self, value) -> None:
        pass  # ninja's AuthBase.__init__ sets it once from `authenticate`; here it is decided per call

    def authenticate(self, request, token):
        if _on_event_loop():
            return self._authenticate_on_loop(request, token)
        return self._found(request, user_for_bearer_token(token))

    async def _authenticate_on_loop(self, request, token):
        user = cached_user_for_bearer_token(token) or await sync_to_async(user_for_bearer_token)(token)
        return self._found(request, user)

    @staticmethod
    def _found(request, user):
        if user is not None:
            request.user = user
        return user


class SessionUserAuth(SessionAuth):
    """The web UI's own fetches: the logged-in session, with Django's CSRF check on writes.

    ninja's SessionAuth checks CSRF before it looks for a session, so a caller with neither a key nor a session
    was told "CSRF check failed" (403) instead of "authentication required" (401). Without a logged-in session
    there is nothing for a forged request to ride on, so the CSRF check only runs for one."""

    def __call__(self, request):
        if not request.user.is_authenticated:
            return None  # not this authenticator's caller: the API answers 401
        return super().__call__(request)


# API clients send a key or a Clerk session token; the web UI's own fetches ride on the session (CSRF on writes).
API_AUTH = [BearerTokenAuth(), SessionUserAuth()]


def bearer_token_from_scope(scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token:
                return token.strip()
    return None


class BearerWebSocketMiddleware:
    """Lets API clients open the chat socket with `Authorization: Bearer <key or Clerk token>` instead of a
    session. There is no other way in: no user id is ever taken from the query string.

    A valid token wins and the handshake goes straight on (`authenticated`): the session is never parsed or loaded,
    which spares an API client's handshake a trip to a thread and the database. Without a token, or with one that
    is not valid, the session decides (`session_auth`, by default `authenticated` with the scope unchanged)."""

    def __init__(self, authenticated, session_auth=None):
        self.authenticated = authenticated
        self.session_auth = session_auth or authenticated

    async def __call__(self, scope, receive, send):
        token = bearer_token_from_scope(scope)
        if token:
            # A key seen moments ago needs neither a thread nor the database.
            user = cached_user_for_bearer_token(token) or await database_sync_to_async(user_for_bearer_token)(token)
            if user is not None:
                return await self.authenticated(dict(scope, user=user, api_client=True), receive, send)
        return await self.session_auth(scope, receive, send)


class SessionUserMiddleware(AuthMiddleware):
    """channels' AuthMiddleware (scope["user"] from the Django session), except that a handshake without a session
    cookie is anonymous at once: channels would look that up in a thread (and open a database connection) only to
    find nothing."""

    async def resolve_scope(self, scope):
        if not scope["session"].session_key:
            scope["user"]._wrapped = AnonymousUser()
            return
        await super().resolve_scope(scope)


def websocket_auth_stack(inner):
    # A valid bearer token takes precedence; otherwise the session (cookie, session, user) authenticates.
    return BearerWebSocketMiddleware(inner, CookieMiddleware(SessionMiddleware(SessionUserMiddleware(inner))))


class _HandshakeRequest(HttpRequest):
    """The socket's handshake seen as an HTTP request, so Django's own CSRF origin rules judge it: Host (and
    X-Forwarded-Host when USE_X_FORWARDED_HOST), SECURE_PROXY_SSL_HEADER when configured, else the transport
    (wss → https, ws → http)."""

    def __init__(self, scope):
        super().__init__()
        self.method = "GET"
        self.path = self.path_info = scope.get("path", "")
        self._secure_transport = scope.get("scheme") == "wss"
        for name, value in scope.get("headers", []):
            key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
            text = value.decode("latin-1")
            self.META[key] = f"{self.META[key]},{text}" if key in self.META else text

    def _get_scheme(self):
        return "https" if self._secure_transport else "http"


def origin_trusted_by_csrf(scope) -> bool:
    """Whether the handshake's Origin is one Django's CSRF check accepts for an unsafe request: this site's own
    scheme://host[:port], or one of CSRF_TRUSTED_ORIGINS (wildcard subdomains included). The rule is Django's
    CsrfViewMiddleware._origin_verified itself, so the socket and HTTP forms can never disagree."""
    request = _HandshakeRequest(scope)
    if "HTTP_ORIGIN" not in request.META:
        return False
    return CsrfViewMiddleware(lambda request: None)._origin_verified(request)


class SessionOriginGuard:
    """Refuses, at the handshake, a socket that would trust the session cookie when its Origin is not one CSRF
    accepts (cross-site WebSocket hijacking: any page the victim visits, even on another port of this host, can
    open a socket and the browser attaches the cookie).

    Sockets authenticated by a bearer token are exempt: a key or Clerk token is not ambient authority, and a page
    cannot make a browser send an Authorization header on a WebSocket. A handshake without Origin is let through:
    every browser sends Origin on WebSocket handshakes, so a client without one is not a browser acting for a
    victim; it holds whatever credentials it sends (and still needs a session or a key to get past the consumer)."""

    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and not scope.get("api_client"):
            has_origin = any(name == b"origin" for name, _ in scope.get("headers", []))
            if has_origin and not origin_trusted_by_csrf(scope):
                return await WebsocketDenier()(scope, receive, send)
        return await self.inner(scope, receive, send)


def websocket_stack(inner):
    """Authentication (session, then a bearer token), then the origin guard, which needs to know which one won."""
    return websocket_auth_stack(SessionOriginGuard(inner))
