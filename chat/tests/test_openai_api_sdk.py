"""The /v1 API as OpenAI's own Python SDK sees it, against a real server (daphne): cloud models answered by the
provider emulator (the real provider SDKs over loopback), and one turn of the real local model."""

import sqlite3
import time

import httpx
import openai
import pytest

from testsupport.emulator import ProviderEmulator
from testsupport.http import bearer
from testsupport.live import LiveServer
from testsupport.scripted import emulator_settings

MODEL = "gpt-3.5-turbo"  # a seeded catalog model of the openai provider, which the emulator answers
REPLY = "The quick brown fox jumps over the lazy dog"
IMAGE_URL = "data:image/png;base64,iVBORw0KGgo="
CONVERSATION = [
    {"role": "system", "content": "You answer in one short sentence."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Italy?"},
]


@pytest.fixture(scope="module")
def emulator():
    emulator = ProviderEmulator()
    emulator.start()
    yield emulator
    emulator.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory, emulator):
    env = {name: str(value) for name, value in emulator_settings(emulator.url).items()}
    env.update(
        {
            "DEFAULT_MODEL": MODEL,
            "FALLBACK_MODELS": "",  # every provider failing must be a 502, not an answer from the local model
            "UTILITY_MODELS": "",
            "CHAT_NAMING": "false",
            "LOCAL_MODEL_PRELOAD": "false",
            "PROVIDER_READ_TIMEOUT": "5",
        }
    )
    server = LiveServer(tmp_path_factory.mktemp("openai-api"), extra_env=env).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def key(server):
    return server.create_user_with_key("sdk@example.com", "a good password")


@pytest.fixture(autouse=True)
def _fresh_emulator(emulator):
    emulator.reset()
    emulator.configure(reply=REPLY)
    yield
    emulator.reset()


def sdk(server, api_key) -> openai.OpenAI:
    # No SDK retries: a refusal must reach the test as the error the server sent, once.
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=api_key, max_retries=0, timeout=30)


def chat_requests(emulator) -> list[dict]:
    return [entry for entry in emulator.requests if entry.get("path", "").endswith("/chat/completions")]


def rows(server, sql: str) -> list[tuple]:
    with sqlite3.connect(server.db_path) as connection:
        return connection.execute(sql).fetchall()


# --- answers ----------------------------------------------------------------------------------------------------


def test_a_non_streamed_completion_through_the_sdk(server, key, emulator):
    completion = sdk(server, key).chat.completions.create(
        model=MODEL, messages=CONVERSATION, temperature=0.3, top_p=0.8, stop=["\n\n"], max_tokens=50, user="u-1"
    )

    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == MODEL
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == REPLY
    assert completion.choices[0].finish_reason == "stop"
    assert (completion.usage.completion_tokens, completion.usage.total_tokens > 9) == (9, True)
    [sent] = chat_requests(emulator)
    assert sent["messages"] == CONVERSATION  # the client's conversation, as it sent it
    assert sent["sampling"] == {"temperature": 0.3, "top_p": 0.8, "stop": ["\n\n"]}
    assert sent["max_tokens"] == 50


def test_a_streamed_completion_through_the_sdk(server, key, emulator):
    stream = sdk(server, key).chat.completions.create(
        model=MODEL, messages=CONVERSATION, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)

    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == REPLY
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 9
    assert len({chunk.id for chunk in chunks}) == 1
    assert chat_requests(emulator)[0]["stream"] is True


def test_max_tokens_cuts_the_answer_and_says_length(server, key, emulator):
    completion = sdk(server, key).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Talk"}], max_completion_tokens=3
    )

    assert completion.choices[0].message.content == "The quick brown"
    assert completion.choices[0].finish_reason == "length"


def test_models_lists_what_can_answer(server, key):
    models = sdk(server, key).models.list().data

    ids = {model.id for model in models}
    assert MODEL in ids and "smollm2-135m" in ids
    assert "dall-e-3" not in ids  # an image model does not answer chat completions
    assert {model.object for model in models} == {"model"}
    assert sdk(server, key).models.retrieve(MODEL).owned_by == "openai"


def test_store_true_makes_a_chat_in_the_owners_sidebar_and_store_false_leaves_none(server, key):
    client = sdk(server, key)
    before = rows(server, "SELECT count(*) FROM billing_usageentry")[0][0]

    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Not kept"}])
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Kept"}], store=True)

    sidebar = httpx.get(f"{server.url}/api/v1/chat/user", headers=bearer(key)).json()["chats"]
    assert [chat["title"] for chat in sidebar] == ["Kept"]
    assert rows(server, "SELECT count(*) FROM chat_chat WHERE unlisted") == [(0,)]
    assert rows(server, "SELECT count(*) FROM billing_usageentry")[0][0] == before + 2  # both are in the ledger


