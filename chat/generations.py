"""Running generations: each turn runs as a task that outlives the request or socket that started it.

The task drives the pipeline and records every event with a sequence number; any number of followers
(a socket, an SSE response, a JSON request, a page reloaded mid-answer) get what was already generated
first and then the live events, each exactly once and in order.
"""

import asyncio
import contextvars
import datetime as dt
import logging
import uuid
from array import array
from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from redis.exceptions import RedisError

from billing import charges
from chat import events, search, shared_log
from chat.models import AIModel, Chat, ChatQuery
from chat.pipeline import run_turn
from chat.services import (
    PreparedTurn,
    TurnRequest,
    check_turn,
    do_reserve_turn,
    do_start_turn,
    parse_turn_request,
)
from core.tokens import estimate_tokens

logger = logging.getLogger(__name__)

# How long a finished generation's events stay in memory for late followers; after that, the database answers.
FINISHED_RETENTION_SECONDS = 120

_running: dict[uuid.UUID, "Generation"] = {}

ORPHAN_MESSAGE = "The server generating this answer stopped before finishing; the partial answer was kept."


class Generation:
    def __init__(self, query_id: uuid.UUID, chat_id: uuid.UUID | None = None):
        self.query_id = query_id
        self.chat_id = chat_id  # what a closing socket waits for before deleting its temporary chats
        # The event log, an event's seq being its position + 1. Kept compact, for it is held for every running turn
        # (and FINISHED_RETENTION_SECONDS after): a content event is its text alone (the very str the answer's
        # writer holds), any other event its dict with its seq; `_event` rebuilds the dict a follower gets. Once the
        # turn ends the texts are joined into one string (`_compact`).
        self._log: list[str | dict] = []
        self._text = ""  # finished: every content event's text, in order
        self._ends: array | None = None  # finished: where each event's text ends in `_text` (others: no text)
        self.finished = False
        self.stop_requested = asyncio.Event()
        # Set once other instances can see the generation (heartbeat in Redis), or at once without Redis: only then
        # may a client be told the query id, or a follower elsewhere would take it for an orphan.
        self.announced = asyncio.Event()
        # Followers waiting for the next event: one future each, resolved (and the list emptied) at each publish.
        self._waiters: list[asyncio.Future] = []
        self.task: asyncio.Task | None = None
        self.shared = shared_log.enabled()
        self._shared_failed = False

    def __len__(self) -> int:
        """How many events have been published (the seq of the last one)."""
        return len(self._log)

    def _event(self, position: int) -> dict:
        entry = self._log[position]
        if entry.__class__ is dict:
            return entry
        if self._ends is not None:
            entry = self._text[self._ends[position - 1] if position else 0 : self._ends[position]]
        return {"type": "content", "content": entry, "seq": position + 1}

    @property
    def events(self) -> list[dict]:
        """Every event published so far, each as followers get it."""
        return [self._event(position) for position in range(len(self._log))]

    def _wake_followers(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _publish(self, event: dict) -> None:
        seq = len(self._log) + 1
        if event.get("type") == "content" and len(event) == 2 and event["content"].__class__ is str:
            self._log.append(event["content"])
        else:
            self._log.append({**event, "seq": seq})
        if self.shared and not self._shared_failed:
            try:
                await shared_log.append(self.query_id, self._event(seq - 1))
            except (RedisError, OSError):
                # Followers on this instance still get everything; others see the answer once it is saved.
                self._shared_failed = True
                logger.exception("cannot publish generation events to Redis", extra={"query_id": str(self.query_id)})
        self._wake_followers()

    async def _finish(self) -> None:
        self.finished = True
        self._compact()
        self._wake_followers()

    def _compact(self) -> None:
        """The finished log, as kept for late followers: the texts of the content events joined into one string
        with an array of where each event's text ends (4 bytes an event instead of a str object each); the other
        events stay as they were. Followers rebuild exactly the same events from it."""
        ends, length, texts = array("I"), 0, []
        for position, entry in enumerate(self._log):
            if entry.__class__ is not dict:
                texts.append(entry)
                length += len(entry)
                self._log[position] = None  # no text: `_event` slices `_text`
            ends.append(length)
        self._text, self._ends = "".join(texts), ends

    async def _next_change(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter in self._waiters:  # the follower went away: do not keep its future until the next event
                self._waiters.remove(waiter)
            raise

    async def events_after(self, seq: int = 0) -> AsyncIterator[dict]:
        async for batch in self.batches_after(seq):
            for event in batch:
                yield event

    async def batches_after(self, seq: int = 0) -> AsyncIterator[list[dict]]:
        """The events after `seq`, in order, as lists of whatever had been published when the follower looked: a
        stream framed by the batch (SSE) writes a burst of tokens to its socket once instead of once per token."""
        position = seq
        while True:
            if position < len(self._log):
                end = len(self._log)
                batch = [self._event(index) for index in range(position, end)]
                position = end
                yield batch
                continue
            if self.finished:
                return
            await self._next_change()

    async def _heartbeat(self) -> None:
        while True:
            try:
                await shared_log.beat(self.query_id)
            except (RedisError, OSError):
                logger.warning("generation heartbeat failed", extra={"query_id": str(self.query_id)})
            self.announced.set()
            await asyncio.sleep(settings.GENERATION_HEARTBEAT_SECONDS)

    async def drive(self, pipeline: AsyncIterator[dict]) -> None:
        heartbeat = stop_listener = None
        try:
            if self.shared:
                heartbeat = asyncio.get_running_loop().create_task(self._heartbeat(), name=f"heartbeat-{self.query_id}")
                stop_listener = shared_log.StopListener(self.query_id, self.stop_requested)
                try:
                    await stop_listener.start()
                except (RedisError, OSError):
                    logger.exception("cannot listen for stop requests", extra={"query_id": str(self.query_id)})
                    stop_listener = None
            else:
                self.announced.set()
            async for event in pipeline:
                await self._publish(event)
        except Exception:  # the pipeline turns failures into events; this guards the guard
            logger.exception("generation driver failed", extra={"query_id": str(self.query_id)})
            await self._publish(events.error("The generation failed unexpectedly.", "internal_error", self.query_id))
        finally:
            self.announced.set()
            await self._finish()
            if heartbeat is not None:
                heartbeat.cancel()
            if stop_listener is not None:
                await stop_listener.close()
            if self.shared:
                try:
                    await shared_log.retire(self.query_id)
                except (RedisError, OSError):
                    logger.warning("cannot retire the generation in Redis", extra={"query_id": str(self.query_id)})
            asyncio.get_running_loop().call_later(FINISHED_RETENTION_SECONDS, _running.pop, self.query_id, None)


def start_generation(query: ChatQuery, turn: PreparedTurn, charge: charges.Charge | None = None) -> Generation:
    """Start the turn's pipeline as a task of the running loop; the caller then follows it like anyone else."""
    generation = Generation(query.id, query.chat_id)
    _running[query.id] = generation
    driving = generation.drive(run_turn(query, turn, generation.stop_requested, charge))
    if turn.request.unlisted:
        driving = _then_discard_chat(driving, query.chat_id)
    generation.task = asyncio.get_running_loop().create_task(
        driving,
        name=f"turn-{query.id}",
        # A fresh context: the request's context carries its own sync-thread executor, which shuts down when the
        # request ends, while this task must outlive it.
        context=contextvars.Context(),
    )
    return generation


async def _then_discard_chat(driving, chat_id) -> None:
    """An unlisted chat (an OpenAI-compatible call without `store`) is deleted with its queries once its turn has
    ended, however it ended: here, in the generation's task, not in the request that may have gone. The ledger
    keeps its rows (their link to the query is set to null); followers still get every event from memory."""
    try:
        await driving
    finally:
        await Chat.objects.filter(pk=chat_id, unlisted=True).adelete()


# The deletions closing sockets have scheduled (a task must be referenced until it ends).
_discarding: set[asyncio.Task] = set()


def discard_temporary_chats(chat_ids) -> asyncio.Task | None:
    """A tab's socket closed: delete the temporary chats it started, each once no turn of it is running here (a
    generation outlives its socket, and its answer is saved and charged first). The ledger keeps its rows (their
    link to the query is set to null). Returns the task doing it."""
    chat_ids = set(chat_ids)
    if not chat_ids:
        return None
    task = asyncio.get_running_loop().create_task(
        _discard_when_idle(chat_ids), name="discard-temporary-chats", context=contextvars.Context()
    )
    _discarding.add(task)
    task.add_done_callback(_discarding.discard)
    return task


async def _discard_when_idle(chat_ids: set) -> None:
    # The socket has closed, so no new turn can start in these chats: waiting for the running ones is enough.
    running = [g.task for g in _running.values() if g.chat_id in chat_ids and g.task is not None and not g.task.done()]
    if running:
        await asyncio.wait(running)
    try:
        await Chat.objects.filter(pk__in=chat_ids, unlisted=True).adelete()
    except Exception:
        # The sweeper deletes what is left (sweep_temporary_chats).
        logger.exception("deleting temporary chats failed", extra={"chats": len(chat_ids)})


async def sweep_temporary_chats(idle_seconds: float) -> int:
    """Delete the unlisted chats (temporary, or an API call's without store) idle for `idle_seconds` with no turn
    running: those whose socket (or instance) died without deleting them. Returns how many."""
    cutoff = timezone.now() - dt.timedelta(seconds=idle_seconds)
    stale = Chat.objects.filter(unlisted=True, updated_at__lt=cutoff)
    stale = stale.exclude(queries__status=ChatQuery.Status.STREAMING)
    busy = {g.chat_id for g in _running.values() if not g.finished}
    chat_ids = [chat_id async for chat_id in stale.values_list("pk", flat=True)[:500] if chat_id not in busy]
    if not chat_ids:
        return 0
    deleted, _ = await Chat.objects.filter(pk__in=chat_ids, unlisted=True).adelete()
    return len(chat_ids) if deleted else 0


def _as_uuid(query_id) -> uuid.UUID:
    return query_id if isinstance(query_id, uuid.UUID) else uuid.UUID(str(query_id))


async def settle_orphan(query_id, status: str = ChatQuery.Status.ERROR) -> None:
    """A query left `streaming` by an instance that died (or restarted): keep its partial answer and end it.

    With Redis the partial answer is rebuilt from the streamed events, which is exactly what followers were sent
    (the database copy may lag by one flush); the final event is appended to the stream for every follower."""
    streamed: list[dict] = []
    if shared_log.enabled():
        try:
            streamed = await shared_log.all_events(query_id)
        except (RedisError, OSError):
            logger.warning("cannot read the streamed events of an orphan", extra={"query_id": str(query_id)})
    query = await ChatQuery.objects.filter(pk=query_id).afirst()
    if query is None or any(event["type"] in events.TERMINAL_TYPES for event in streamed):
        return
    partial = "".join(event["content"] for event in streamed if event["type"] == "content")
    if len(partial) < len(query.response):
        partial = query.response
    message = ORPHAN_MESSAGE if status == ChatQuery.Status.ERROR else ""
    settled = await sync_to_async(_settle_orphan_row)(
        query_id, status=status, error=message, response=partial, response_tokens=estimate_tokens(partial)
    )
    if settled:
        logger.warning("settled an orphaned generation", extra={"query_id": str(query_id), "outcome": status})
        await sync_to_async(_settle_orphan_charges)(query_id, partial)
    if streamed:
        query = await ChatQuery.objects.select_related("chat").aget(pk=query_id)
        if query.status == ChatQuery.Status.ERROR:
            final = events.error(query.error or ORPHAN_MESSAGE, "instance_lost", query_id)
        else:
            final = events.complete(query.as_dict(), query.metadata.get("usage"))
        await shared_log.append(query_id, {**final, "seq": streamed[-1]["seq"] + 1})
        await shared_log.retire(query_id)


def _settle_orphan_row(query_id, **fields) -> int:
    """End the orphan's row, and index the answer it kept (chat/search.py), in one transaction."""
    with transaction.atomic():
        settled = ChatQuery.objects.filter(pk=query_id, status=ChatQuery.Status.STREAMING).update(**fields)
        if settled:
            search.index_answer(query_id, fields["response"])
    return settled


def _settle_orphan_charges(query_id, partial: str) -> None:
    """The charges the orphan's dead instance never settled, by the pipeline's own rule (charges.do_settle_turn):
    the generation returned when nothing was produced, charged when text was, with estimated tokens (the provider
    bills them, but its usage report never arrived). Anything else still held (a file never confirmed read, a web
    search in flight) delivered nothing and is given back."""
    query = ChatQuery.objects.get(pk=query_id)
    usage = {"inputTokens": estimate_tokens(query.prompt), "outputTokens": estimate_tokens(partial), "estimated": True}
    charged = False
    for charge in charges.held_charges(query_id, charges.GENERATION_KINDS):
        charged |= charges.do_settle_turn(
            charge,
            produced=bool(partial),
            model=AIModel.objects.filter(name=query.model).first(),
            input_tokens=usage["inputTokens"],
            output_tokens=usage["outputTokens"],
        )
    charges.do_release_all(charges.held_charges(query_id))
    if charged and partial:
        ChatQuery.objects.filter(pk=query_id).update(metadata={**query.metadata, "usage": usage})


async def _follow_shared(query_id: uuid.UUID, after_seq: int) -> AsyncIterator[dict]:
    try:
        async for event in shared_log.read_after(query_id, after_seq, events.TERMINAL_TYPES):
            yield event
        return
    except shared_log.Orphaned as orphaned:
        last = orphaned.last_seq
    await settle_orphan(query_id)
    try:
        async for event in shared_log.read_after(query_id, last, events.TERMINAL_TYPES):
            yield event
    except shared_log.Orphaned:  # the final event could not be appended: say it directly
        yield events.error(ORPHAN_MESSAGE, "instance_lost", query_id)


async def _shared_knows(query_id) -> bool:
    if not shared_log.enabled():
        return False
    try:
        return await shared_log.known(query_id)
    except (RedisError, OSError):
        logger.warning("Redis is unreachable; answering from the database", extra={"query_id": str(query_id)})
        return False


async def follow(query_id: uuid.UUID, after_seq: int = 0) -> AsyncIterator[dict]:
    """Every event of the turn after `after_seq`: replayed from memory (this instance), from Redis (another
    instance), or rebuilt from the saved query."""
    query_id = _as_uuid(query_id)
    after_seq = max(0, after_seq)  # a negative position would index from the end and replay events twice
    generation = _running.get(query_id)
    if generation is not None:
        async for event in generation.events_after(after_seq):
            yield event
        return
    if await _shared_knows(query_id):
        async for event in _follow_shared(query_id, after_seq):
            yield event
        return
    saved = ChatQuery.objects.select_related("chat").filter(pk=query_id)
    query = await saved.afirst()
    if query is None:
        yield events.error("That answer no longer exists.", "not_found", query_id)
        return
    if query.is_streaming:
        # Not running here, and no instance announces it in Redis: whoever ran it is gone.
        await settle_orphan(query_id)
        query = await saved.afirst()
    yield events.metadata(query)
    if query.metadata.get("sources"):
        yield events.sources(query.metadata["sources"])
    if query.response:
        yield events.content(query.response)
    if query.status == ChatQuery.Status.ERROR:
        yield events.error(query.error or "The answer failed.", "provider_error", query_id)
    else:
        yield events.complete(query.as_dict(), query.metadata.get("usage"))


async def follow_batches(query_id: uuid.UUID, after_seq: int = 0) -> AsyncIterator[list[dict]]:
    """`follow`, its events grouped as they became available (Generation.batches_after) when the turn runs here."""
    generation = _running.get(_as_uuid(query_id))
    if generation is None:
        async for event in follow(query_id, after_seq):
            yield [event]
        return
    async for batch in generation.batches_after(max(0, after_seq)):
        yield batch


async def stop_generation(query_id: uuid.UUID) -> bool:
    """Ask the turn to stop, wherever it runs; the partial answer is kept and marked stopped.
    False when nothing was running."""
    query_id = _as_uuid(query_id)
    generation = _running.get(query_id)
    if generation is not None and not generation.finished:
        generation.stop_requested.set()
        return True
    if shared_log.enabled():
        try:
            if await shared_log.is_alive(query_id):
                await shared_log.send_stop(query_id)
                return True
        except (RedisError, OSError):
            logger.warning("cannot reach Redis to stop a generation", extra={"query_id": str(query_id)})
            return False
    if await ChatQuery.objects.filter(pk=query_id, status=ChatQuery.Status.STREAMING).aexists():
        await settle_orphan(query_id, ChatQuery.Status.STOPPED)
        return True
    return False


async def sweep_orphans(older_than_seconds: float = 10) -> int:
    """Settle every `streaming` query that no live instance is generating; returns how many were settled."""
    cutoff = timezone.now() - dt.timedelta(seconds=older_than_seconds)
    settled = 0
    candidates = ChatQuery.objects.filter(status=ChatQuery.Status.STREAMING, created_at__lt=cutoff)
    async for query_id in candidates.values_list("pk", flat=True):
        if query_id in _running:
            continue
        if shared_log.enabled():
            try:
                if await shared_log.is_alive(query_id):
                    continue
            except (RedisError, OSError):
                return settled  # cannot tell the living from the dead: try again next round
        await settle_orphan(query_id)
        settled += 1
    return settled


async def run_sweeper() -> None:
    """Every instance runs this from start-up: nothing is left `streaming` forever by an instance that died."""
    while True:
        try:
            await sweep_orphans(older_than_seconds=max(10, settings.GENERATION_HEARTBEAT_SECONDS * 5))
        except Exception:
            logger.exception("sweeping orphaned generations failed")
        try:
            await sweep_temporary_chats(idle_seconds=settings.TEMPORARY_CHAT_MAX_IDLE_HOURS * 3600)
        except Exception:
            logger.exception("sweeping abandoned temporary chats failed")
        await asyncio.sleep(settings.GENERATION_SWEEP_SECONDS)


async def shutdown(grace_seconds: float | None = None) -> None:
    """SIGTERM: let running generations finish within the grace period, then stop the rest (partial answers are
    saved as `stopped`), so an instance never leaves an answer half-written when it is replaced."""
    grace = settings.GENERATION_SHUTDOWN_GRACE_SECONDS if grace_seconds is None else grace_seconds
    running = [g for g in _running.values() if not g.finished and g.task is not None]
    if not running:
        return
    logger.info("waiting for running generations before shutdown", extra={"generations": len(running)})
    _, pending = await asyncio.wait([g.task for g in running], timeout=grace)
    for generation in running:
        if generation.task in pending:
            generation.stop_requested.set()
    if pending:
        await asyncio.wait(pending, timeout=10)


async def begin_turn(user, payload, chat_id=None, files=()) -> ChatQuery:
    """Validate a turn request (raising ChatError), charge the quota, save its query row and start generating.

    The one entry point for every transport: socket, SSE and JSON all call this, then `follow`. `files` are
    (name, bytes) pairs sent with the request (the API's multipart bodies); the UI stages them as attachments.
    `payload` is the client's JSON object, or a TurnRequest a transport has parsed itself (the OpenAI API).
    """
    prepare = sync_to_async(_prepare_and_save)
    query, turn, charge = await prepare(user, payload, chat_id, files)
    generation = start_generation(query, turn, charge)
    await generation.announced.wait()
    return query


def _prepare_and_save(user, payload, chat_id, files=()):
    # Bad input (bad files included) is refused before the quota is touched; the quota is charged before any work.
    request = payload if isinstance(payload, TurnRequest) else parse_turn_request(payload, chat_id)
    turn = check_turn(user, request, files)
    # One transaction: the quota's charges (reserved naming the query about to be created, so none is updated
    # afterwards) and the chat and query rows commit together, or none of them does (a refusal or failure leaves
    # the quota as it was).
    query_id = uuid.uuid4()
    with transaction.atomic():
        charge, turn = do_reserve_turn(user, turn, chat_query_id=query_id)
        query = do_start_turn(user, turn, charge, query_id=query_id)
    return query, turn, charge  # query.chat is already loaded: do_start_turn created the query with it
