"""Django's, WhiteNoise's and django-prometheus's middleware, run on the event loop under ASGI.

Django's MiddlewareMixin is "async-capable", but in an async chain it runs every hook (process_request,
process_response, and process_view through the handler) with sync_to_async: about fifteen trips from the event loop
into a thread and back per request for the chain in settings.MIDDLEWARE, and WhiteNoise, which is sync-only, made
Django run the whole chain below it through async_to_sync as well. The hooks of these middlewares only read and set
headers, cookies and attributes (no database, no blocking I/O), so here they are called directly on the loop. The
two that can reach the database do so only when there is something to save (a modified session, messages to
store); only then do they go to a thread, as before. Under a sync chain (the test client) everything is unchanged.
"""

import types

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.common import CommonMiddleware
from django.middleware.csrf import CsrfViewMiddleware
from django.middleware.security import SecurityMiddleware
from django_prometheus.middleware import PrometheusAfterMiddleware, PrometheusBeforeMiddleware
from whitenoise.middleware import WhiteNoiseMiddleware

_HANDLER_HOOKS = ("process_view", "process_template_response")


def _on_the_loop(middleware, method):
    """`method` as a coroutine method of `middleware`: the handler names a hook by its `__self__`'s class."""

    async def hook(self, *args):
        return method(*args)

    return types.MethodType(hook, middleware)


class HooksOnTheLoop:
    """Mixed in before a MiddlewareMixin subclass: in async mode its hooks run on the event loop."""

    def __init__(self, get_response):
        super().__init__(get_response)
        if self.async_mode:
            # The handler wraps a sync process_view in sync_to_async; a coroutine it awaits as it is.
            for name in _HANDLER_HOOKS:
                method = getattr(self, name, None)
                if method is not None:
                    setattr(self, name, _on_the_loop(self, method))

    def __call__(self, request):
        if self.async_mode:
            return self._acall(request)
        return super().__call__(request)

    def response_needs_thread(self, request, response) -> bool:
        """Whether process_response may touch the database this time (then it runs in a thread)."""
        return False

    async def _acall(self, request):
        response = None
        if hasattr(self, "process_request"):
            response = self.process_request(request)
        response = response or await self.get_response(request)
        if hasattr(self, "process_response"):
            if self.response_needs_thread(request, response):
                response = await sync_to_async(self.process_response, thread_sensitive=True)(request, response)
            else:
                response = self.process_response(request, response)
        return response


class AsyncPrometheusBeforeMiddleware(HooksOnTheLoop, PrometheusBeforeMiddleware):
    pass


class AsyncPrometheusAfterMiddleware(HooksOnTheLoop, PrometheusAfterMiddleware):
    pass


class AsyncSessionMiddleware(HooksOnTheLoop, SessionMiddleware):
    def response_needs_thread(self, request, response) -> bool:
        # Saving the session is the only database work here (a session never read is never loaded).
        session = getattr(request, "session", None)
        return session is not None and (session.modified or settings.SESSION_SAVE_EVERY_REQUEST)


class AsyncCommonMiddleware(HooksOnTheLoop, CommonMiddleware):
    pass


class AsyncAuthenticationMiddleware(HooksOnTheLoop, AuthenticationMiddleware):
    pass


class AsyncMessageMiddleware(HooksOnTheLoop, MessageMiddleware):
    def response_needs_thread(self, request, response) -> bool:
        # Storing messages may load the session (the fallback storage keeps what cookies cannot hold there).
        storage = getattr(request, "_messages", None)
        return storage is not None and (storage.used or storage.added_new)


class AsyncWhiteNoiseMiddleware(WhiteNoiseMiddleware):
    """WhiteNoise answers /static/ itself (its files are indexed at start-up, so finding one is a dict look-up);
    every other request passes straight on, on the loop."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response=None, settings=settings):
        super().__init__(get_response, settings=settings)
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.async_mode:
            return self._acall(request)
        return super().__call__(request)

    async def _acall(self, request):
        if self.autorefresh:  # DEBUG: looks on disk
            static_file = await sync_to_async(self.find_file)(request.path_info)
        else:
            static_file = self.files.get(request.path_info)
        if static_file is not None:
            return self.serve(static_file, request)
        return await self.get_response(request)


class AsyncSecurityMiddleware(HooksOnTheLoop, SecurityMiddleware):
    pass  # headers and the HTTPS redirect only


class AsyncXFrameOptionsMiddleware(HooksOnTheLoop, XFrameOptionsMiddleware):
    pass  # one header


class AsyncCsrfViewMiddleware(HooksOnTheLoop, CsrfViewMiddleware):
    """With the CSRF secret in a cookie (CSRF_USE_SESSIONS off), reading and setting it is header work. The check
    itself may read the request's form body (request.POST: parsing, maybe from a temporary file), so it runs on the
    loop only where Django decides without it: a view marked csrf_exempt (django-ninja's operations are; ninja
    checks CSRF itself for session callers, in their thread), or a safe method. Otherwise it goes to a thread."""

    def __init__(self, get_response):
        super().__init__(get_response)
        if self.async_mode:
            check = CsrfViewMiddleware.process_view.__get__(self)

            async def process_view(self, request, callback, callback_args, callback_kwargs):
                if (
                    getattr(request, "csrf_processing_done", False)
                    or getattr(callback, "csrf_exempt", False)
                    or request.method in ("GET", "HEAD", "OPTIONS", "TRACE")
                ):
                    return check(request, callback, callback_args, callback_kwargs)
                return await sync_to_async(check, thread_sensitive=True)(
                    request, callback, callback_args, callback_kwargs
                )

            self.process_view = types.MethodType(process_view, self)


def on_the_loop_equivalents() -> dict[str, str]:
    """Django's middleware that settings.MIDDLEWARE names by their own dotted paths (`check --deploy` looks for those
    names) and the subclasses above that the ASGI handler runs instead (core/asgi_handler.py): the same hooks, on
    the event loop. CSRF only while its secret lives in a cookie: in the session, reading it is a database query."""
    equivalents = {
        "django.middleware.security.SecurityMiddleware": "core.async_middleware.AsyncSecurityMiddleware",
        "django.middleware.clickjacking.XFrameOptionsMiddleware": "core.async_middleware.AsyncXFrameOptionsMiddleware",
    }
    if not settings.CSRF_USE_SESSIONS:
        equivalents["django.middleware.csrf.CsrfViewMiddleware"] = "core.async_middleware.AsyncCsrfViewMiddleware"
    return equivalents
