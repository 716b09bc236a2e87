"""The one turn pipeline: an async generator of events, consumed (through chat.generations) by every transport."""

import asyncio
import logging
import time
from collections.abc import AsyncIterator

from django.conf import settings
from django.core.cache import cache

from chat import events
from chat.models import ChatQuery
from chat.providers import ProviderError, get_provider
from chat.providers.base import Delta, Usage, Waiting
from chat.services import PreparedTurn, public_chat_cache_key
from chat.tokens import fit_history

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

    async def finish(self, status: str, error: str = "", usage: Usage | None = None) -> dict:
        """Write the final state once; a query that already left `streaming` is never overwritten."""
        query = await ChatQuery.objects.aget(pk=self.query_id)
        metadata = dict(query.metadata)
        if usage is not None:
            metadata["usage"] = {"inputTokens": usage.input_tokens, "outputTokens": usage.output_tokens}
        await ChatQuery.objects.filter(pk=self.query_id, status=ChatQuery.Status.STREAMING).aupdate(
            response=self.text, status=status, error=error, metadata=metadata
        )
        query = await ChatQuery.objects.aget(pk=self.query_id)
        return query.as_dict()


async def until_stopped(items: AsyncIterator, stop: asyncio.Event) -> AsyncIterator:
    """Yield from `items` until it ends or `stop` is set; on stop, close it (and the provider stream behind it)."""
    stop_waiter = asyncio.ensure_future(stop.wait())
    try:
        while not stop.is_set():
            next_item = asyncio.ensure_future(anext(items))
            await asyncio.wait({next_item, stop_waiter}, return_when=asyncio.FIRST_COMPLETED)
            if not next_item.done():
                next_item.cancel()
                try:
                    await next_item
                except (asyncio.CancelledError, StopAsyncIteration):
                    pass
                return
            try:
                yield next_item.result()
            except StopAsyncIteration:
                return
    finally:
        stop_waiter.cancel()
        await items.aclose()


async def load_history(query: ChatQuery) -> list[tuple[dict, dict]]:
    """Earlier turns of the chat that have an answer, oldest first."""
    history = []
    earlier = (
        ChatQuery.objects.filter(chat_id=query.chat_id, created_at__lt=query.created_at)
        .exclude(response="")
        .order_by("created_at")
        .only("prompt", "response")
    )
    async for past in earlier:
        history.append(({"role": "user", "content": past.prompt}, {"role": "assistant", "content": past.response}))
    return history


async def run_turn(query: ChatQuery, turn: PreparedTurn, stop: asyncio.Event) -> AsyncIterator[dict]:
    """One user turn, from loading the chat to the saved answer. Never raises: failures become `error` events."""
    started = time.monotonic()
    model = turn.ai_model
    writer = ResponseWriter(query.id)
    usage: Usage | None = None
    first_token_at: float | None = None
    outcome = ChatQuery.Status.ERROR
    try:
        yield events.status("Loading chat…")
        yield events.metadata(query)
        history = await load_history(query)
        system = [{"role": "system", "content": query.system_prompt}] if query.system_prompt else []
        messages = fit_history(system, history, {"role": "user", "content": query.prompt}, turn.context_budget)
        provider = get_provider(model.provider)
        if provider is None:
            raise ProviderError(f"No provider is configured for {model.name}.")
        yield events.status("Generating…")
        stream = provider.stream(model.full_name, messages, max_tokens=turn.max_tokens)
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
        outcome = ChatQuery.Status.STOPPED if stop.is_set() else ChatQuery.Status.COMPLETE
        saved = await writer.finish(outcome, usage=usage)
        yield events.complete(saved, saved["metadata"].get("usage"))
    except ProviderError as exc:
        await writer.finish(ChatQuery.Status.ERROR, error=str(exc), usage=usage)
        yield events.error(str(exc), "provider_error", query.id)
    except Exception:
        logger.exception("turn failed", extra={"query_id": str(query.id)})
        message = "Something went wrong while answering; the partial answer was kept."
        await writer.finish(ChatQuery.Status.ERROR, error=message, usage=usage)
        yield events.error(message, "internal_error", query.id)
    finally:
        await cache.adelete(public_chat_cache_key(query.chat_id))
        logger.info(
            "turn",
            extra={
                "query_id": str(query.id),
                "model": model.name,
                "provider": model.provider,
                "outcome": outcome,
                "input_tokens": usage.input_tokens if usage else None,
                "output_tokens": usage.output_tokens if usage else None,
                "first_token_ms": round((first_token_at - started) * 1000) if first_token_at else None,
                "duration_ms": round((time.monotonic() - started) * 1000),
            },
        )
