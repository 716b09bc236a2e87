"""The one turn pipeline: an async generator of events, consumed (through chat.generations) by every transport.

`run_turn` reads as its steps: load the chat, (the quota was reserved by begin_turn), the history (`history_for`:
the stored branch, or the client's conversation), web search and files (chat.grounding: each step yields what it
found), the messages built once from those (`TurnMessages`, summarising old turns when too long), the stream with
its fallback chain, the answer persisted as it grows, the charge settled (billing.charges), complete."""

import asyncio
import contextvars
import copy
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import transaction

from billing import charges
from billing.charges import Charge
from chat import events, search
from chat.assist import BilledTo, name_chat, summarise, utility_model
from chat.branches import HISTORY_COLUMNS, MAX_WALK_ROOM, history_walk, path_shape
from chat.grounding import (
    FileHits,
    Grounding,
    WebFindings,
    ingest_files,
    save_sources,
    search_the_files,
    search_the_web,
)
from chat.images import image_urls, store_image
from chat.models import AIModel, Chat, ChatQuery
from chat.providers import ProviderError, get_provider, unavailable_reason
from chat.providers.base import Delta, Usage, Waiting
from chat.providers.content import text_only, text_part
from chat.services import PreparedTurn, invalidate_public_chat, token_budget
from chat.vision import prepare_image
from core import metrics
from core.tokens import estimate_message_tokens, estimate_tokens, fit_history

logger = logging.getLogger("querynox.turn")


class ResponseWriter:
    """Saves the answer as it grows, at most every RESPONSE_FLUSH_SECONDS, so a crash loses at most that much.

    `query` is the row as the turn created it (its metadata kept up to date by the pipeline: the sources), so the
    final state is written without reading the row back."""

    def __init__(self, query: ChatQuery):
        self.query = query
        self.query_id = query.id
        self.parts: list[str] = []
        self._saved_length = 0
        self._last_flush = time.monotonic()

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def append(self, text: str) -> None:
        self.parts.append(text)

    async def maybe_flush(self) -> None:
        if time.monotonic() - self._last_flush >= settings.RESPONSE_FLUSH_SECONDS:
            await self.flush()

    async def flush(self) -> None:
        text = self.text
        self._last_flush = time.monotonic()
        if len(text) != self._saved_length:
            await ChatQuery.objects.filter(pk=self.query_id, status=ChatQuery.Status.STREAMING).aupdate(response=text)
            self._saved_length = len(text)

    async def finish(
        self,
        status: str,
        error: str = "",
        usage: Usage | None = None,
        answered_by=None,
        failures=(),
        images=(),
        settle: Callable[[], object] | None = None,
    ) -> dict:
        """Write the final state once; a query that already left `streaming` is never overwritten. `settle` (the
        turn's charge) runs in the same transaction, in the same hop to the sync thread."""
        query = copy.copy(self.query)
        metadata = dict(query.metadata)
        changes = {}
        if usage is not None:
            metadata["usage"] = {"inputTokens": usage.input_tokens, "outputTokens": usage.output_tokens}
        if failures:
            metadata["fallbacks"] = list(failures)
        if images:
            metadata["images"] = list(images)
        if answered_by is not None and answered_by.name != query.model:
            # The query records the model that actually answered; the one asked for stays in metadata.
            metadata["requestedModel"] = query.model
            changes["model"] = answered_by.name
        if answered_by is not None:
            metadata["provider"] = answered_by.provider
        changes.update(
            response=self.text,
            response_tokens=estimate_tokens(self.text),  # measured once, here: later turns' history reads it
            status=status,
            error=error,
            metadata=metadata,
        )
        if await sync_to_async(_write_final)(self.query_id, query.chat_id, changes, settle):
            # What was just written, without reading the row back (an UPDATE leaves updated_at as it was).
            for name, value in changes.items():
                setattr(query, name, value)
        else:  # it had already left `streaming` (stopped and settled elsewhere): the saved state is theirs
            query = await ChatQuery.objects.aget(pk=self.query_id)
        return query.as_dict()


