"""The one turn pipeline: an async generator of events, consumed (through chat.generations) by every transport."""

import asyncio
import contextvars
import logging
import time
from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache

from billing import ledger, quota
from chat import events
from chat.assist import BilledTo, name_chat, summarise, utility_model
from chat.grounding import FileCharges, Grounding, ingest_files, save_sources, search_the_files, search_the_web
from chat.images import image_urls, store_image
from chat.models import AIModel, Chat, ChatQuery
from chat.providers import ProviderError, get_provider, unavailable_reason
from chat.providers.base import Delta, Usage, Waiting
from chat.services import PreparedTurn, public_chat_cache_key, token_budget
from core import metrics
from core.tokens import estimate_message_tokens, fit_history

logger = logging.getLogger("querynox.turn")


class ResponseWriter:
    """Saves the answer as it grows, at most every RESPONSE_FLUSH_SECONDS, so a crash loses at most that much."""

    def __init__(self, query_id):
        self.query_id = query_id
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
        self, status: str, error: str = "", usage: Usage | None = None, answered_by=None, failures=(), images=()
    ) -> dict:
        """Write the final state once; a query that already left `streaming` is never overwritten."""
        query = await ChatQuery.objects.aget(pk=self.query_id)
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
        await ChatQuery.objects.filter(pk=self.query_id, status=ChatQuery.Status.STREAMING).aupdate(
            response=self.text, status=status, error=error, metadata=metadata, **changes
        )
        query = await ChatQuery.objects.aget(pk=self.query_id)
        return query.as_dict()


async def until_stopped(items: AsyncIterator, stop: asyncio.Event) -> AsyncIterator:
    """Yield from `items` until it ends or `stop` is set; on stop (or cancellation), close it and the provider
    stream behind it."""
    stop_waiter = asyncio.ensure_future(stop.wait())
    next_item = None
    try:
        while not stop.is_set():
            next_item = asyncio.ensure_future(anext(items))
            await asyncio.wait({next_item, stop_waiter}, return_when=asyncio.FIRST_COMPLETED)
            if not next_item.done():
                return
            try:
                yield next_item.result()
            except StopAsyncIteration:
                return
    finally:
        stop_waiter.cancel()
        if next_item is not None and not next_item.done():
            # The stream is mid-step; it cannot be closed until that step is cancelled.
            next_item.cancel()
            try:
                await next_item
            except (asyncio.CancelledError, StopAsyncIteration):
                pass
        await items.aclose()


async def load_history(query: ChatQuery, after=None) -> list[tuple[dict, dict]]:
    """Earlier turns of the chat that have an answer (after `after`, the end of the stored summary), oldest first."""
    earlier = ChatQuery.objects.filter(chat_id=query.chat_id, created_at__lt=query.created_at).exclude(response="")
    if after is not None:
        earlier = earlier.filter(created_at__gt=after)
    history = []
    async for past in earlier.order_by("created_at").only("prompt", "response", "created_at"):
        history.append(({"role": "user", "content": past.prompt}, {"role": "assistant", "content": past.response}))
        # Kept beside the message (and stripped before sending) so a summary can say up to when it covers.
        history[-1][0]["at"] = past.created_at
    return history


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
    """The requested model, then each configured fallback that is enabled and available, without repeats."""
    candidates = [requested]
    for name in settings.FALLBACK_MODELS:
        if name == requested.name:
            continue
        model = await AIModel.objects.filter(name=name, enabled=True, category=AIModel.Category.TEXT).afirst()
        if model is not None and unavailable_reason(model.provider) is None:
            candidates.append(model)
    return candidates


