"""Django's ASGI handler, with the worker thread of each request taken from a small pool instead of made anew.

Django's ASGIHandler runs every request in its own ThreadSensitiveContext, and asgiref gives each such context a
brand-new single-thread executor: a thread started for the request's first synchronous call (a sync view, sync
signal receivers, an ORM call), shut down when the request ends, and joined by yet another new thread. Django's
database connections belong to a thread, so each request also opened a new database connection, and on SQLite
closing it checkpointed the WAL. Together that was most of the server CPU of a small request
(bench/README.md, "Request overhead").

Here a request leases one worker thread for its whole life, exactly as before: all its sync work runs on that one
thread, one call at a time, and no other request runs on it meanwhile, so transactions, `atomic` blocks and
connection state stay per request. When the request ends the thread goes back to the pool with its database
connection, which Django's own request_started/request_finished handling (close_old_connections: CONN_MAX_AGE,
health checks, errors, a changed autocommit) keeps or closes as for any persistent connection. At most
`keep_idle` threads wait in the pool, and one unused for a minute goes when the next request ends; threads past
that are retired (their connections closed on them first, then they exit), so connections held by idle threads
stay bounded. A thread still running a call its request abandoned (the client went away mid-view) is retired too,
never lent out again, and so is the thread of a request answered with a 5xx (or not at all): whatever broke
there, its connection included, is not handed to the next request.

Tasks a request starts must not make thread-sensitive calls after the request has ended (asgiref raises then);
QueryNox's background work (generations, the sweeper) runs in its own context (chat/generations.py).
"""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler
from django.db import connections


class RequestThread(ThreadPoolExecutor):
    """One worker thread that knows whether a call is still queued or running on it."""

    def __init__(self, name: str):
        super().__init__(max_workers=1, thread_name_prefix=name)
        self._count_lock = threading.Lock()
        self.in_flight = 0

    def submit(self, fn, /, *args, **kwargs):
        with self._count_lock:
            self.in_flight += 1
        try:
            return super().submit(self._counted, fn, args, kwargs)
        except BaseException:
            with self._count_lock:
                self.in_flight -= 1
            raise

    def _counted(self, fn, args, kwargs):
        try:
            return fn(*args, **kwargs)
        finally:
            with self._count_lock:
                self.in_flight -= 1

    def retire(self, wait: bool = False) -> None:
        """Close this thread's database connections on it (a connection belongs to its thread), then let it exit
        once its queued work is done; waits for that only if asked."""
        if self._threads:  # a thread that never ran anything has no connection and no thread to stop
            super().submit(connections.close_all)
        self.shutdown(wait=wait)


class RequestThreads:
    """Worker threads lent to one request at a time; the most recently used first (its connection is warm).

    Never more than `keep_idle` idle threads are kept, and one unused for `idle_seconds` is retired the next time a
    request ends: a burst of concurrent requests leaves threads (and connections) for the next burst, and they do
    not outlive the traffic that needed them by much.
    """

    def __init__(self, keep_idle: int, idle_seconds: float = 60.0, name: str = "request"):
        self.keep_idle = keep_idle
        self.idle_seconds = idle_seconds
        self.name = name
        self._idle: list[tuple[float, RequestThread]] = []  # (released at, thread), the most recent last
        self._lock = threading.Lock()
        self.created = 0  # threads made so far (tests and benchmarks read it)

    def lease(self) -> RequestThread:
        with self._lock:
            if self._idle:
                return self._idle.pop()[1]
            self.created += 1
            number = self.created
        return RequestThread(f"{self.name}-{number}")

    def release(self, thread: RequestThread, reusable: bool = True) -> None:
        now = time.monotonic()
        retired = []
        with self._lock:
            if reusable and thread.in_flight == 0 and self.keep_idle > 0:
                self._idle.append((now, thread))
            else:
                retired.append(thread)
            # The least recently used are at the bottom: past the bound or unused for idle_seconds, they go.
            while self._idle and (len(self._idle) > self.keep_idle or now - self._idle[0][0] > self.idle_seconds):
                retired.append(self._idle.pop(0)[1])
        for old in retired:
            old.retire()

    def idle_count(self) -> int:
        return len(self._idle)

    def retire_idle(self, wait: bool = False) -> None:
        """Retire every idle thread (their connections closed), e.g. before a test database is dropped."""
        with self._lock:
            idle, self._idle = self._idle, []
        for _, thread in idle:
            thread.retire(wait=wait)


class PooledThreadASGIHandler(ASGIHandler):
    """ASGIHandler whose requests borrow a pooled worker thread (see the module docstring).

    It also builds its middleware chain with the on-the-loop equivalents of Django's header-only middleware
    (core/async_middleware.py on_the_loop_equivalents): Django runs each hook of a sync middleware through
    sync_to_async, and those three made six of the nine trips to a thread of a request to an async view."""

    def __init__(self, keep_idle: int = 32):
        self.threads = RequestThreads(keep_idle)
        super().__init__()

    def load_middleware(self, is_async=False):
        from core.async_middleware import on_the_loop_equivalents

        named = settings.MIDDLEWARE
        equivalents = on_the_loop_equivalents() if is_async else {}
        # BaseHandler.load_middleware reads settings.MIDDLEWARE; swapped for the time it takes to build the chain
        # (once, at start-up), so settings keep Django's names for `check --deploy`.
        settings.MIDDLEWARE = [equivalents.get(path, path) for path in named]
        try:
            super().load_middleware(is_async)
        finally:
            settings.MIDDLEWARE = named

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        thread = self.threads.lease()
        statuses = []

        async def noting_send(message):
            if message["type"] == "http.response.start":
                statuses.append(message["status"])
            await send(message)

        try:
            async with ThreadSensitiveContext(executor=thread):
                await self.handle(scope, receive, noting_send)
        finally:
            # A request that failed on the server may have left its connection broken (SQLite's is_usable() always
            # says yes, so Django would keep it): its thread and connection go, the next request gets new ones.
            self.threads.release(thread, reusable=bool(statuses) and statuses[0] < 500)