def _write_final(query_id, chat_id, fields: dict, settle: Callable[[], object] | None = None) -> bool:
    """The answer's final state, its search index and the turn's charge settled (`settle`), in one transaction:
    the answer is indexed once, when it ends (complete, stopped or failed, with what was written), never at each
    flush while it grows. The public page's cached copy goes once it commits. False when the query had already
    left `streaming` (nothing written; the charge is still settled, or found settled: settling is idempotent)."""
    with transaction.atomic():
        written = bool(ChatQuery.objects.filter(pk=query_id, status=ChatQuery.Status.STREAMING).update(**fields))
        if written:
            search.index_answer(query_id, fields["response"])  # one UPDATE: the prompt's words are in
        if settle is not None:
            settle()
        invalidate_public_chat(chat_id)
    return written


_ITEM, _FAILED, _ENDED, _STOPPED = range(4)


async def until_stopped(items: AsyncIterator, stop: asyncio.Event) -> AsyncIterator:
    """Yield from `items` until it ends or `stop` is set; on stop (or cancellation), close it and the provider
    stream behind it.

    A task of its own reads `items` into a queue, and the stop is watched once per stream: what arrived together
    (one network read of several chunks) is yielded without a suspension per item, so a follower wakes once and
    writes it as one batch (Generation.batches_after), where racing each item against the stop cost a task and a
    wake-up per chunk."""
    queue: asyncio.Queue = asyncio.Queue()
    loop = asyncio.get_running_loop()

    async def read() -> None:
        try:
            async for item in items:
                queue.put_nowait((_ITEM, item))
        except Exception as exc:  # raised where the items are consumed, as if read there
            queue.put_nowait((_FAILED, exc))
        else:
            queue.put_nowait((_ENDED, None))

    reader = loop.create_task(read(), name="provider-stream")
    watcher = loop.create_task(stop.wait(), name="provider-stream-stop")
    watcher.add_done_callback(lambda _: queue.put_nowait((_STOPPED, None)))
    try:
        while not stop.is_set():
            kind, value = await queue.get()
            if kind == _FAILED:
                raise value
            if kind != _ITEM or stop.is_set():
                return
            yield value
    finally:
        watcher.cancel()
        if not reader.done():
            # Mid-read: cancelling the read closes the stream it was in (its finally blocks run).
            reader.cancel()
            try:
                await reader
            except asyncio.CancelledError:
                pass
        await items.aclose()


@dataclass(frozen=True)
class LoadedHistory:
    """What load_history read: the answered turns after the summary that may fit (oldest first, as message pairs),
    whether the stored summary applies, and the ids of older answered turns after it that were left unread
    because they cannot fit (oldest first; read only should they be summarised)."""

    turns: list[tuple[dict, dict]]
    summary_applies: bool
    unread: tuple = ()


def _exchange(past: ChatQuery) -> tuple[dict, dict]:
    user = {"role": "user", "content": past.prompt, "at": past.created_at}
    # "at" is kept beside the message (and stripped before sending) so a summary can say up to when it covers.
    return user, {"role": "assistant", "content": past.response}


async def load_history(query: ChatQuery, summary_until=None, room: int | None = None) -> LoadedHistory:
    """The turns of the branch on screen before `query` (its first turn down to `query`'s parent, never another
    version or branch) that have an answer, oldest first; and whether the stored summary (up to the turn created
    at `summary_until`) applies. It does when that turn is on this branch: then only the turns after it count.
    A summary made on another branch does not, and every turn of this branch counts.

    Only the newest turns that can fit in `room` tokens are read (chat.branches.history_walk: one query, from the
    parent up): a turn's cost follows its window, not the chat's length. Should older turns remain (the branch is
    longer than the window), their ids are returned unread, to be summarised."""
    if query.parent_id is None:
        return LoadedHistory([], summary_until is None)
    return await sync_to_async(_read_history)(query, summary_until, room)


def _read_history(query: ChatQuery, summary_until, room: int | None) -> LoadedHistory:
    room = MAX_WALK_ROOM if room is None else max(room, 0)
    # Plain rows of the columns it reads: model instances for a window's worth of turns cost more than the SQL.
    walk = history_walk(query.parent_id, room, summary_until, columns=HISTORY_COLUMNS, as_rows=True)
    read = list(walk.turns)
    if walk.reached_summary:
        return LoadedHistory([_exchange(past) for past in read[1:] if past.response], True)
    if walk.reached_first:
        return LoadedHistory([_exchange(past) for past in read if past.response], summary_until is None)
    # The window is full before the branch's first turn: whether the summary applies, and what it would have to
    # cover, depend on the turns above, read by shape only (no text) and only on this rare path.
    above = path_shape(read[0].parent_id, summary_until)
    applies = summary_until is None or above.reached_summary
    after_summary = above.turns[1:] if above.reached_summary else above.turns
    unread = tuple(past.pk for past in after_summary if past.response_tokens != 0)
    return LoadedHistory([_exchange(past) for past in read if past.response], applies, unread)