class _BuildContext:
    """Messages for one model: system prompt, grounding (file excerpts, web results), stored summary, the newest
    turns that fit, the new prompt.

    Grounding comes before history: older turns leave the window first. When they no longer fit the requested
    model, they are folded into the chat's stored summary once (by a cheap model), so later turns reuse it instead
    of summarising again."""

    def __init__(self, query: ChatQuery):
        self.query = query
        self.chat: Chat = query.chat
        self.system = [{"role": "system", "content": query.system_prompt}] if query.system_prompt else []
        self.current = {"role": "user", "content": query.prompt}
        self.grounding = Grounding(query.chat_id)
        self.turns: list[tuple[dict, dict]] = []

    async def load(self):
        self.turns = await load_history(self.query, self.chat.summary_until)

    def grounding_room(self, budget: int) -> int:
        """Tokens the grounding may take in `budget`: all but the system prompt, the summary and the prompt."""
        fixed = self.system + summary_exchange(self.chat.summary) + [self.current]
        return budget - sum(map(estimate_message_tokens, fixed))

    def for_budget(self, budget: int) -> tuple[list[dict], int]:
        grounding = self.grounding.fitted(self.grounding_room(budget))
        head = self.system + grounding.messages() + summary_exchange(self.chat.summary)
        return fit_history(head, self.turns, self.current, budget)

    async def fold_into_summary(self, dropped: int) -> None:
        model = await utility_model(settings.UTILITY_MODELS)
        if model is None:
            raise ProviderError("no summarising model is available")
        old, self.turns = self.turns[:dropped], self.turns[dropped:]
        summary = await summarise(model, self.chat.summary, old, BilledTo(self.chat.owner_id, self.query.pk))
        until = old[-1][0]["at"]
        await Chat.objects.filter(pk=self.chat.pk).aupdate(summary=summary, summary_until=until)
        self.chat.summary, self.chat.summary_until = summary, until


class _Settlement:
    """Settles the turn's quota reservation once: charged to the ledger when anything was produced, returned
    to the user when nothing was (the provider failed, or the user stopped before the first token)."""

    def __init__(self, query: ChatQuery, reservation):
        self.query = query
        self.reservation = reservation
        self.done = False

    async def __call__(self, writer: ResponseWriter, model: AIModel, usage: Usage | None) -> None:
        if self.done:
            return
        self.done = True
        if not writer.parts:
            if self.reservation is not None:
                await sync_to_async(quota.release)(self.reservation)
            return
        await sync_to_async(ledger.record)(
            self.query.chat.owner_id,
            "image" if model.category == AIModel.Category.IMAGE else "chat",
            chat_query_id=self.query.pk,
            model=model,
            input_tokens=usage.input_tokens if usage else 0,
            output_tokens=usage.output_tokens if usage else 0,
        )