# --- errors as the SDK raises them ------------------------------------------------------------------------------


def test_a_bad_key_is_an_authentication_error(server):
    with pytest.raises(openai.AuthenticationError) as raised:
        sdk(server, "qnx_not-a-real-key").chat.completions.create(model=MODEL, messages=CONVERSATION)

    assert raised.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        sdk(server, "qnx_not-a-real-key").models.list()


def test_an_unknown_model_is_not_found(server, key):
    with pytest.raises(openai.NotFoundError) as raised:
        sdk(server, key).chat.completions.create(model="gpt-99", messages=CONVERSATION)

    assert (raised.value.code, raised.value.param) == ("model_not_found", "model")


def test_unsupported_features_are_bad_requests(server, key, emulator):
    client = sdk(server, key)
    with pytest.raises(openai.BadRequestError) as several:
        client.chat.completions.create(model=MODEL, messages=CONVERSATION, n=2)
    with pytest.raises(openai.BadRequestError) as tools:
        client.chat.completions.create(
            model=MODEL,
            messages=CONVERSATION,
            tools=[{"type": "function", "function": {"name": "now", "parameters": {"type": "object"}}}],
        )
    with pytest.raises(openai.BadRequestError) as image:
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": IMAGE_URL}}]}],
        )

    assert several.value.param == "n"
    assert tools.value.param == "tools"
    # gpt-3.5-turbo cannot see images (chat/tests/test_image_input.py: a model that can is sent them).
    assert (image.value.code, image.value.param) == ("model_not_vision", "messages[0].content[0].image_url")
    assert f"`{MODEL}` cannot see images" in image.value.message
    assert chat_requests(emulator) == []


def test_an_exhausted_quota_is_a_rate_limit_error_with_retry_after(server):
    quota_key = server.create_user_with_key("quota@example.com", "a good password")
    server.manage(
        "shell",
        "-c",
        "from accounts.models import User\n"
        "from billing.models import UsagePeriod\n"
        "from billing.quota import current_month, limits_for\n"
        "user = User.objects.get(email='quota@example.com')\n"
        "UsagePeriod.objects.update_or_create(user=user, month=current_month(), "
        "defaults={'chats_used': limits_for(user)['chat']})\n",
    )

    with pytest.raises(openai.RateLimitError) as raised:
        sdk(server, quota_key).chat.completions.create(model=MODEL, messages=CONVERSATION)

    assert raised.value.code == "insufficient_quota"
    assert "resets on" in raised.value.message
    assert int(raised.value.response.headers["Retry-After"]) > 0


def test_every_provider_failing_is_a_502(server, key, emulator):
    emulator.configure(fault="http_500")
    client = sdk(server, key)

    with pytest.raises(openai.APIStatusError) as plain:
        client.chat.completions.create(model=MODEL, messages=CONVERSATION)
    with pytest.raises(openai.APIStatusError) as streamed:
        client.chat.completions.create(model=MODEL, messages=CONVERSATION, stream=True)

    assert plain.value.status_code == 502 and streamed.value.status_code == 502
    assert plain.value.code == "provider_error"


def test_a_failure_mid_stream_raises_after_the_first_tokens(server, key, emulator):
    emulator.configure(fault={"kind": "cut", "after_chunks": 3})
    received = []

    stream = sdk(server, key).chat.completions.create(model=MODEL, messages=CONVERSATION, stream=True)
    with pytest.raises(openai.APIError) as raised:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")

    assert "".join(received).startswith("The quick")
    assert raised.value.code == "provider_error"


def test_a_client_that_disconnects_stops_an_unstored_answer_and_leaves_no_chat(server, key, emulator):
    emulator.configure(tokens_per_second=5)
    stream = sdk(server, key).chat.completions.create(model=MODEL, messages=CONVERSATION, stream=True)
    next(iter(stream))
    stream.close()

    for _ in range(100):
        if emulator.closed_early and rows(server, "SELECT count(*) FROM chat_chat WHERE unlisted") == [(0,)]:
            break
        time.sleep(0.1)
    assert emulator.closed_early == 1  # the provider stream was closed before its end
    assert rows(server, "SELECT count(*) FROM chat_chat WHERE unlisted") == [(0,)]


# --- the real local model ---------------------------------------------------------------------------------------


@pytest.mark.local_model
def test_the_local_model_answers_through_the_sdk(daphne_server):
    local_key = daphne_server.create_user_with_key("sdk-local@example.com", "a good password")
    client = openai.OpenAI(base_url=f"{daphne_server.url}/v1", api_key=local_key, max_retries=0, timeout=120)

    stream = client.chat.completions.create(
        model="smollm2-135m",
        messages=[{"role": "user", "content": "Name a colour."}],
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text.strip()
    usage = chunks[-1].usage
    assert 0 < usage.completion_tokens <= 8
    assert usage.prompt_tokens > 0