async def read_turns(query_ids) -> list[tuple[dict, dict]]:
    """The answered turns with these ids, as message pairs, in the order given."""
    rows = {row.pk: row async for row in ChatQuery.objects.filter(pk__in=list(query_ids))}
    return [_exchange(rows[pk]) for pk in query_ids if pk in rows and rows[pk].response]


def summary_exchange(summary: str) -> list[dict]:
    # The seed's framing: the summary arrives as a user message the assistant acknowledges.
    if not summary:
        return []
    return [
        {"role": "user", "content": f"Summary of our conversation so far: {summary}"},
        {"role": "assistant", "content": "Summary noted."},
    ]


def _wire(messages: list[dict]) -> list[dict]:
    return [{"role": m["role"], "content": m["content"]} for m in messages]


async def fallback_candidates(requested: AIModel) -> list[AIModel]:
    # Read only once the requested model has failed (stream_with_fallback): a turn that is answered asks for none.
    """The requested model, then each configured fallback that is enabled and available, without repeats."""
    candidates = [requested]
    names = [name for name in dict.fromkeys(settings.FALLBACK_MODELS) if name != requested.name]
    if not names:
        return candidates
    found = {
        model.name: model
        async for model in AIModel.objects.filter(name__in=names, enabled=True, category=AIModel.Category.TEXT)
    }
    for name in names:  # in the configured order, in one query
        model = found.get(name)
        if model is not None and unavailable_reason(model.provider) is None:
            candidates.append(model)
    return candidates


@dataclass(frozen=True)
class History:
    """The conversation before the prompt, as the answer will see it.

    `turns` are a stored chat's answered turns after its summary, oldest first: when they do not fit the model's
    window the oldest leave first, folded into `summary` when a cheap model can write one (stored on `chat`, so
    later turns reuse it instead of summarising again). `fixed` are messages sent whole and never shortened: the
    conversation a client sent itself (check_turn refused it if it could not fit)."""

    turns: tuple[tuple[dict, dict], ...] = ()
    summary: str = ""
    fixed: tuple[dict, ...] = ()
    chat: Chat | None = None  # where a summary of the oldest turns is stored
    # Older answered turns after the summary, oldest first, left unread because they cannot fit the window: they
    # leave it before any of `turns`, and are read only to be summarised.
    unread: tuple = ()

    def head(self) -> list[dict]:
        """What always goes before the turns: the summary exchange and the fixed messages."""
        return summary_exchange(self.summary) + list(self.fixed)

    def messages(self) -> list[dict]:
        """Every message of it, oldest first, role and text only (what the web search's query writer reads)."""
        return text_only(_wire([*self.fixed, *(message for turn in self.turns for message in turn)]))


async def history_for(query: ChatQuery, turn: PreparedTurn) -> History:
    """The history step, and the one place that decides where a turn's history comes from: the conversation the
    client sent (TurnRequest.conversation: the OpenAI-compatible API), or else the stored chat's branch up to the
    query (load_history)."""
    if turn.request.conversation is not None:
        return History(fixed=tuple(_wire(turn.request.conversation)))
    chat = query.chat
    # The most the turns could take: the budget less the system prompt and the prompt (grounding and the summary
    # only leave less), so no turn that could be sent is left unread.
    fixed = [{"content": query.system_prompt}] if query.system_prompt else []
    room = turn.context_budget - sum(map(estimate_message_tokens, [*fixed, {"content": query.prompt}]))
    loaded = await load_history(query, chat.summary_until, room)
    # A summary made on another branch is left out here; should this branch be too long, it is summarised afresh
    # (fold_into_summary), and that summary replaces the other.
    summary = chat.summary if loaded.summary_applies else ""
    return History(tuple(loaded.turns), summary, chat=chat, unread=loaded.unread)


