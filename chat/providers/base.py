"""The one interface every provider implements."""

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass

from core.sdk import ProviderError


@dataclass(frozen=True)
class Delta:
    """A piece of answer text."""

    text: str


@dataclass(frozen=True)
class Usage:
    """The final record of a generation: what the provider counted."""

    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class Waiting:
    """The provider is queueing this turn (e.g. the local model is busy)."""

    message: str


StreamItem = Delta | Usage | Waiting


@dataclass(frozen=True)
class Sampling:
    """Sampling controls a client asked for (the OpenAI-compatible API); None and () leave the provider's
    default. Every provider passes them on (or its nearest equivalent)."""

    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()


DEFAULT_SAMPLING = Sampling()


@dataclass(frozen=True)
class Completion:
    text: str
    usage: Usage


@dataclass(frozen=True)
class GeneratedImage:
    png: bytes
    revised_prompt: str = ""


class Provider(ABC):
    name: str = ""
    # The Sampling fields this provider passes on; the OpenAI-compatible API refuses the others for its models.
    sampling_controls: frozenset[str] = frozenset({"temperature", "top_p", "stop"})

    def unavailable_reason(self) -> str | None:
        """Why this provider cannot serve right now (missing key…), or None when it can."""
        return None

    @abstractmethod
    def stream(
        self, model_id: str, messages: list[dict], *, max_tokens: int, sampling: Sampling = DEFAULT_SAMPLING
    ) -> AsyncIterator[StreamItem]:
        """Yield Waiting/Delta items, then exactly one Usage. Closing the iterator stops the generation."""

    async def complete(
        self, model_id: str, messages: list[dict], *, max_tokens: int, sampling: Sampling = DEFAULT_SAMPLING
    ) -> Completion:
        parts: list[str] = []
        usage = Usage(0, 0)
        async for item in self.stream(model_id, messages, max_tokens=max_tokens, sampling=sampling):
            if isinstance(item, Delta):
                parts.append(item.text)
            elif isinstance(item, Usage):
                usage = item
        return Completion("".join(parts), usage)

    async def generate_image(self, model_id: str, prompt: str) -> GeneratedImage:
        raise ProviderError(f"{self.name} does not generate images.")

    async def health(self) -> bool:
        return self.unavailable_reason() is None


__all__ = [
    "DEFAULT_SAMPLING",
    "Completion",
    "Delta",
    "GeneratedImage",
    "Provider",
    "ProviderError",
    "Sampling",
    "StreamItem",
    "Usage",
    "Waiting",
]
