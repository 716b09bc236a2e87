"""The chat WebSocket: the same turn requests as the API, framed as JSON for API clients or as HTMX
fragments for the web UI. A closed socket never stops a generation; only a stop request does."""

import asyncio
import json
import logging

from asgiref.sync import sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from chat import events
from chat.fragments import HtmxFramer, JsonFramer
from chat.generations import begin_turn, follow, stop_generation
from chat.services import ChatError, get_owned_query
from core import metrics

logger = logging.getLogger(__name__)

MAX_FRAME_BYTES = 1_000_000


class ChatConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        self.user = self.scope.get("user")
        self.followers: dict[str, asyncio.Task] = {}
        metrics.OPEN_WEBSOCKETS.inc()  # every connection ends in disconnect(), which decrements
        await self.accept()
        if not (self.user and self.user.is_authenticated):
            await self.send_json(
                events.error(
                    "Log in, or send `Authorization: Bearer <API key or Clerk session token>`.", "unauthenticated"
                )
            )
            await self.close(code=4401)

    async def disconnect(self, code):
        metrics.OPEN_WEBSOCKETS.dec()
        # Followers only relay; the generations they follow keep running.
        for task in self.followers.values():
            task.cancel()

    async def send_json(self, payload: dict):
        await self.send(text_data=json.dumps(payload))

    async def receive(self, text_data=None, bytes_data=None):
        if text_data is None or len(text_data) > MAX_FRAME_BYTES:
            await self.send_json(events.error("Send one JSON object per text frame (at most 1 MB).", "invalid_body"))
            return
        try:
            message = json.loads(text_data)
        except ValueError:
            await self.send_json(events.error("Malformed JSON.", "invalid_body"))
            return
        if not isinstance(message, dict):
            await self.send_json(events.error("Send a JSON object.", "invalid_body"))
            return
        # htmx's ws extension adds HEADERS to what it sends: that client wants HTML fragments.
        framer = HtmxFramer(self.user) if "HEADERS" in message else JsonFramer()
        action = message.get("action", "turn")
        try:
            if action == "turn":
                await self.start_turn(message, framer)
            elif action in ("stop", "follow"):
                query = await sync_to_async(get_owned_query)(self.user, message.get("queryId"))
                if action == "stop":
                    await stop_generation(query.pk)
                else:
                    after = message.get("after", 0)
                    self.relay(query.pk, follow(query.pk, after if isinstance(after, int) else 0), framer, True)
            else:
                raise ChatError(f"Unknown action “{action}”: use turn, stop or follow.", code="invalid_body")
        except ChatError as exc:
            for frame in await framer.refusal(exc.message, exc.code):
                await self.send(text_data=frame)

    async def start_turn(self, message: dict, framer):
        query = await begin_turn(self.user, message, message.get("chatId") or None)
        for frame in await framer.started(query):
            await self.send(text_data=frame)
        self.relay(query.pk, follow(query.pk), framer, False)

    def relay(self, query_id, event_stream, framer, resumed: bool):
        previous = self.followers.pop(str(query_id), None)
        if previous:
            previous.cancel()
        self.followers[str(query_id)] = asyncio.create_task(self._relay(query_id, event_stream, framer, resumed))

    async def _relay(self, query_id, event_stream, framer, resumed: bool):
        try:
            if resumed:
                for frame in await framer.resumed(query_id):
                    await self.send(text_data=frame)
            async for event in event_stream:
                for frame in await framer.frames(query_id, event):
                    await self.send(text_data=frame)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("relaying a generation to a socket failed", extra={"query_id": str(query_id)})
        finally:
            if self.followers.get(str(query_id)) is asyncio.current_task():
                del self.followers[str(query_id)]
