"""The chat WebSocket: the same turn requests as the API, framed as JSON for API clients or as HTMX
fragments for the web UI. A closed socket never stops a generation; only a stop request does."""

import asyncio
import json
import logging
from dataclasses import replace

from asgiref.sync import sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer

from chat import events
from chat.fragments import HtmxFramer, JsonFramer
from chat.generations import begin_turn, discard_temporary_chats, follow, stop_generation
from chat.models import ChatQuery
from chat.services import ChatError, get_owned_query, parse_bool, parse_chat_id, parse_query_id, parse_turn_request
from core import metrics

logger = logging.getLogger(__name__)

# Our limit on one message, in UTF-8 bytes. The server's own (daphne's --websocket-max-message-size, which
# querynox/server.py sets to WEBSOCKET_MAX_MESSAGE_BYTES) is larger, so a message between the two reaches us and gets
# our `message_too_large` error frame and a clean close; only past the server's does autobahn close with 1009 itself.
MAX_FRAME_BYTES = 1_000_000
# Like 4401 for unauthenticated: 4000 + the HTTP status (autobahn lets applications close only with 1000 or 3000-4999,
# so RFC 6455's own 1009 is not ours to send).
CLOSE_MESSAGE_TOO_BIG = 4413


def follow_position(after) -> int:
    """`after` of a follow request: the seq of the last event the client has (0: from the start)."""
    if after is None:
        return 0
    if isinstance(after, str) and after.isascii() and after.isdigit() and len(after) <= 18:
        return int(after)  # htmx's ws extension sends form values as strings
    if isinstance(after, bool) or not isinstance(after, int) or after < 0:
        raise ChatError(
            "after must be a whole number, 0 or more (the seq of the last event you have).",
            "invalid_field",
        )
    return after


