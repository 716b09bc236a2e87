"""Running generations: each turn runs as a task that outlives the request or socket that started it.

The task drives the pipeline and records every event with a sequence number; any number of followers
(a socket, an SSE response, a JSON request, a page reloaded mid-answer) get what was already generated
first and then the live events, each exactly once and in order.
"""

import asyncio
import contextvars
import logging
import uuid
from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.conf import settings

from billing import quota
from chat import events
from chat.models import AIModel, ChatQuery
from chat.pipeline import run_turn
from chat.services import ChatError, PreparedTurn, check_turn, do_start_turn, parse_turn_request
from querynox import metrics

logger = logging.getLogger(__name__)

# How long a finished generation's events stay in memory for late followers; after that, the database answers.
FINISHED_RETENTION_SECONDS = 120

_running: dict[uuid.UUID, "Generation"] = {}


class Generation:
    def __init__(self, query_id: uuid.UUID):
        self.query_id = query_id
        self.events: list[dict] = []
        self.finished = False
        self.stop_requested = asyncio.Event()
        self._changed = asyncio.Condition()
        self.task: asyncio.Task | None = None

    async def _publish(self, event: dict) -> None:
        self.events.append({**event, "seq": len(self.events) + 1})
        async with self._changed:
            self._changed.notify_all()

    async def _finish(self) -> None:
        self.finished = True
        async with self._changed:
            self._changed.notify_all()

    async def events_after(self, seq: int = 0) -> AsyncIterator[dict]:
        position = seq
        while True:
            while position < len(self.events):
                position += 1
                yield self.events[position - 1]
            if self.finished:
                return
            async with self._changed:
                await self._changed.wait_for(lambda seen=position: seen < len(self.events) or self.finished)

    async def drive(self, pipeline: AsyncIterator[dict]) -> None:
        try:
            async for event in pipeline:
                await self._publish(event)
        except Exception:  # the pipeline turns failures into events; this guards the guard
            logger.exception("generation driver failed", extra={"query_id": str(self.query_id)})
            await self._publish(events.error("The generation failed unexpectedly.", "internal_error", self.query_id))
        finally:
            await self._finish()
            asyncio.get_running_loop().call_later(FINISHED_RETENTION_SECONDS, _running.pop, self.query_id, None)


def start_generation(query: ChatQuery, turn: PreparedTurn, reservation=None) -> Generation:
    """Start the turn's pipeline as a task of the running loop; the caller then follows it like anyone else."""
    generation = Generation(query.id)
    _running[query.id] = generation
    generation.task = asyncio.get_running_loop().create_task(
        generation.drive(run_turn(query, turn, generation.stop_requested, reservation)),
        name=f"turn-{query.id}",
        # A fresh context: the request's context carries its own sync-thread executor, which shuts down when the
        # request ends, while this task must outlive it.
        context=contextvars.Context(),
    )
    return generation


def _as_uuid(query_id) -> uuid.UUID:
    return query_id if isinstance(query_id, uuid.UUID) else uuid.UUID(str(query_id))


def _single_instance() -> bool:
    # Without a shared channel layer there is one process, so a `streaming` row with no task here is an orphan.
    return not settings.REDIS_URL


async def _mark_interrupted(query_id) -> None:
    await ChatQuery.objects.filter(pk=query_id, status=ChatQuery.Status.STREAMING).aupdate(
        status=ChatQuery.Status.ERROR, error="The server restarted while this answer was being generated."
    )


async def follow(query_id: uuid.UUID, after_seq: int = 0) -> AsyncIterator[dict]:
    """Every event of the turn after `after_seq`: replayed from memory or rebuilt from the saved query."""
    query_id = _as_uuid(query_id)
    generation = _running.get(query_id)
    if generation is not None:
        async for event in generation.events_after(after_seq):
            yield event
        return
    saved = ChatQuery.objects.select_related("chat").filter(pk=query_id)
    query = await saved.afirst()
    if query is None:
        yield events.error("That answer no longer exists.", "not_found", query_id)
        return
    if query.is_streaming and _single_instance():
        await _mark_interrupted(query_id)
        query = await saved.afirst()
    yield events.metadata(query)
    if query.response:
        yield events.content(query.response)
    if query.status == ChatQuery.Status.ERROR:
        yield events.error(query.error or "The answer failed.", "provider_error", query_id)
    elif query.is_streaming:
        yield events.status("This answer is being generated on another server instance.")
    else:
        yield events.complete(query.as_dict(), query.metadata.get("usage"))


async def stop_generation(query_id: uuid.UUID) -> bool:
    """Ask the turn to stop; the partial answer is kept and marked stopped. False when nothing was running."""
    query_id = _as_uuid(query_id)
    generation = _running.get(query_id)
    if generation is not None and not generation.finished:
        generation.stop_requested.set()
        return True
    if _single_instance():
        updated = await ChatQuery.objects.filter(pk=query_id, status=ChatQuery.Status.STREAMING).aupdate(
            status=ChatQuery.Status.STOPPED
        )
        return bool(updated)
    return False


async def begin_turn(user, payload, chat_id=None) -> ChatQuery:
    """Validate a turn request (raising ChatError), charge the quota, save its query row and start generating.

    The one entry point for every transport: socket, SSE and JSON all call this, then `follow`.
    """
    prepare = sync_to_async(_prepare_and_save)
    query, turn, reservation = await prepare(user, payload, chat_id)
    start_generation(query, turn, reservation)
    return query


def _prepare_and_save(user, payload, chat_id):
    # Bad input is refused before the quota is touched; the quota is charged before any work starts.
    turn = check_turn(user, parse_turn_request(payload, chat_id))
    kind = "image" if turn.ai_model.category == AIModel.Category.IMAGE else "chat"
    try:
        reservation = quota.reserve(user, kind)
    except quota.QuotaExceeded as exc:
        metrics.QUOTA_REFUSALS.labels(exc.kind).inc()
        raise ChatError(str(exc), code="quota_exceeded", status=429) from None
    try:
        query = do_start_turn(user, turn)
    except BaseException:
        quota.release(reservation)
        raise
    return query, turn, reservation  # query.chat is already loaded: do_start_turn created the query with it
