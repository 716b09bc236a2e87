"""Shared test helpers: a scripted provider behind the real provider interface, and catalog/user setup.

Tests import it from here; the fixtures using it are in testsupport/fixtures.py."""

import asyncio

from chat.models import AIModel
from chat.providers import register_provider, unregister_provider
from chat.providers.base import DEFAULT_SAMPLING, Delta, GeneratedImage, Provider, ProviderError, Usage, Waiting
from testsupport.png import solid_png

SCRIPTED_PROVIDER = "scripted"
SCRIPTED_MODEL = "scripted-model"


class ScriptedProvider(Provider):
    """Answers with a scripted list of tokens, optionally slowly or failing; records what it was asked.

    `gate`, when set, holds the stream before token number `gate_at` until the test releases it, so a test
    can act (stop, disconnect, reload) at an exact point of the answer.
    """

    name = SCRIPTED_PROVIDER

    def __init__(self):
        self.reset()

    def reset(self):
        self.tokens = ["Hello", ", ", "world", "!"]
        self.delay = 0.0
        self.fail_before_first = None  # message: raise before any token
        self.fail_after = None  # (n, message): raise after n tokens
        self.waiting_message = None
        self.gate: asyncio.Event | None = None
        self.gate_at = 0
        self.calls: list[dict] = []
        self.closed_early = 0
        self.tokens_sent = 0
        self.image_png = solid_png()

    async def generate_image(self, model_id, prompt):
        self.calls.append({"model_id": model_id, "prompt": prompt})
        if self.fail_before_first:
            raise ProviderError(self.fail_before_first)
        return GeneratedImage(self.image_png, revised_prompt=f"A picture of {prompt}")

    def hold_at(self, token_index: int) -> asyncio.Event:
        self.gate = asyncio.Event()
        self.gate_at = token_index
        return self.gate

    async def stream(self, model_id, messages, *, max_tokens, sampling=DEFAULT_SAMPLING):
        self.calls.append({"model_id": model_id, "messages": messages, "max_tokens": max_tokens, "sampling": sampling})
        finished = False
        try:
            if self.waiting_message:
                yield Waiting(self.waiting_message)
            if self.fail_before_first:
                raise ProviderError(self.fail_before_first)
            for index, token in enumerate(self.tokens):
                if self.gate is not None and index == self.gate_at:
                    await self.gate.wait()
                if self.fail_after and index == self.fail_after[0]:
                    raise ProviderError(self.fail_after[1])
                if self.delay:
                    await asyncio.sleep(self.delay)
                self.tokens_sent += 1
                yield Delta(token)
            yield Usage(input_tokens=sum(len(m["content"]) for m in messages), output_tokens=len(self.tokens))
            finished = True
        finally:
            if not finished:
                self.closed_early += 1


def install_scripted_model(
    context_limit: int = 4096, name: str = SCRIPTED_MODEL, provider_name: str = SCRIPTED_PROVIDER
) -> tuple[ScriptedProvider, AIModel]:
    provider = ScriptedProvider()
    register_provider(provider_name, provider)
    model, _ = AIModel.objects.update_or_create(
        name=name,
        defaults={"full_name": f"{name}-v1", "provider": provider_name, "context_limit": context_limit},
    )
    return provider, model


def uninstall_scripted_model(provider_name: str = SCRIPTED_PROVIDER) -> None:
    unregister_provider(provider_name)


# --- the provider emulator (testsupport/emulator.py): real SDKs over loopback HTTP -------------------------------

EMULATOR_KEYS = {
    "OPENAI_API_KEY": "sk-emulator-openai",
    "CLAUDE_API_KEY": "sk-emulator-anthropic",
    "GROQ_API_KEY": "gsk-emulator-groq",
    "GEMINI_API_KEY": "emulator-gemini-key",
    "OPENROUTER_API_KEY": "sk-or-emulator",
}


# One conversation for every provider test: a system prompt, a finished exchange and a new question.
PROVIDER_TEST_SYSTEM = "You answer in one short sentence."
PROVIDER_TEST_MESSAGES = [
    {"role": "system", "content": PROVIDER_TEST_SYSTEM},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Italy?"},
]


def registered_provider(name: str, expected_class):
    """The registry's provider `name`, checked to be the module under test."""
    from chat.providers import get_provider

    provider = get_provider(name)
    assert isinstance(provider, expected_class), provider
    return provider


def emulator_settings(url: str) -> dict:
    """Settings that point every cloud provider at the emulator, with timeouts and retry waits short enough for
    tests (a read timeout of 0.3 s, two SDK retries, at most 10 ms between attempts)."""
    return {
        **EMULATOR_KEYS,
        "OPENAI_BASE_URL": f"{url}/v1",
        "CLAUDE_BASE_URL": url,
        "GROQ_BASE_URL": url,
        "GEMINI_BASE_URL": url,
        "OPENROUTER_BASE_URL": f"{url}/api/v1",
        "OPENAI_COMPATIBLE_BASE_URL": f"{url}/v1",
        "OPENAI_COMPATIBLE_API_KEY": "",
        "PROVIDER_CONNECT_TIMEOUT": 1.0,
        "PROVIDER_READ_TIMEOUT": 0.3,
        "PROVIDER_MAX_RETRIES": 2,
        "PROVIDER_RETRY_MAX_WAIT": 0.01,
        "PROVIDER_HEALTH_TIMEOUT": 1.0,
    }


async def drain(stream) -> tuple[list[str], Usage | None, ProviderError | None]:
    """Consume a provider stream: the delta texts, the final usage, and the ProviderError it ended with (if any)."""
    deltas: list[str] = []
    usage = None
    try:
        async for item in stream:
            if isinstance(item, Delta):
                deltas.append(item.text)
            elif isinstance(item, Usage):
                usage = item
    except ProviderError as exc:
        return deltas, usage, exc
    return deltas, usage, None


async def generations_finished(timeout: float = 15) -> None:
    """Wait until every generation this process started has ended (its task, and what runs after it)."""
    from chat import generations

    tasks = [g.task for g in list(generations._running.values()) if g.task is not None and not g.task.done()]
    if tasks:
        await asyncio.wait(tasks, timeout=timeout)
