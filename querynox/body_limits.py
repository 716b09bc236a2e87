"""How large a request body may be, by path: the one rule the server layer (querynox/server.py, before Twisted
buffers anything) and the ASGI wrapper (core/bodylimit.py, before Django reads anything) both apply.

Most requests carry a few fields, so MAX_REQUEST_BYTES (Django's DATA_UPLOAD_MAX_MEMORY_SIZE) bounds them. The
endpoints that take files (a turn with `files`, the composer's attachments) may carry RAG_MAX_REQUEST_BYTES of files
plus the non-file fields and multipart framing, the same allowance chat/api.py's multipart check makes. The
precise per-file and per-request messages stay with the app; this bound only keeps oversized bodies out of memory.
The import endpoints take one export file of up to IMPORT_MAX_BYTES (chat/portability.py), with the same allowance.
"""

import re
from urllib.parse import unquote

from django.conf import settings

from rag.files import format_bytes

# The largest WebSocket message either server accepts (querynox/server.py, querynox/uvicorn_server.py): above the chat
# consumer's own limit (chat/consumers.py MAX_FRAME_BYTES, 1 MB), so a message over ours reaches the consumer and gets
# its `message_too_large` error frame instead of being cut off by the server.
WEBSOCKET_MAX_MESSAGE_BYTES = 4 * 1024 * 1024

# The turn endpoints (/api/v1/chat, …/stream, /api/v1/chat/<id>, …/<id>/stream), the composer's attachments, and
# an assistant's documents (the API's and its page's form).
UPLOAD_PATHS = re.compile(
    r"/api/v1/chat(?:/[^/]+)?(?:/stream)?/?|/chat/attachments/?|(?:/api/v1)?/chat/assistants/[^/]+/documents/?"
)
# Chat imports (the API's and the account page's form); matched first, since the API's also fits UPLOAD_PATHS.
IMPORT_PATHS = re.compile(r"/api/v1/chat/import/?|/chat/import/?")
# The OpenAI-compatible completions, whose JSON may carry images as base64 data URLs (chat/openai_api.py).
COMPLETIONS_PATHS = re.compile(r"/v1/chat/completions/?")


def upload_limit() -> int:
    return settings.RAG_MAX_REQUEST_BYTES + settings.DATA_UPLOAD_MAX_MEMORY_SIZE


def completions_limit() -> int:
    """A turn's files as base64 (a third larger) plus the usual fields: chat/openai_api.py completions_body_limit."""
    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE + -(-settings.RAG_MAX_REQUEST_BYTES * 4 // 3)


def import_limit() -> int:
    return settings.IMPORT_MAX_BYTES + settings.DATA_UPLOAD_MAX_MEMORY_SIZE


def largest_limit() -> int:
    """The most any path accepts (deploy/proxy/nginx.conf's client_max_body_size must stay at or above it)."""
    return max(upload_limit(), import_limit(), completions_limit(), settings.DATA_UPLOAD_MAX_MEMORY_SIZE)


def request_body_limit(path: str) -> int:
    """The most bytes a request body to this path may have (path as sent, without the query string)."""
    if IMPORT_PATHS.fullmatch(unquote(path)):
        return import_limit()
    if UPLOAD_PATHS.fullmatch(unquote(path)):
        return upload_limit()
    if COMPLETIONS_PATHS.fullmatch(unquote(path)):
        return completions_limit()
    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE


def too_large_message(size: int | None, limit: int) -> str:
    """What a refused client is told; size is None when the body is chunked and was cut off at the limit."""
    sent = "is over" if size is None else f"is {format_bytes(size)}; the limit is"
    return f"The request body {sent} {format_bytes(limit)} for this endpoint."
