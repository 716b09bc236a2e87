"""Server-Sent Events framing of pipeline events (the SSE transport adds nothing else)."""

import json
from collections.abc import AsyncIterator

from django.http import StreamingHttpResponse


def sse_frame(event: dict) -> str:
    seq = event.get("seq")
    prefix = f"id: {seq}\n" if seq else ""
    return f"{prefix}data: {json.dumps(event)}\n\n"


async def sse_frames(event_stream: AsyncIterator[dict | list[dict]]) -> AsyncIterator[str]:
    """One write per item: an event, or a list of events (chat.generations.follow_batches) sent together."""
    async for item in event_stream:
        yield "".join(map(sse_frame, item)) if isinstance(item, list) else sse_frame(item)
    yield "data: [DONE]\n\n"


def sse_response(event_stream: AsyncIterator[dict | list[dict]]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(sse_frames(event_stream), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # proxies must not hold tokens back
    return response
