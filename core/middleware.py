"""One JSON log line per HTTP request (the seed's morgan fields), written when the last byte has been produced.

Fields: method, route (the matched URL pattern such as `api/v1/chat/<uuid:chat_id>/stream`, never the raw path,
so ids and share links stay out of the log; null when nothing matched), status, ttfb_ms (to the first body byte),
duration_ms (to the last byte; for a streaming response, when the stream ends or the client goes away) and bytes
(body bytes sent). Query strings, headers (Authorization, cookies) and bodies are never logged."""

import logging
import time

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

logger = logging.getLogger("querynox.request")


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


class _RequestLog:
    def __init__(self, request):
        self.request = request
        self.started = time.monotonic()
        self.first_byte: float | None = None
        self.sent = 0

    def chunk(self, data: bytes) -> None:
        if self.first_byte is None:
            self.first_byte = time.monotonic()
        self.sent += len(data)

    def emit(self, response, aborted: bool = False) -> None:
        finished = time.monotonic()
        match = getattr(self.request, "resolver_match", None)
        fields = {
            "method": self.request.method,
            "route": (match.route or None) if match is not None else None,
            "status": response.status_code,
            "ttfb_ms": _ms((self.first_byte or finished) - self.started),
            "duration_ms": _ms(finished - self.started),
            "bytes": self.sent,
        }
        if aborted:
            fields["aborted"] = True
        logger.info("request", extra=fields)


class RequestLogMiddleware:
    """Outermost middleware; works in sync and async chains and with streaming (sync or async) responses."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.is_async:
            return self.__acall__(request)
        log = _RequestLog(request)
        return self._wrap(log, self.get_response(request))

    async def __acall__(self, request):
        log = _RequestLog(request)
        return self._wrap(log, await self.get_response(request))

    def _wrap(self, log: _RequestLog, response):
        if not response.streaming:
            log.chunk(response.content)
            log.emit(response)
            return response
        if response.is_async:
            response.streaming_content = self._async_stream(log, response, response.streaming_content)
        else:
            response.streaming_content = self._sync_stream(log, response, response.streaming_content)
        return response

    @staticmethod
    async def _async_stream(log, response, content):
        completed = False
        try:
            async for data in content:
                log.chunk(data)
                yield data
            completed = True
        finally:
            log.emit(response, aborted=not completed)

    @staticmethod
    def _sync_stream(log, response, content):
        completed = False
        try:
            for data in content:
                log.chunk(data)
                yield data
            completed = True
        finally:
            log.emit(response, aborted=not completed)


class RedactRequestFilter(logging.Filter):
    """Django's request loggers attach the request object, whose repr carries the query string (tokens, keys), and
    put the raw path in their messages ("Not Found: /share/<id>/"): only the method and route go to the log. Set on
    the handler, so it also sees the records of child loggers (django.security.csrf), which logger filters miss."""

    def filter(self, record: logging.LogRecord) -> bool:
        request = getattr(record, "request", None)
        if request is not None and not isinstance(request, str):
            match = getattr(request, "resolver_match", None)
            route = match.route if match is not None and match.route else "(no route)"
            path = getattr(request, "path", None)
            if path and isinstance(record.args, tuple):
                # log_response passes the path as an argument, escaped with unicode_escape.
                raw = {path, path.encode("unicode_escape").decode("ascii")}
                record.args = tuple(route if isinstance(arg, str) and arg in raw else arg for arg in record.args)
            record.request = f"{getattr(request, 'method', '?')} {route}"
        return True