@dataclass(frozen=True)
class TurnMessages:
    """What a turn's messages are made of, assembled once: the system prompt, the grounding (file excerpts, web
    results), the history, the new prompt. `for_budget` lays them out for one model's window.

    Grounding comes before history: older turns leave the window first. `images` are the prompt's attached images
    (chat/vision.py: prepared only when the requested model sees images), sent with it to a model that does;
    earlier turns' images are never sent again (their history is text)."""

    system: tuple[dict, ...]
    grounding: Grounding
    history: History
    current: dict
    images: tuple[dict, ...] = ()

    @classmethod
    def of(cls, query: ChatQuery, history: History, grounding: Grounding, images=()) -> "TurnMessages":
        system = ({"role": "system", "content": query.system_prompt},) if query.system_prompt else ()
        return cls(system, grounding, history, {"role": "user", "content": query.prompt}, tuple(images))

    def prompt_message(self, vision: bool = True) -> dict:
        """The new prompt: with its images (before the text, as the providers advise) for a model that sees them."""
        if not (vision and self.images):
            return self.current
        text = self.current["content"]  # none with an image alone (the OpenAI-compatible API allows it)
        return {**self.current, "content": [*self.images, *([text_part(text)] if text.strip() else [])]}

    def grounding_room(self, budget: int) -> int:
        """Tokens the grounding may take in `budget`: all but the system prompt, the history's head and the prompt."""
        fixed = [*self.system, *self.history.head(), self.prompt_message()]
        return budget - sum(map(estimate_message_tokens, fixed))

    def room_for_files(self, budget: int) -> int:
        """What is left for file excerpts once the web results have their place."""
        return self.grounding_room(budget) - self.grounding.tokens()

    def with_hits(self, hits: list) -> "TurnMessages":
        return replace(self, grounding=replace(self.grounding, hits=list(hits)))

    def fitted(self, budget: int) -> "TurnMessages":
        """The same, its grounding shortened to what `budget` leaves it (the sources then shown are these)."""
        return replace(self, grounding=self.grounding.fitted(self.grounding_room(budget)))

    def for_budget(self, budget: int, vision: bool = True) -> tuple[list[dict], int]:
        """The messages for a window of `budget` tokens, and how many of the oldest turns were left out. With
        `vision` false (a model that cannot see images: a fallback, say), every image is left out: text only."""
        grounding = self.grounding.fitted(self.grounding_room(budget))
        head = [*self.system, *grounding.messages(), *self.history.head()]
        messages, dropped = fit_history(head, list(self.history.turns), self.prompt_message(vision), budget)
        return (messages if vision else text_only(messages)), dropped + len(self.history.unread)


@dataclass(frozen=True)
class ShownImage:
    """One of the turn's images, ready to be shown to the model (`part`: chat.providers.content)."""

    sha256: str
    part: dict


async def images_for_model(turn: PreparedTurn) -> AsyncIterator[ShownImage | dict]:
    """The images step, for a model that sees images: each of the turn's images as an image part (chat/vision.py),
    or a status saying it could not be (the model then reads its OCR text only, like any other). A regenerated or
    edited turn shows its query's images again (`images_again`)."""
    for upload in [*(file.upload for file in turn.files), *turn.images_again]:
        if upload.kind != "image":
            continue
        try:
            yield ShownImage(upload.sha256, await sync_to_async(prepare_image)(upload))
        except Exception:  # noqa: BLE001 - one image that cannot be re-encoded must not end the turn
            logger.warning("could not prepare an image for the model", exc_info=True)
            yield events.status(f"{upload.name} could not be shown to the model; it will read its text only.")


def grounding_of(query: ChatQuery, web: WebFindings | None, files: FileHits | None) -> Grounding:
    grounding = Grounding(query.chat_id)
    if web is not None:
        grounding = replace(grounding, web=list(web.results), web_query=web.query)
    if files is not None:
        grounding = replace(grounding, hits=list(files.hits))
    return grounding


