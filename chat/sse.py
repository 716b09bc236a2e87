"""Server-Sent Events framing of pipeline events (the SSE transport adds nothing else)."""

import json
from collections.abc import AsyncIterator

from django.http import StreamingHttpResponse


async def sse_frames(event_stream: AsyncIterator[dict]) -> AsyncIterator[str]:
    async for event in event_stream:
        seq = event.get("seq")
        prefix = f"id: {seq}\n" if seq else ""
        yield f"{prefix}data: {json.dumps(event)}\n\n"
    yield "data: [DONE]\n\n"


def sse_response(event_stream: AsyncIterator[dict]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(sse_frames(event_stream), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # proxies must not hold tokens back
    return response
