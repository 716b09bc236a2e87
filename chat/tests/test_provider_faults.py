"""The fault matrix: every emulated fault × streaming / non-streaming × every cloud provider, through the real SDKs.

What the pipeline relies on: a failure is always a ProviderError with a user-safe message naming the provider;
it comes before any delta when the provider failed before answering (so a fallback may take over) and after
exactly the deltas that arrived when the answer broke off mid-way (which is never retried: the text is out);
transient failures are retried by the SDK (PROVIDER_MAX_RETRIES) and succeed when the next attempt does.
Settings from testsupport.scripted.emulator_settings: read timeout 0.3 s, 2 retries, ≤10 ms between attempts.
"""

import asyncio

import pytest

from chat.pipeline import until_stopped
from chat.providers import get_provider
from chat.providers.base import Delta, ProviderError, Usage
from testsupport.scripted import drain

MODELS = {
    "openai": "gpt-3.5-turbo",
    "anthropic": "claude-3-5-sonnet-20240620",
    "groq": "llama-3.3-70b-versatile",
    "gemini": "gemini-1.5-flash",
    "openrouter": "openai/gpt-oss-120b",
    "openai_compatible": "local-model",
}
LABELS = {
    "openai": "OpenAI",
    "anthropic": "Anthropic",
    "groq": "Groq",
    "gemini": "Gemini",
    "openrouter": "OpenRouter",
    "openai_compatible": "the OpenAI-compatible server",
}
REPLY = "one two three four five"
MESSAGES = [{"role": "system", "content": "Count."}, {"role": "user", "content": "Count to five."}]
ATTEMPTS = 3  # the first try and PROVIDER_MAX_RETRIES=2 retries

providers = pytest.mark.parametrize("name", list(MODELS))
# Timeouts cost real time (0.3 s each): run those for each SDK once; OpenRouter and the OpenAI-compatible server
# are the openai SDK with another base URL, so they time out exactly as OpenAI does.
sdks = pytest.mark.parametrize("name", ["openai", "anthropic", "groq", "gemini"])
modes = pytest.mark.parametrize("mode", ["stream", "complete"])


async def ask(name: str, mode: str) -> tuple[list[str], Usage | None, ProviderError | None]:
    """One request in `mode`: the deltas (for `complete`, its text as one piece), the usage and the error."""
    provider = get_provider(name)
    if mode == "stream":
        return await drain(provider.stream(MODELS[name], MESSAGES, max_tokens=64))
    try:
        completion = await provider.complete(MODELS[name], MESSAGES, max_tokens=64)
    except ProviderError as exc:
        return [], None, exc
    return [completion.text], completion.usage, None


def subject(name: str) -> str:
    return LABELS[name][:1].upper() + LABELS[name][1:]


@pytest.fixture
def faulty(emulator):
    emulator.configure(reply=REPLY)
    return emulator


# --- failures before the first byte: retried, then reported before any delta ------------------------------------


@providers
@modes
async def test_http_500_is_retried_then_reported_before_any_delta(faulty, name, mode):
    faulty.configure(fault="http_500")

    deltas, _, error = await ask(name, mode)

    assert deltas == []
    assert str(error) == f"{subject(name)} had a server error (HTTP 500); try again shortly."
    assert (error.status_code, error.retryable) == (500, True)
    assert len(faulty.requests) == ATTEMPTS


@providers
@modes
async def test_http_429_is_retried_then_reported_before_any_delta(faulty, name, mode):
    faulty.configure(fault={"kind": "http_429", "retry_after": 0.01})

    deltas, _, error = await ask(name, mode)

    assert deltas == []
    assert str(error) == f"{subject(name)} is rate-limiting requests right now; try again shortly."
    assert (error.status_code, error.retryable) == (429, True)
    assert len(faulty.requests) == ATTEMPTS


@providers
@modes
async def test_a_connection_dropped_before_the_first_byte_is_retried_then_reported(faulty, name, mode):
    faulty.configure(fault="drop")

    deltas, _, error = await ask(name, mode)

    assert deltas == []
    assert str(error) == f"The connection to {LABELS[name]} closed before an answer arrived."
    assert error.retryable is True
    assert len(faulty.requests) == ATTEMPTS


@sdks
@modes
async def test_a_first_byte_slower_than_the_read_timeout_is_a_timeout(faulty, settings, name, mode):
    settings.PROVIDER_MAX_RETRIES = 0  # one 0.3 s timeout is enough to show it; retries are tested below
    faulty.configure(fault={"kind": "slow_first_byte", "delay": 2.0})

    deltas, _, error = await ask(name, mode)

    assert deltas == []
    assert str(error) == f"{subject(name)} did not answer in time."
    assert error.retryable is True
    assert faulty.wait_closed_early(1, timeout=2)  # the client gave up and closed the connection


# --- failures in the middle of the answer ------------------------------------------------------------------------


@providers
async def test_a_stream_cut_mid_way_fails_after_the_deltas_that_arrived_and_is_not_retried(faulty, name):
    faulty.configure(fault={"kind": "cut", "after_chunks": 2})

    deltas, usage, error = await ask(name, "stream")

    assert deltas == ["one", " two"]
    assert usage is None
    assert str(error) == f"The connection to {LABELS[name]} broke off mid-answer."
    assert error.retryable is True
    assert len(faulty.requests) == 1