async def fold_into_summary(messages: TurnMessages, dropped: int, billed_to: BilledTo) -> TurnMessages:
    """The same messages with the `dropped` oldest turns folded into the history's summary by a cheap model, and
    that summary stored on the chat; raises ProviderError when no summary could be written."""
    history = messages.history
    if history.chat is None or not dropped:
        raise ProviderError("this conversation cannot be summarised")
    model = await utility_model(settings.UTILITY_MODELS)
    if model is None:
        raise ProviderError("no summarising model is available")
    read_dropped = dropped - len(history.unread)
    old = [*await read_turns(history.unread), *history.turns[:read_dropped]]
    kept = history.turns[read_dropped:]
    if not old:
        raise ProviderError("there is nothing to summarise")
    summary = await summarise(model, history.summary, list(old), billed_to)
    until = old[-1][0]["at"]
    await Chat.objects.filter(pk=history.chat.pk).aupdate(summary=summary, summary_until=until)
    history.chat.summary, history.chat.summary_until = summary, until
    return replace(messages, history=replace(history, turns=kept, summary=summary, unread=()))


async def fit_to_window(query: ChatQuery, messages: TurnMessages, budget: int) -> AsyncIterator[dict | TurnMessages]:
    """The build step's last part: when the history does not fit the requested model, summarise its oldest turns
    (or, when that fails, leave them out). Yields status events, then the messages to answer from."""
    _, dropped = messages.for_budget(budget)
    if dropped:
        yield events.status("Summarising the earlier conversation…")
        try:
            messages = await fold_into_summary(messages, dropped, BilledTo(query.chat.owner_id, query.pk))
        except ProviderError as exc:
            yield events.status(f"Could not summarise the earlier conversation ({exc}); leaving its oldest part out.")
    yield messages


@dataclass
class TurnProgress:
    """What the turn has done so far, kept for its end however it ends: the answer saved, the charge settled
    once, the metrics and the log line."""

    writer: ResponseWriter
    model: AIModel  # the model answering: the requested one, or a fallback once the chain moved on
    charge: Charge | None
    started: float = field(default_factory=time.monotonic)
    usage: Usage | None = None
    first_token_at: float | None = None
    outcome: str = ChatQuery.Status.ERROR
    failures: list[dict] = field(default_factory=list)
    settled: bool = False


async def end_turn(progress: TurnProgress, status: str, **final) -> dict:
    """Write the answer's final state (ResponseWriter.finish with `final`) and settle the turn's charge once
    (billing.charges.do_settle_turn: charged with the provider's usage when anything was produced, given back when
    nothing was), in one hop to the sync thread and one transaction. Returns the saved query's dict."""
    settle = None
    if not progress.settled and progress.charge is not None:
        usage = progress.usage
        settle = functools.partial(
            charges.do_settle_turn,
            progress.charge,
            produced=bool(progress.writer.parts),
            model=progress.model,
            input_tokens=usage.input_tokens if usage else 0,
            output_tokens=usage.output_tokens if usage else 0,
        )
    saved = await progress.writer.finish(status, settle=settle, **final)
    progress.settled = True  # only once it committed: a failed attempt is settled by the next (idempotent)
    return saved


async def answer_with_image(query: ChatQuery, progress: TurnProgress) -> AsyncIterator[dict]:
    """An image model's turn: generate, store, save, settle, complete."""
    yield events.status("Generating image…")
    text, images = await _generate_image(query, progress.model)
    progress.writer.append(text)
    yield events.content(text)
    saved = await end_turn(progress, ChatQuery.Status.COMPLETE, answered_by=progress.model, images=images)
    progress.outcome = ChatQuery.Status.COMPLETE
    yield events.complete(saved, None)


async def stream_with_fallback(
    turn: PreparedTurn, messages: TurnMessages, stop: asyncio.Event, progress: TurnProgress
) -> AsyncIterator[dict]:
    """Stream the answer from the requested model, falling back along the configured chain when a provider fails
    before its first token; raises the last ProviderError when every candidate failed."""
    candidates = [turn.ai_model]  # the fallbacks are looked up once it fails
    position = -1
    while position + 1 < len(candidates):
        position += 1
        candidate = candidates[position]
        progress.model = candidate
        if candidate is turn.ai_model:
            max_tokens, budget = turn.max_tokens, turn.context_budget
        else:
            _, max_tokens, budget = token_budget(candidate)
            if turn.request.max_tokens is not None:
                max_tokens = min(max_tokens, turn.request.max_tokens)
        yield events.status("Generating…")
        # A fallback that cannot see images gets text only (the images' OCR text still reaches it as file excerpts).
        wire, _ = messages.for_budget(budget, vision=candidate.vision)
        try:
            async for event in stream_answer(candidate, wire, max_tokens, turn, stop, progress):
                yield event
            return
        except ProviderError as exc:
            # After the first token a fallback would splice two models' text into one answer: never.
            if progress.writer.parts:
                raise
            if position == 0:
                candidates = await fallback_candidates(turn.ai_model)
            if position == len(candidates) - 1:
                raise
            metrics.record_fallback(candidate.provider)
            progress.failures.append({"model": candidate.name, "provider": candidate.provider, "error": str(exc)})
            following = candidates[position + 1]
            logger.warning(
                "provider failed; falling back",
                extra={"model": candidate.name, "provider": candidate.provider, "fallback": following.name},
            )
            # Provider messages end with their own period ("try again shortly."): one, not two.
            yield events.status(f"{candidate.name} failed: {str(exc).rstrip('.')}. Answering with {following.name}.")