async def run_turn(query: ChatQuery, turn: PreparedTurn, stop: asyncio.Event, reservation=None) -> AsyncIterator[dict]:
    """One user turn, from loading the chat to the saved answer. Never raises: failures become `error` events."""
    started = time.monotonic()
    model = turn.ai_model
    writer = ResponseWriter(query.id)
    settle = _Settlement(query, reservation)
    usage: Usage | None = None
    first_token_at: float | None = None
    outcome = ChatQuery.Status.ERROR
    failures: list[dict] = []
    file_charges = FileCharges(turn.files)
    try:
        yield events.status("Loading chat…")
        yield events.metadata(query)
        context = _BuildContext(query)
        answers_in_text = model.category != AIModel.Category.IMAGE
        if answers_in_text:
            await context.load()
            if query.web_search:
                async for event in search_the_web(query, context):
                    yield event
        # Files are read for image turns too: they stay in the chat for the questions that follow.
        async for event in ingest_files(query, turn.files, file_charges, stop):
            yield event
        if not answers_in_text:
            yield events.status("Generating image…")
            text, images = await _generate_image(query, model)
            writer.append(text)
            yield events.content(text)
            saved = await writer.finish(ChatQuery.Status.COMPLETE, answered_by=model, images=images)
            outcome = ChatQuery.Status.COMPLETE
            await settle(writer, model, None)
            yield events.complete(saved, None)
            return
        async for event in search_the_files(query, context, turn.context_budget):
            yield event
        context.grounding = context.grounding.fitted(context.grounding_room(turn.context_budget))
        sources = context.grounding.sources()
        if sources:
            await save_sources(query.id, sources)
            yield events.sources(sources)
        messages, dropped = context.for_budget(turn.context_budget)
        if dropped:
            yield events.status("Summarising the earlier conversation…")
            try:
                await context.fold_into_summary(dropped)
                messages, _ = context.for_budget(turn.context_budget)
            except ProviderError as exc:
                yield events.status(
                    f"Could not summarise the earlier conversation ({exc}); leaving its oldest part out."
                )

        candidates = await fallback_candidates(model)
        for position, candidate in enumerate(candidates):
            model = candidate
            provider = get_provider(candidate.provider)
            if candidate is not turn.ai_model:
                _, max_tokens, budget = token_budget(candidate)
                messages, _ = context.for_budget(budget)
            else:
                max_tokens = turn.max_tokens
            yield events.status("Generating…")
            try:
                if provider is None:
                    raise ProviderError(f"no provider is configured for {candidate.name}")
                stream = provider.stream(candidate.full_name, _wire(messages), max_tokens=max_tokens)
                async for item in until_stopped(stream, stop):
                    if isinstance(item, Delta):
                        if first_token_at is None:
                            first_token_at = time.monotonic()
                        writer.append(item.text)
                        yield events.content(item.text)
                        await writer.maybe_flush()
                    elif isinstance(item, Usage):
                        usage = item
                    elif isinstance(item, Waiting):
                        yield events.status(item.message)
                break
            except ProviderError as exc:
                # After the first token a fallback would splice two models' text into one answer: never.
                if writer.parts or position == len(candidates) - 1:
                    raise
                metrics.record_fallback(candidate.provider)
                failures.append({"model": candidate.name, "provider": candidate.provider, "error": str(exc)})
                following = candidates[position + 1]
                logger.warning(
                    "provider failed; falling back",
                    extra={"model": candidate.name, "provider": candidate.provider, "fallback": following.name},
                )
                yield events.status(f"{candidate.name} failed: {exc}. Answering with {following.name}.")

        outcome = ChatQuery.Status.STOPPED if stop.is_set() else ChatQuery.Status.COMPLETE
        saved = await writer.finish(outcome, usage=usage, answered_by=model, failures=failures)
        await settle(writer, model, usage)
        yield events.complete(saved, saved["metadata"].get("usage"))
        if settings.CHAT_NAMING and outcome == ChatQuery.Status.COMPLETE:
            _name_first_turn(query, writer.text)
    except ProviderError as exc:
        metrics.PROVIDER_ERRORS.labels(model.provider).inc()
        await writer.finish(ChatQuery.Status.ERROR, error=str(exc), usage=usage, answered_by=model, failures=failures)
        await settle(writer, model, usage)
        yield events.error(str(exc), "provider_error", query.id)
    except Exception:
        logger.exception("turn failed", extra={"query_id": str(query.id)})
        message = "Something went wrong while answering; the partial answer was kept."
        await writer.finish(ChatQuery.Status.ERROR, error=message, usage=usage)
        await settle(writer, model, usage)
        yield events.error(message, "internal_error", query.id)
    finally:
        if not settle.done:
            # Cancelled before any of the above: end the row here, or a sweeper would settle the same turn again.
            await writer.finish(ChatQuery.Status.STOPPED, usage=usage, answered_by=model)
            await settle(writer, model, usage)
        await file_charges.release_the_rest()
        await cache.adelete(public_chat_cache_key(query.chat_id))
        metrics.record_turn(model, outcome, first_token_at and first_token_at - started, usage, len(writer.parts))
        logger.info(
            "turn",
            extra={
                "query_id": str(query.id),
                "model": model.name,
                "provider": model.provider,
                "outcome": outcome,
                "fallbacks": len(failures),
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


def _name_first_turn(query: ChatQuery, answer: str) -> None:
    """After a chat's first answer, name the chat in the background: the answer is never delayed by it."""
    if query.chat.name != query.chat.title:
        return  # already named (or renamed)

    async def name():
        if await ChatQuery.objects.filter(chat_id=query.chat_id, created_at__lt=query.created_at).aexists():
            return
        billed_to = BilledTo(query.chat.owner_id, query.pk)
        await name_chat(query.chat_id, query.prompt, answer, settings.UTILITY_MODELS, billed_to)
        await cache.adelete(public_chat_cache_key(query.chat_id))

    task = asyncio.get_running_loop().create_task(name(), context=contextvars.Context())
    _naming_tasks.add(task)
    task.add_done_callback(_naming_tasks.discard)