@providers
async def test_a_stream_cut_just_before_its_end_is_still_an_error(faulty, name):
    faulty.configure(fault={"kind": "cut", "after_chunks": 5})  # every word arrives; the closing events do not

    deltas, usage, error = await ask(name, "stream")

    assert "".join(deltas) == REPLY
    assert usage is None
    assert str(error) == f"The connection to {LABELS[name]} broke off mid-answer."


@providers
async def test_a_stream_that_ends_cleanly_but_unfinished_is_an_error(faulty, name):
    faulty.configure(fault={"kind": "truncate", "after_chunks": 3})  # a clean end of body, no finish event

    deltas, usage, error = await ask(name, "stream")

    assert deltas == ["one", " two", " three"]
    assert usage is None
    assert str(error) == f"{subject(name)}'s answer ended before it was finished."
    assert error.retryable is True


@providers
async def test_a_response_body_cut_mid_way_is_retried_then_reported(faulty, name):
    faulty.configure(fault="cut")  # non-streaming: half the JSON body, then the connection closes

    deltas, _, error = await ask(name, "complete")

    assert deltas == []
    assert str(error) == f"The connection to {LABELS[name]} closed before an answer arrived."
    assert len(faulty.requests) == ATTEMPTS


@providers
@modes
async def test_a_malformed_chunk_fails_after_the_deltas_before_it(faulty, name, mode):
    faulty.configure(fault={"kind": "malformed", "after_chunks": 2})

    deltas, usage, error = await ask(name, mode)

    assert deltas == (["one", " two"] if mode == "stream" else [])
    assert usage is None
    assert str(error) == f"{subject(name)} sent a malformed response."
    assert len(faulty.requests) == 1  # a 200 with a bad body is not retried


@sdks
async def test_a_stream_that_stalls_longer_than_the_read_timeout_fails_mid_answer(faulty, name):
    faulty.configure(fault={"kind": "stall", "after_chunks": 2, "delay": 2.0})

    deltas, usage, error = await ask(name, "stream")

    assert deltas == ["one", " two"]
    assert usage is None
    assert str(error) == f"{subject(name)} stopped sending mid-answer (timed out)."
    assert len(faulty.requests) == 1


# --- transient failures: fail once, then succeed -----------------------------------------------------------------


@providers
@modes
@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "http_500", "times": 1},
        {"kind": "http_429", "times": 1, "retry_after": 0.01},
        {"kind": "drop", "times": 1},
    ],
    ids=lambda fault: fault["kind"],
)
async def test_a_transient_failure_is_retried_and_the_answer_arrives_whole(faulty, name, mode, fault):
    faulty.configure(fault=fault)

    deltas, usage, error = await ask(name, mode)

    assert error is None
    assert "".join(deltas) == REPLY
    first, second = faulty.requests
    assert first["fault"] == fault["kind"] and second["fault"] is None
    assert usage == Usage(second["usage"]["input_tokens"], second["usage"]["output_tokens"])


@sdks
@modes
async def test_a_timed_out_first_attempt_is_retried_and_the_answer_arrives_whole(faulty, name, mode):
    faulty.configure(fault={"kind": "slow_first_byte", "times": 1, "delay": 2.0})

    deltas, usage, error = await ask(name, mode)

    assert error is None
    assert "".join(deltas) == REPLY
    first, second = faulty.requests
    assert first["outcome"] == "client_closed" and second["outcome"] == "ok"
    assert usage == Usage(second["usage"]["input_tokens"], second["usage"]["output_tokens"])


@providers
async def test_a_cut_response_body_is_retried_once_and_then_answers(faulty, name):
    faulty.configure(fault={"kind": "cut", "times": 1})

    deltas, _, error = await ask(name, "complete")

    assert error is None and deltas == [REPLY]
    assert len(faulty.requests) == 2


# --- the consumer stops: the provider's HTTP stream closes ---------------------------------------------------------


@providers
async def test_the_pipelines_stop_closes_the_provider_connection(faulty, name):
    """until_stopped (the pipeline's stop) runs each step in its own task; closing must still reach the HTTP
    connection, which the emulator observes as a response the client closed early."""
    faulty.configure(reply="word " * 300, tokens_per_second=40)
    stop = asyncio.Event()
    received = []

    async for item in until_stopped(get_provider(name).stream(MODELS[name], MESSAGES, max_tokens=400), stop):
        assert isinstance(item, Delta)
        received.append(item.text)
        if len(received) == 3:
            stop.set()

    assert len(received) == 3
    assert faulty.wait_closed_early(1, timeout=3)
    (request,) = faulty.requests
    assert request["outcome"] == "client_closed"


@providers
async def test_stopping_while_waiting_for_the_next_chunk_closes_the_connection(faulty, name):
    faulty.configure(reply="word " * 300, tokens_per_second=2)  # half a second between chunks
    stop = asyncio.Event()
    received = []

    async def consume():
        async for item in until_stopped(get_provider(name).stream(MODELS[name], MESSAGES, max_tokens=400), stop):
            received.append(item)

    task = asyncio.create_task(consume())
    while not received:
        await asyncio.sleep(0.01)
    stop.set()  # the pipeline cancels the pending read, then closes the stream
    await asyncio.wait_for(task, timeout=2)

    assert faulty.wait_closed_early(1, timeout=3)