async def stream_answer(
    model: AIModel, messages: list[dict], max_tokens: int, turn: PreparedTurn, stop: asyncio.Event, progress
) -> AsyncIterator[dict]:
    """One model's streamed answer, persisted as it grows, until it ends or the user stops it."""
    provider = get_provider(model.provider)
    if provider is None:
        raise ProviderError(f"no provider is configured for {model.name}")
    stream = provider.stream(model.full_name, _wire(messages), max_tokens=max_tokens, sampling=turn.request.sampling)
    async for item in until_stopped(stream, stop):
        if isinstance(item, Delta):
            if progress.first_token_at is None:
                progress.first_token_at = time.monotonic()
            progress.writer.append(item.text)
            yield events.content(item.text)
            await progress.writer.maybe_flush()
        elif isinstance(item, Usage):
            progress.usage = item
        elif isinstance(item, Waiting):
            yield events.status(item.message)


async def run_turn(
    query: ChatQuery, turn: PreparedTurn, stop: asyncio.Event, charge: Charge | None = None
) -> AsyncIterator[dict]:
    """One user turn, from loading the chat to the saved answer, step by step as ARCHITECTURE.md lists them.

    The chat was loaded or created and the quota reserved (`charge`, with the files' charges on `turn.files`) by
    chat.generations.begin_turn, before this query row existed. Never raises: failures become `error` events."""
    progress = TurnProgress(ResponseWriter(query), turn.ai_model, charge)
    try:
        yield events.status("Loading chat…")
        yield events.metadata(query)
        if turn.ai_model.category == AIModel.Category.IMAGE:
            # Files are read for image turns too: they stay in the chat for the questions that follow.
            async for event in ingest_files(query, turn.files, stop):
                yield event
            async for event in answer_with_image(query, progress):
                yield event
            return

        history = await history_for(query, turn)

        web = None
        if query.web_search:
            async for item in search_the_web(query, history.messages()):
                if isinstance(item, WebFindings):
                    web = item
                else:
                    yield item

        images: list[ShownImage] = []
        if turn.ai_model.vision:
            async for item in images_for_model(turn):
                if isinstance(item, ShownImage):
                    images.append(item)
                else:
                    yield item
        seen = frozenset(image.sha256 for image in images)
        async for event in ingest_files(query, turn.files, stop, seen_as_images=seen):
            yield event
        messages = TurnMessages.of(query, history, grounding_of(query, web, None), [image.part for image in images])
        if _may_have_files(query, turn):
            async for item in search_the_files(query, messages.room_for_files(turn.context_budget)):
                if isinstance(item, FileHits):
                    messages = messages.with_hits(item.hits)
                else:
                    yield item

        messages = messages.fitted(turn.context_budget)
        sources = messages.grounding.sources()
        if sources:
            await save_sources(query.id, sources)
            query.metadata = {**query.metadata, "sources": sources}  # as saved: the final write keeps them
            yield events.sources(sources)
        async for item in fit_to_window(query, messages, turn.context_budget):
            if isinstance(item, TurnMessages):
                messages = item
            else:
                yield item

        async for event in stream_with_fallback(turn, messages, stop, progress):
            yield event

        progress.outcome = ChatQuery.Status.STOPPED if stop.is_set() else ChatQuery.Status.COMPLETE
        saved = await end_turn(
            progress, progress.outcome, usage=progress.usage, answered_by=progress.model, failures=progress.failures
        )
        yield events.complete(saved, saved["metadata"].get("usage"))
        if settings.CHAT_NAMING and progress.outcome == ChatQuery.Status.COMPLETE and not query.chat.unlisted:
            _name_first_turn(query, progress.writer.text, progress.model, starts_chat=_starts_chat(turn))
    except ProviderError as exc:
        metrics.PROVIDER_ERRORS.labels(progress.model.provider).inc()
        await end_turn(
            progress,
            ChatQuery.Status.ERROR,
            error=str(exc),
            usage=progress.usage,
            answered_by=progress.model,
            failures=progress.failures,
        )
        yield events.error(str(exc), "provider_error", query.id)
    except Exception:
        logger.exception("turn failed", extra={"query_id": str(query.id)})
        message = "Something went wrong while answering; the partial answer was kept."
        await end_turn(progress, ChatQuery.Status.ERROR, error=message, usage=progress.usage)
        yield events.error(message, "internal_error", query.id)
    finally:
        if not progress.settled:
            # Cancelled before any of the above: end the row here, or a sweeper would settle the same turn again.
            # (The public page's cached copy goes with it: _write_final.)
            await end_turn(progress, ChatQuery.Status.STOPPED, usage=progress.usage, answered_by=progress.model)
        # The files' charges the turn never reached (it stopped or failed first); those settled stay so.
        if turn.files:
            await sync_to_async(charges.do_release_all)([file.charge for file in turn.files])
        _log_turn(query, progress)