class ChatConsumer(AsyncWebsocketConsumer):
    # No channel layer: nothing is ever sent to a socket by channel name or group (generations are followed in
    # memory or through chat/shared_log.py), and subscribing would cost each socket a channel and a receive loop on
    # the layer (a Redis one in production) for as long as it is open.
    channel_layer_alias = None

    async def __call__(self, scope, receive, send):
        # channels' own loop (await_many_dispatch) is made to read the socket and a channel layer at once: it wraps
        # each receive() in a task and waits on it with asyncio.wait, a task and its wait machinery held by every
        # open socket and made again for every frame. With the socket the only source, plain awaits do the same.
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass

    async def dispatch(self, message):
        # channels closes stale database connections in a thread before every message. connect and disconnect touch
        # no database here, so they skip that trip; receive (a turn, a follow, a stop) still makes it.
        if message["type"] in ("websocket.connect", "websocket.disconnect"):
            handler = self.websocket_connect if message["type"] == "websocket.connect" else self.websocket_disconnect
            await handler(message)
            return
        await super().dispatch(message)

    async def websocket_disconnect(self, message):
        # channels' own makes that thread trip again after disconnect() (aclose_old_connections): every closing
        # socket would queue behind the turns on the one shared sync thread, for nothing, as disconnect() touches no
        # database. No channel layer, so no groups to leave either.
        await self.disconnect(message["code"])
        raise StopConsumer()

    async def connect(self):
        self.user = self.scope.get("user")
        self.followers: dict[str, asyncio.Task] = {}
        # The temporary chats this socket started ({"temporary": true} on a first turn): only it continues them, and
        # they are deleted when it closes (after their running turns end: chat/generations.py).
        self.temporary_chats: set = set()
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
        if self.temporary_chats:
            discard_temporary_chats(self.temporary_chats)

    async def send_json(self, payload: dict):
        await self.send(text_data=json.dumps(payload))

    async def receive(self, text_data=None, bytes_data=None):
        size = len(text_data.encode("utf-8", "surrogatepass")) if text_data is not None else len(bytes_data or b"")
        if size > MAX_FRAME_BYTES:
            await self.send_json(
                events.error(
                    f"The message is {size} bytes; send at most {MAX_FRAME_BYTES} bytes per message.",
                    "message_too_large",
                )
            )
            await self.close(code=CLOSE_MESSAGE_TOO_BIG)
            return
        if text_data is None:
            await self.send_json(events.error("Send one JSON object per text frame (at most 1 MB).", "invalid_body"))
            return
        try:
            message = json.loads(text_data)
        except ValueError:
            await self.send_json(events.error("Malformed JSON.", "invalid_body"))
            return
        except RecursionError:
            await self.send_json(events.error("The JSON is nested too deeply.", "invalid_body"))
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
            elif action in ("regenerate", "edit"):
                await self.start_version(message, framer, edit=action == "edit")
            elif action in ("stop", "follow"):
                query = await sync_to_async(get_owned_query)(self.user, message.get("queryId"), self.temporary_chats)
                if action == "stop":
                    await stop_generation(query.pk)
                else:
                    self.relay(query.pk, follow(query.pk, follow_position(message.get("after", 0))), framer, True)
            else:
                raise ChatError(
                    f"Unknown action “{action}”: use turn, regenerate, edit, stop or follow.", code="invalid_body"
                )
        except ChatError as exc:
            for frame in await framer.refusal(exc.message, exc.code):
                await self.send(text_data=frame)

    def _temporary_chat(self, chat_id):
        """The chat id when it names one of this socket's temporary chats, else None."""
        if not chat_id or not self.temporary_chats:
            return None
        try:
            chat_id = parse_chat_id(chat_id)
        except ChatError:
            return None
        return chat_id if chat_id in self.temporary_chats else None

    async def _temporary_chat_of_query(self, query_id):
        """The temporary chat of this socket that `query_id` belongs to, if any (a regenerate names only its query)."""
        if not self.temporary_chats:
            return None
        try:
            query_id = parse_query_id(query_id)
        except ChatError:
            return None
        found = ChatQuery.objects.filter(pk=query_id, chat_id__in=list(self.temporary_chats), chat__owner=self.user)
        return await found.values_list("chat_id", flat=True).afirst()

    async def _begin(self, message: dict, framer, temporary_chat=None, new_temporary: bool = False):
        """begin_turn; a temporary chat's turns (a first one with `temporary`, or one in a chat this socket started
        so) go the same way, as a request marked temporary."""
        if temporary_chat is None and not new_temporary:
            return await begin_turn(self.user, message, message.get("chatId") or None)
        framer.temporary = True
        request = parse_turn_request({**message, "chatId": temporary_chat or None})
        query = await begin_turn(self.user, replace(request, temporary=True))
        self.temporary_chats.add(query.chat_id)
        return query

    async def start_turn(self, message: dict, framer):
        temporary_chat = self._temporary_chat(message.get("chatId"))
        new_temporary = not message.get("chatId") and parse_bool(message.get("temporary"), "temporary")
        query = await self._begin(message, framer, temporary_chat, new_temporary)
        for frame in await framer.started(query):
            await self.send(text_data=frame)
        self.relay(query.pk, follow(query.pk), framer, False)

    async def start_version(self, message: dict, framer, edit: bool):
        """regenerate {queryId} or edit {queryId, prompt}: another version of that turn (chat/branches.py), with
        the message's model, systemPrompt and webSearch like any turn."""
        payload = {key: message[key] for key in ("model", "systemPrompt", "webSearch") if key in message}
        if edit:
            payload.update(prompt=message.get("prompt"), editOf=message.get("queryId"))
        else:
            payload["regenerateOf"] = message.get("queryId")
        temporary_chat = self._temporary_chat(message.get("chatId")) or await self._temporary_chat_of_query(
            message.get("queryId")
        )
        if temporary_chat is None:
            query = await begin_turn(self.user, payload, message.get("chatId") or None)
        else:
            query = await self._begin(payload, framer, temporary_chat)
        for frame in await framer.branched(query, message.get("queryId")):
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
