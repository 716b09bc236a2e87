"""What lets any instance follow or stop a generation running on another one (only with REDIS_URL).

- Every event a generation publishes is appended to a Redis stream per query, with the stream id `0-<seq>`: a
  follower that reconnects anywhere reads everything after the last sequence number it saw with one XREAD, then
  blocks on the same XREAD for what comes next. The ids are the sequence numbers, so an event can be neither
  duplicated nor reordered, and replay and live delivery cannot race.
- The instance running the generation renews a heartbeat key; a follower that finds it gone before the terminal
  event knows that instance died (it then settles the query, see chat.generations).
- A stop request travels over the channel layer to the group of that query, where the running instance listens.

Without REDIS_URL there is one instance, and chat.generations keeps everything in memory.
"""

import asyncio
import json
import logging
import weakref
from collections.abc import AsyncIterator

import redis.asyncio as redis
from django.conf import settings
from redis.exceptions import RedisError, ResponseError

logger = logging.getLogger(__name__)

# Events stay readable this long after the generation ended (late followers), then the database answers.
RETENTION_SECONDS = 300
# A running generation's stream outlives a silent provider this long at most; the heartbeat renews it.
RUNNING_TTL_SECONDS = 3600
STOP_MESSAGE_TYPE = "generation.stop"

_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, redis.Redis]" = weakref.WeakKeyDictionary()


def enabled() -> bool:
    return bool(settings.REDIS_URL)


def _prefix() -> str:
    return settings.CACHES["default"].get("KEY_PREFIX") or "querynox"


def stream_key(query_id) -> str:
    return f"{_prefix()}:generation:{query_id}:events"


def alive_key(query_id) -> str:
    return f"{_prefix()}:generation:{query_id}:alive"


def stop_group(query_id) -> str:
    # Group names allow only ASCII letters, digits, hyphens, underscores and periods.
    return f"generation.{query_id}"


def client() -> redis.Redis:
    """One connection pool per event loop: a pool's connections belong to the loop that opened them."""
    loop = asyncio.get_running_loop()
    connection = _clients.get(loop)
    if connection is None:
        connection = redis.Redis.from_url(settings.REDIS_URL)
        _clients[loop] = connection
    return connection


def heartbeat_ttl_ms() -> int:
    return max(150, int(settings.GENERATION_HEARTBEAT_SECONDS * 3 * 1000))


async def append(query_id, event: dict) -> None:
    """Add one event (it carries its `seq`). An id already taken means someone settled the query first: ignored."""
    try:
        await client().xadd(stream_key(query_id), {"e": json.dumps(event)}, id=f"0-{event['seq']}")
    except ResponseError as exc:
        if "equal or smaller" not in str(exc):
            raise


async def beat(query_id) -> None:
    """The running instance is alive; also keeps the stream from expiring while a provider is slow."""
    pipe = client().pipeline(transaction=False)
    pipe.set(alive_key(query_id), "1", px=heartbeat_ttl_ms())
    pipe.expire(stream_key(query_id), RUNNING_TTL_SECONDS)
    await pipe.execute()


async def retire(query_id) -> None:
    pipe = client().pipeline(transaction=False)
    pipe.delete(alive_key(query_id))
    pipe.expire(stream_key(query_id), RETENTION_SECONDS)
    await pipe.execute()


async def is_alive(query_id) -> bool:
    return bool(await client().exists(alive_key(query_id)))


async def known(query_id) -> bool:
    """Does Redis hold this generation (running, or finished within the retention)?"""
    return bool(await client().exists(stream_key(query_id), alive_key(query_id)))


async def all_events(query_id) -> list[dict]:
    entries = await client().xrange(stream_key(query_id))
    return [json.loads(fields[b"e"]) for _, fields in entries]


class Orphaned(Exception):
    """The instance running the generation stopped renewing its heartbeat before the terminal event."""

    def __init__(self, last_seq: int):
        super().__init__(f"orphaned after event {last_seq}")
        self.last_seq = last_seq


async def read_after(query_id, after_seq: int, terminal_types: frozenset[str]) -> AsyncIterator[dict]:
    """Every event after `after_seq`, then the live ones, until a terminal event. Raises Orphaned when the running
    instance died first (the caller settles the query and yields the final event)."""
    key = stream_key(query_id)
    last = after_seq
    poll_ms = max(50, int(settings.GENERATION_HEARTBEAT_SECONDS * 1000))
    while True:
        batches = await client().xread({key: f"0-{last}"}, count=500, block=poll_ms)
        if not batches:
            if not await is_alive(query_id):
                # One more read: the terminal event may have landed just before the heartbeat was removed.
                if not await client().xread({key: f"0-{last}"}, count=1):
                    raise Orphaned(last)
            continue
        for _stream, entries in batches:
            for _id, fields in entries:
                event = json.loads(fields[b"e"])
                last = event["seq"]
                yield event
                if event["type"] in terminal_types:
                    return


async def send_stop(query_id) -> None:
    from channels.layers import get_channel_layer

    await get_channel_layer().group_send(stop_group(query_id), {"type": STOP_MESSAGE_TYPE})


class StopListener:
    """Joins the query's group on the channel layer and sets `stop` when a stop request arrives from any instance."""

    def __init__(self, query_id, stop: asyncio.Event):
        self.query_id = query_id
        self.stop = stop
        self.task: asyncio.Task | None = None
        self.channel: str | None = None

    async def start(self) -> None:
        from channels.layers import get_channel_layer

        self.layer = get_channel_layer()
        self.channel = await self.layer.new_channel()
        await self.layer.group_add(stop_group(self.query_id), self.channel)
        self.task = asyncio.get_running_loop().create_task(self._listen(), name=f"stop-listener-{self.query_id}")

    async def _listen(self) -> None:
        while not self.stop.is_set():
            try:
                message = await self.layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("stop listener lost the channel layer; retrying", exc_info=True)
                await asyncio.sleep(1)
                continue
            if message.get("type") == STOP_MESSAGE_TYPE:
                self.stop.set()

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):
                pass
        if self.channel is not None:
            try:
                await self.layer.group_discard(stop_group(self.query_id), self.channel)
            except (RedisError, OSError):
                logger.warning("could not leave the stop group", exc_info=True)