def _log_turn(query: ChatQuery, progress: TurnProgress) -> None:
    model, usage, first_token_at, started = progress.model, progress.usage, progress.first_token_at, progress.started
    metrics.record_turn(
        model, progress.outcome, first_token_at and first_token_at - started, usage, len(progress.writer.parts)
    )
    logger.info(
        "turn",
        extra={
            "query_id": str(query.id),
            "model": model.name,
            "provider": model.provider,
            "outcome": progress.outcome,
            "fallbacks": len(progress.failures),
            "input_tokens": usage.input_tokens if usage else None,
            "output_tokens": usage.output_tokens if usage else None,
            "first_token_ms": round((first_token_at - started) * 1000) if first_token_at else None,
            "duration_ms": round((time.monotonic() - started) * 1000),
        },
    )


async def _generate_image(query: ChatQuery, model: AIModel) -> tuple[str, list[dict]]:
    provider = get_provider(model.provider)
    if provider is None:
        raise ProviderError(f"no provider is configured for {model.name}")
    image = await provider.generate_image(model.full_name, query.prompt)
    try:
        key = await sync_to_async(store_image)(query.chat.owner_id, image.png)
    except ValueError as exc:
        raise ProviderError(str(exc)) from None
    return image.revised_prompt or "Here is your image.", [image_urls(key)]


_naming_tasks: set[asyncio.Task] = set()


def _may_have_files(query: ChatQuery, turn: PreparedTurn) -> bool:
    """Whether the chat may have documents to search: a chat this turn created, without files or an assistant
    (whose collections it would search), has none, and costs no query to say so."""
    return bool(turn.files) or not _starts_chat(turn) or query.chat.assistant_id is not None


def _starts_chat(turn: PreparedTurn) -> bool:
    """The turn created its chat, and nothing came before it in there (no client conversation stored first)."""
    return turn.chat is None and not turn.request.conversation


def _name_first_turn(query: ChatQuery, answer: str, answered_by: AIModel, starts_chat: bool = False) -> None:
    """After a chat's first answer, name the chat in the background: the answer is never delayed by it.
    `starts_chat`: known to be the chat's first turn (else the chat is asked whether a turn came before)."""
    if query.chat.name != query.chat.title:
        return  # already named (or renamed)

    async def name():
        earlier = ChatQuery.objects.filter(chat_id=query.chat_id, created_at__lt=query.created_at)
        if not starts_chat and await earlier.aexists():
            return
        billed_to = BilledTo(query.chat.owner_id, query.pk)
        # The model that just answered is the namer when it is the first utility model (no catalog read).
        first = settings.UTILITY_MODELS[:1] == [answered_by.name]
        known = answered_by if first and answered_by.enabled and answered_by.category == AIModel.Category.TEXT else None
        await name_chat(query.chat_id, query.prompt, answer, settings.UTILITY_MODELS, billed_to, model=known)

    task = asyncio.get_running_loop().create_task(name(), context=contextvars.Context())
    _naming_tasks.add(task)
    task.add_done_callback(_naming_tasks.discard)
