"""The API's one error shape, and helpers every router uses to declare what an operation can answer.

Every refusal the JSON API gives (ChatError, PaymentError, validation, authentication, body limits, rate limits)
is `{"error": <message for people>, "code": <stable machine code>}`, sometimes with more fields: `details` for a
validation error, the saved `chat`/`chatQuery` when a turn's providers all failed, `status` from the health check.
"""

from typing import Any

from pydantic import BaseModel, ConfigDict


class OpenSchema(BaseModel):
    """An answer object that may grow fields: the listed ones are promised, others may appear beside them.

    A plain pydantic model, not ninja's Schema: ninja's reads its input through attribute access, which drops the
    fields a schema does not list instead of passing them through."""

    model_config = ConfigDict(extra="allow")


class ErrorOut(OpenSchema):

    error: str
    code: str
    details: list[dict[str, Any]] | None = None


def errors(*statuses: int) -> dict[int, type[ErrorOut]]:
    """`response={200: ChatOut, **errors(401, 404)}`: these statuses answer with ErrorOut."""
    return {status: ErrorOut for status in statuses}


# What any operation behind API_AUTH can answer before its view runs: no valid key or session (401), a session
# write without its CSRF token (403), and a body over the server's limit (413, from core/bodylimit.py).
AUTHENTICATED = (401, 403)
# One server-sent event (the stream is a sequence of them): `data` is a JSON object from chat/events.py, `id` its
# sequence number (send it back as Last-Event-ID to resume); the stream ends with `data: [DONE]`.
SSE_EVENT = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "event": {"type": "string"},
        "data": {"type": "string", "description": "A JSON event object, or [DONE] at the end"},
    },
    "required": ["data"],
}
SSE = {"text/event-stream": {"schema": SSE_EVENT}}


def streamed(**openapi_extra) -> dict:
    """openapi_extra for an operation whose success is an SSE stream (merged into ninja's own 200 entry)."""
    responses = openapi_extra.pop("responses", {})
    return {**openapi_extra, "responses": {**responses, 200: {"content": SSE}}}


def binary(media_type: str = "application/octet-stream") -> dict:
    """openapi_extra for an operation whose success is a file."""
    return {"responses": {200: {"content": {media_type: {"schema": {"type": "string", "format": "binary"}}}}}}
