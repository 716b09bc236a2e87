import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "querynox.settings")
django.setup(set_prefix=False)  # what django.core.asgi.get_asgi_application does before making its handler

from django.conf import settings  # noqa: E402

from core.asgi_handler import PooledThreadASGIHandler  # noqa: E402

# Django's ASGIHandler, except that requests reuse a few worker threads (and their database connections) instead of
# starting a thread and a connection each: core/asgi_handler.py.
django_asgi_app = PooledThreadASGIHandler(keep_idle=settings.REQUEST_THREADS_KEEP_IDLE)

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402  (needs Django set up first)

from accounts.auth import websocket_stack  # noqa: E402
from chat.routing import websocket_urlpatterns  # noqa: E402
from core.bodylimit import RequestBodyLimit  # noqa: E402
from querynox.body_limits import request_body_limit, too_large_message  # noqa: E402

application = ProtocolTypeRouter(
    {
        # Bodies over their path's limit are refused before Django reads them, and chunked ones reach Django whole
        # (under daphne, querynox/server.py already bounds them before Twisted stores them).
        "http": RequestBodyLimit(django_asgi_app, request_body_limit, too_large_message),
        "websocket": websocket_stack(URLRouter(websocket_urlpatterns)),
    }
)


def _preload_local_model():
    import threading

    from django.conf import settings

    from chat.providers import get_provider

    if settings.LOCAL_MODEL_PRELOAD:
        local = get_provider("local")
        if local is not None and local.unavailable_reason() is None:
            # In the background, so the server accepts connections at once; the first turn then starts warm.
            threading.Thread(target=local.load, name="local-model-preload", daemon=True).start()


_preload_local_model()


def _hook_into_daphne():
    """Under daphne (Twisted's asyncio reactor): start the orphan sweeper once the server runs, and on SIGTERM let
    running generations finish (or save them as stopped) before the reactor stops.

    daphne runs no ASGI lifespan protocol, so the reactor's own start and shutdown hooks are the place. Test clients
    import this module without a reactor, and then nothing is hooked."""
    import asyncio
    import contextvars
    import sys

    if "twisted.internet.reactor" not in sys.modules:
        return
    from twisted.internet import defer, reactor

    from chat import generations

    def start_sweeper():
        asyncio.get_event_loop().create_task(generations.run_sweeper(), context=contextvars.Context())

    def finish_generations():
        return defer.Deferred.fromFuture(
            asyncio.ensure_future(generations.shutdown(), loop=asyncio.get_event_loop())
        )

    reactor.callWhenRunning(start_sweeper)
    reactor.addSystemEventTrigger("before", "shutdown", finish_generations)


_hook_into_daphne()
