"""The OpenAI-compatible /v1 API in process: response shapes, store true/false, the ledger, the history the model
receives, who may see what, and bad requests refused in OpenAI's error shape (never a 500)."""

import asyncio
import base64
import json

import pytest
from asgiref.sync import sync_to_async
from django.test import override_settings

from billing.models import UsageEntry, UsagePeriod
from billing.quota import current_month
from chat.models import AIModel, Chat, ChatQuery
from chat.providers.base import Sampling
from testsupport.files import make_image
from testsupport.http import ServerAsyncClient, bearer, read_streaming
from testsupport.scripted import (
    SCRIPTED_MODEL,
    generations_finished,
    install_scripted_model,
    uninstall_scripted_model,
)

transactional = pytest.mark.django_db(transaction=True)

COMPLETIONS = "/v1/chat/completions"


async def complete(key, payload, **headers):
    body = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
    return await ServerAsyncClient().post(
        COMPLETIONS, body, content_type="application/json", headers={**(bearer(key) if key else {}), **headers}
    )


def parse_sse(body: str) -> list:
    """Each `data:` line's JSON, in order, with the closing marker as {"type": "done"}. (testsupport.http's
    parse_sse drops `id` keys, which are SSE event ids there but chunk ids here.)"""
    frames = [frame for frame in body.split("\n\n") if frame.strip()]
    assert all(frame.startswith("data: ") and "\n" not in frame for frame in frames), body
    return [{"type": "done"} if frame == "data: [DONE]" else json.loads(frame[6:]) for frame in frames]


def ask(text="Say hello", **fields):
    return {"model": SCRIPTED_MODEL, "messages": [{"role": "user", "content": text}], **fields}


def assert_openai_error(response, status, code=None, param=None, type_="invalid_request_error"):
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert error["message"]
    assert error["type"] == type_
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    return error


async def nothing_left_but_the_ledger(user):
    assert await Chat.objects.filter(owner=user).acount() == 0
    assert await ChatQuery.objects.filter(chat__owner=user).acount() == 0
    return [entry async for entry in UsageEntry.objects.filter(user=user)]


async def wait_until(condition, seconds=5.0):
    for _ in range(int(seconds / 0.02)):
        if await sync_to_async(condition)():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the condition never held")


# --- answers ----------------------------------------------------------------------------------------------------


@transactional
async def test_non_streamed_answer_has_the_chat_completion_shape_with_usage(scripted, owner_key):
    scripted.tokens = ["Bonjour", " le", " monde"]

    response = await complete(owner_key, ask())

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["id"].startswith("chatcmpl-") and len(body["id"]) == len("chatcmpl-") + 32
    assert (body["object"], body["model"]) == ("chat.completion", SCRIPTED_MODEL)
    assert isinstance(body["created"], int)
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Bonjour le monde", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    # The scripted provider counts input characters and output tokens.
    assert body["usage"] == {"prompt_tokens": len("Say hello"), "completion_tokens": 3, "total_tokens": 12}


@transactional
async def test_streamed_answer_is_openai_chunks_ending_with_usage_and_done(scripted, owner_key):
    scripted.tokens = ["One", " two", " three"]

    response = await complete(owner_key, ask(stream=True, stream_options={"include_usage": True}))

    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    events = parse_sse(await read_streaming(response))
    assert events[-1] == {"type": "done"}
    chunks = events[:-1]
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert len({chunk["id"] for chunk in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-")
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    deltas = [chunk["choices"][0]["delta"].get("content") for chunk in chunks[1:-2]]
    assert deltas == ["One", " two", " three"]
    assert chunks[-2]["choices"] == [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": len("Say hello"), "completion_tokens": 3, "total_tokens": 12}
    assert all(chunk["usage"] is None for chunk in chunks[:-1])


@transactional
async def test_stream_without_include_usage_sends_no_usage_chunk(scripted, owner_key):
    events = parse_sse(await read_streaming(await complete(owner_key, ask(stream=True))))

    assert events[-1] == {"type": "done"}
    assert all(chunk["choices"] for chunk in events[:-1])
    assert all("usage" not in chunk for chunk in events[:-1])
    assert events[-2]["choices"][0]["finish_reason"] == "stop"


@transactional
async def test_an_answer_that_uses_its_whole_allowance_finishes_with_length(scripted, owner_key):
    scripted.tokens = ["a", "b", "c"]

    body = (await complete(owner_key, ask(max_tokens=3))).json()

    assert body["choices"][0]["finish_reason"] == "length"
    assert scripted.calls[-1]["max_tokens"] == 3


# --- what the model receives ------------------------------------------------------------------------------------


@transactional
async def test_the_model_receives_exactly_the_clients_conversation(scripted, owner_key, owner, make_chat):
    # A stored chat of the same user must not leak into the client's conversation.
    await sync_to_async(make_chat)(owner, [("Stored question", "Stored answer")])
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in English."}]},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": [{"type": "text", "text": "And 3+3"}, {"type": "text", "text": "?"}]},
    ]

    response = await complete(owner_key, {"model": SCRIPTED_MODEL, "messages": messages})

    assert response.status_code == 200, response.content
    assert scripted.calls[-1]["messages"] == [
        {"role": "system", "content": "You are terse.\n\nAnswer in English."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?"},
    ]


@transactional
async def test_sampling_and_max_tokens_reach_the_provider(scripted, owner_key):
    response = await complete(
        owner_key, ask(temperature=0.2, top_p=0.9, stop=["END", "STOP"], max_completion_tokens=40, user="end-user-7")
    )

    assert response.status_code == 200, response.content
    call = scripted.calls[-1]
    assert call["sampling"] == Sampling(temperature=0.2, top_p=0.9, stop=("END", "STOP"))
    assert call["max_tokens"] == 40


@transactional
async def test_a_sampling_control_the_provider_cannot_take_is_refused_not_dropped(scripted, owner_key):
    scripted.sampling_controls = frozenset({"stop"})  # as Anthropic's API: no temperature, no top_p

    refused = await complete(owner_key, ask(temperature=0.5))
    accepted = await complete(owner_key, ask(stop="END"))

    error = assert_openai_error(refused, 400, param="temperature")
    assert SCRIPTED_MODEL in error["message"]
    assert accepted.status_code == 200
    assert [call["sampling"] for call in scripted.calls] == [Sampling(stop=("END",))]


@transactional
async def test_max_tokens_above_the_models_budget_is_capped(scripted, owner_key):
    _, budget_max, _ = await sync_to_async(_budget)()

    response = await complete(owner_key, ask(max_tokens=10_000_000))

    assert response.status_code == 200, response.content
    assert scripted.calls[-1]["max_tokens"] == budget_max
    assert scripted.calls[-1]["sampling"] == Sampling()


def _budget():
    from chat.services import token_budget

    return token_budget(AIModel.objects.get(name=SCRIPTED_MODEL))


@transactional
async def test_a_conversation_too_long_for_the_model_is_refused_not_shortened(scripted, owner_key):
    long_history = [{"role": "user", "content": "x" * 12_000}, {"role": "assistant", "content": "ok"}]
    payload = {"model": SCRIPTED_MODEL, "messages": [*long_history, {"role": "user", "content": "Go"}]}

    error = assert_openai_error(await complete(owner_key, payload), 400, "context_length_exceeded", "messages")

    assert "tokens" in error["message"]
    assert scripted.calls == []


# --- store, the ledger, who sees what ---------------------------------------------------------------------------


@transactional
async def test_without_store_nothing_is_kept_but_the_ledger_row(scripted, owner_key, owner):
    response = await complete(owner_key, ask())
    assert response.status_code == 200

    await wait_until(lambda: not Chat.objects.filter(owner=owner).exists())
    entries = await nothing_left_but_the_ledger(owner)
    assert [(entry.action, entry.output_tokens) for entry in entries] == [("chat", 4)]
    assert entries[0].chat_query_id is None  # the query is gone; its usage is not


@transactional
async def test_streamed_without_store_leaves_only_the_ledger_row(scripted, owner_key, owner):
    await read_streaming(await complete(owner_key, ask(stream=True)))

    await wait_until(lambda: not Chat.objects.filter(owner=owner).exists())
    assert len(await nothing_left_but_the_ledger(owner)) == 1


@transactional
async def test_an_unstored_chat_never_shows_while_it_is_answered(scripted, owner_key, owner):
    gate = scripted.hold_at(1)
    response = await complete(owner_key, ask("Secret question", stream=True))
    stream = response.streaming_content
    first = await anext(stream)  # the role chunk: the turn is running, its chat exists
    assert b"chat.completion.chunk" in first
    assert await Chat.objects.filter(owner=owner, unlisted=True).acount() == 1

    sidebar = await ServerAsyncClient().get("/api/v1/chat/user", headers=bearer(owner_key))
    query_id = (await ChatQuery.objects.aget(chat__owner=owner)).pk
    follow = await ServerAsyncClient().get(f"/api/v1/chat/queries/{query_id}/events", headers=bearer(owner_key))
    chat_id = (await Chat.objects.aget(owner=owner)).pk
    page = await ServerAsyncClient().get(f"/api/v1/chat/{chat_id}", headers=bearer(owner_key))
    gate.set()
    await read_streaming(response)

    assert sidebar.json()["chats"] == []
    assert follow.status_code == 404
    assert page.status_code == 404
    await wait_until(lambda: not Chat.objects.filter(owner=owner).exists())


@transactional
async def test_an_unstored_answer_is_stopped_and_deleted_when_the_client_disconnects(scripted, owner_key, owner):
    gate = scripted.hold_at(2)
    response = await complete(owner_key, ask(stream=True))
    stream = response.streaming_content
    await anext(stream)  # role
    await anext(stream)  # "Hello"
    await anext(stream)  # ", " (the provider then waits at the gate)
    waiting = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.05)
    waiting.cancel()  # the client is gone: the server cancels the response, as Django does on a disconnect
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await asyncio.sleep(0.05)
    gate.set()

    await wait_until(lambda: not Chat.objects.filter(owner=owner).exists())
    assert scripted.closed_early == 1  # the provider stream was stopped, not read to the end
    assert len(await nothing_left_but_the_ledger(owner)) == 1  # what was produced is charged


@transactional
async def test_with_store_the_conversation_is_a_normal_chat_of_the_keys_owner(scripted, owner_key, owner, other_key):
    messages = [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "How are you?"},
    ]

    response = await complete(owner_key, {"model": SCRIPTED_MODEL, "messages": messages, "store": True})
    assert response.status_code == 200

    chat = await Chat.objects.aget()
    assert (chat.owner_id, chat.unlisted, chat.system_prompt) == (owner.pk, False, "Be kind.")
    history = [(q.prompt, q.response) async for q in ChatQuery.objects.filter(chat=chat).order_by("created_at")]
    assert history == [("Hi", "Hello!"), ("How are you?", "Hello, world!")]
    owners_sidebar = (await ServerAsyncClient().get("/api/v1/chat/user", headers=bearer(owner_key))).json()
    assert [item["id"] for item in owners_sidebar["chats"]] == [str(chat.pk)]
    others_sidebar = (await ServerAsyncClient().get("/api/v1/chat/user", headers=bearer(other_key))).json()
    assert others_sidebar["chats"] == []
    others_view = await ServerAsyncClient().get(f"/api/v1/chat/{chat.pk}", headers=bearer(other_key))
    assert others_view.status_code == 404
    assert await UsageEntry.objects.filter(user=owner, action="chat").acount() == 1


@transactional
async def test_the_end_user_is_kept_on_a_stored_answer(scripted, owner_key):
    await complete(owner_key, ask(store=True, user="customer-42"))

    query = await ChatQuery.objects.aget()
    assert query.metadata["endUser"] == "customer-42"


# --- authentication ---------------------------------------------------------------------------------------------


@transactional
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer qnx_not-a-key"}, {"Authorization": "Basic abc"}])
async def test_a_missing_or_wrong_key_is_401_invalid_api_key(scripted, headers):
    response = await ServerAsyncClient().post(
        COMPLETIONS, json.dumps(ask()), content_type="application/json", headers=headers
    )

    assert_openai_error(response, 401, "invalid_api_key")
    assert scripted.calls == []


@transactional
async def test_a_session_is_not_enough(scripted, owner):
    client = ServerAsyncClient()
    await sync_to_async(client.force_login)(owner)

    response = await client.post(COMPLETIONS, json.dumps(ask()), content_type="application/json")

    assert_openai_error(response, 401, "invalid_api_key")


@transactional
async def test_a_flood_of_bad_keys_from_one_address_is_rate_limited(scripted, owner_key):
    with override_settings(OPENAI_API_BAD_KEY_RATE_LIMIT=3, OPENAI_API_BAD_KEY_RATE_WINDOW=60):
        statuses = [(await complete("qnx_wrong", ask())).status_code for _ in range(4)]
        refused = await complete("qnx_wrong", ask())
        good = await complete(owner_key, ask())

    assert statuses == [401, 401, 401, 429]
    assert_openai_error(refused, 429, "rate_limit_exceeded", type_="requests")
    assert 0 < int(refused["Retry-After"]) <= 60
    assert good.status_code == 200  # a real key is not locked out by someone else's flood


# --- refusals ---------------------------------------------------------------------------------------------------


@transactional
async def test_an_unknown_model_is_404_model_not_found(scripted, owner_key):
    error = assert_openai_error(await complete(owner_key, ask(model="no-such-model")), 404, "model_not_found", "model")
    assert "no-such-model" in error["message"]


@transactional
async def test_a_model_that_cannot_answer_now_is_404(scripted, owner_key):
    await AIModel.objects.filter(name=SCRIPTED_MODEL).aupdate(enabled=False)

    assert_openai_error(await complete(owner_key, ask()), 404, "model_not_found", "model")


@transactional
async def test_quota_exhausted_is_429_with_retry_after_and_the_reset_date(scripted, owner_key, owner):
    with override_settings(FREE_TIER_LIMITS={**_free_limits(), "chat_limit": 1}):
        assert (await complete(owner_key, ask())).status_code == 200
        response = await complete(owner_key, ask())

    error = assert_openai_error(response, 429, "insufficient_quota", type_="insufficient_quota")
    month = current_month()
    reset = f"{month.year + month.month // 12}-{month.month % 12 + 1:02d}-01"
    assert reset in error["message"]
    assert 0 < int(response["Retry-After"]) <= 32 * 24 * 3600
    assert (await UsagePeriod.objects.aget(user=owner)).chats_used == 1


def _free_limits():
    from django.conf import settings

    return dict(settings.FREE_TIER_LIMITS)


@transactional
async def test_every_provider_failing_is_502_and_charges_nothing(scripted, owner_key, owner):
    scripted.fail_before_first = "the scripted provider is down"

    plain = await complete(owner_key, ask())
    streamed = await complete(owner_key, ask(stream=True))

    assert_openai_error(plain, 502, "provider_error", type_="api_error")
    assert_openai_error(streamed, 502, "provider_error", type_="api_error")
    await wait_until(lambda: not Chat.objects.filter(owner=owner).exists())
    assert await nothing_left_but_the_ledger(owner) == []


@transactional
async def test_a_failure_mid_stream_sends_an_error_chunk_before_done(scripted, owner_key):
    scripted.fail_after = (2, "the provider dropped the connection")

    events = parse_sse(await read_streaming(await complete(owner_key, ask(stream=True))))

    assert events[-1] == {"type": "done"}
    error = events[-2]["error"]
    assert (error["type"], error["code"]) == ("api_error", "provider_error")
    assert "dropped" in error["message"]
    assert [chunk["choices"][0]["delta"].get("content") for chunk in events[1:-2]] == ["Hello", ", "]


BAD_REQUESTS = [
    (ask(n=2), "n"),
    (ask(tools=[{"type": "function", "function": {"name": "f"}}]), "tools"),
    (ask(response_format={"type": "json_object"}), "response_format"),
    (ask(logprobs=True), "logprobs"),
    (ask(seed=1), "seed"),
    (ask(frequency_penalty=0.5), "frequency_penalty"),
    (ask(some_new_field=1), "some_new_field"),
    (ask(temperature=3), "temperature"),
    (ask(temperature="hot"), "temperature"),
    (ask(top_p=1.5), "top_p"),
    (ask(max_tokens=0), "max_tokens"),
    (ask(max_tokens=True), "max_tokens"),
    (ask(max_tokens=10, max_completion_tokens=20), "max_tokens"),
    (ask(stop=["a", "b", "c", "d", "e"]), "stop"),
    (ask(stop=[""]), "stop[0]"),
    (ask(stream="yes"), "stream"),
    (ask(stream_options={"include_usage": True}), "stream_options"),
    (ask(store="true"), "store"),
    (ask(user=5), "user"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
    ({"model": SCRIPTED_MODEL}, "messages"),
    ({"model": SCRIPTED_MODEL, "messages": []}, "messages"),
    ({"model": SCRIPTED_MODEL, "messages": ["hi"]}, "messages[0]"),
    ({"model": SCRIPTED_MODEL, "messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
    ({"model": SCRIPTED_MODEL, "messages": [{"role": "tool", "content": "4"}]}, "messages[0].role"),
    ({"model": SCRIPTED_MODEL, "messages": [{"role": "user"}]}, "messages[0].content"),
    ({"model": SCRIPTED_MODEL, "messages": [{"role": "user", "content": 7}]}, "messages[0].content"),
    (
        {"model": SCRIPTED_MODEL, "messages": [{"role": "user", "content": [{"type": "text"}]}]},
        "messages[0].content[0].text",
    ),
    ({"model": SCRIPTED_MODEL, "messages": [{"role": "user", "content": "   "}]}, "messages[0].content"),
    ({"model": SCRIPTED_MODEL, "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
     "messages[1]"),
    ({"model": SCRIPTED_MODEL, "messages": [{"role": "user", "content": "a\x00b"}]}, "messages[0].content"),
]


@transactional
@pytest.mark.parametrize(("payload", "param"), BAD_REQUESTS)
async def test_bad_requests_are_400_naming_the_parameter(scripted, owner_key, owner, payload, param):
    assert_openai_error(await complete(owner_key, payload), 400, param=param)
    assert scripted.calls == []
    assert await Chat.objects.acount() == 0


# --- images (image_url parts: data URLs only, for models that see images) ----------------------------------------


def image_message(url, text="What is in this picture?", **image_url):
    content = [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url, **image_url}}]
    return {"role": "user", "content": content}


def data_url(data: bytes, mime="image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


@pytest.fixture
async def sees_images(scripted):
    await AIModel.objects.filter(name=SCRIPTED_MODEL).aupdate(vision=True)
    yield scripted
    # An image turn reads its files (OCR) after the answer, and an unlisted chat is deleted when its turn ends: let
    # that finish inside the test, or the test database's flush would wait on the deletion's locks.
    await generations_finished()


def sent_images(call) -> list[dict]:
    return [part for m in call["messages"] if isinstance(m["content"], list) for part in m["content"]
            if part["type"] == "image"]


@transactional
async def test_a_data_url_image_reaches_a_vision_model_as_an_image(sees_images, owner_key):
    png = make_image("Gate B12")

    response = await complete(owner_key, {"model": SCRIPTED_MODEL, "messages": [image_message(data_url(png))]})

    assert response.status_code == 200, response.content
    (call,) = sees_images.calls
    prompt = call["messages"][-1]
    assert prompt["role"] == "user"
    assert prompt["content"] == [
        {"type": "image", "mime": "image/png", "data": png},
        {"type": "text", "text": "What is in this picture?"},
    ]


@transactional
async def test_an_image_alone_is_a_prompt_and_a_jpeg_keeps_its_type(sees_images, owner_key):
    jpeg = make_image("Gate B12", fmt="JPEG")
    message = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(jpeg, "image/jpeg")}}]}

    response = await complete(owner_key, {"model": SCRIPTED_MODEL, "messages": [message]})

    assert response.status_code == 200, response.content
    (call,) = sees_images.calls
    assert call["messages"][-1]["content"] == [{"type": "image", "mime": "image/jpeg", "data": jpeg}]


@transactional
async def test_an_earlier_messages_image_stays_in_its_message(sees_images, owner_key):
    png = make_image("Gate B12")
    messages = [image_message(data_url(png)), {"role": "assistant", "content": "A gate sign."}, {"role": "user",
                "content": "Which gate?"}]

    response = await complete(owner_key, {"model": SCRIPTED_MODEL, "messages": messages})

    assert response.status_code == 200, response.content
    (call,) = sees_images.calls
    first, answer, prompt = call["messages"]
    assert first["content"] == [  # the client's order of parts, kept
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image", "mime": "image/png", "data": png},
    ]
    assert answer == {"role": "assistant", "content": "A gate sign."}
    assert prompt == {"role": "user", "content": "Which gate?"}


@transactional
@pytest.mark.parametrize(
    "url",
    ["https://example.com/cat.png", "http://127.0.0.1:9/cat.png", "HTTPS://EXAMPLE.COM/cat.png", "file:///etc/passwd"],
)
async def test_a_remote_image_url_is_refused_and_never_fetched(sees_images, owner_key, url):
    response = await complete(owner_key, {"model": SCRIPTED_MODEL, "messages": [image_message(url)]})

    error = assert_openai_error(response, 400, "remote_image_url", "messages[0].content[1].image_url.url")
    assert "not fetched" in error["message"]
    assert sees_images.calls == []
    assert await Chat.objects.acount() == 0


@transactional
async def test_an_image_for_a_model_that_cannot_see_images_is_refused_naming_the_model(scripted, owner_key):
    payload = {"model": SCRIPTED_MODEL, "messages": [image_message(data_url(make_image("Gate B12")))]}

    response = await complete(owner_key, payload)

    error = assert_openai_error(response, 400, "model_not_vision", "messages[0].content[1].image_url")
    assert f"`{SCRIPTED_MODEL}` cannot see images" in error["message"]
    assert scripted.calls == []


@transactional
@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("data:image/png;base64,not base64 at all!", "invalid_image"),
        ("data:image/png;base64,iVBORw0KGgo", "invalid_image"),  # wrong padding
        ("data:image/png;base64,", "empty_file"),
        ("data:image/png,rawbytes", "invalid_image"),  # not base64
        ("data:text/plain;base64," + base64.b64encode(b"hello").decode(), "invalid_image"),
        ("data:image/png;base64," + base64.b64encode(b"%PDF-1.4 not an image").decode(), None),
        ("data:image/png;base64," + base64.b64encode(b"just some text, not an image").decode(), "invalid_image"),
        ("data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n truncated").decode(), "corrupt_file"),
        ("cat.png", "invalid_image"),
    ],
)
async def test_malformed_image_data_urls_are_400(sees_images, owner_key, url, code):
    response = await complete(owner_key, {"model": SCRIPTED_MODEL, "messages": [image_message(url)]})

    assert_openai_error(response, 400, code, param="messages[0].content[1].image_url.url")
    assert sees_images.calls == []


@transactional
@pytest.mark.parametrize(
    ("message", "param"),
    [
        ({"role": "user", "content": [{"type": "image_url", "image_url": "data:image/png;base64,AAAA"}]},
         "messages[0].content[0].image_url"),
        ({"role": "user", "content": [{"type": "image_url"}]}, "messages[0].content[0].image_url"),
        ({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,", "detail": "ultra"}}]},
         "messages[0].content[0].image_url.detail"),
        ({"role": "user", "content": [{"type": "input_image", "image_url": "data:,"}]}, "messages[0].content[0].type"),
    ],
)
async def test_badly_shaped_image_parts_are_400(sees_images, owner_key, message, param):
    response = await complete(owner_key, {"model": SCRIPTED_MODEL, "messages": [message]})

    assert_openai_error(response, 400, param=param)
    assert sees_images.calls == []


@transactional
async def test_an_image_in_a_system_or_assistant_message_is_refused(sees_images, owner_key):
    image = {"type": "image_url", "image_url": {"url": data_url(make_image("x"))}}
    messages = [{"role": "system", "content": [image]}, {"role": "user", "content": "Hi"}]

    response = await complete(owner_key, {"model": SCRIPTED_MODEL, "messages": messages})

    assert_openai_error(response, 400, "unsupported_content", "messages[0].content[0].image_url")


@transactional
async def test_an_image_over_the_file_limit_is_refused_before_decoding(sees_images, owner_key, settings):
    settings.RAG_MAX_FILE_BYTES = 1000
    url = data_url(make_image("A large image with a lot of text in it " * 5))

    response = await complete(owner_key, {"model": SCRIPTED_MODEL, "messages": [image_message(url)]})

    assert_openai_error(response, 413, "image_too_large", "messages[0].content[1].image_url.url")


@transactional
async def test_neutral_values_of_unsupported_features_are_accepted(scripted, owner_key):
    payload = ask(n=1, tools=[], tool_choice="none", response_format={"type": "text"}, logprobs=False,
                  frequency_penalty=0, presence_penalty=0.0, metadata={"app": "tests"}, stream_options=None)

    assert (await complete(owner_key, payload)).status_code == 200


@transactional
@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{not json",
        b"[1, 2]",
        b"\xff\xfe not utf-8",
        b"[" * 100_000 + b"]" * 100_000,
        json.dumps(ask()).replace("Say hello", "\\ud800 lone").encode(),
        b'{"model": "\\ud83d", "messages": []}',
    ],
)
async def test_unparseable_bodies_are_400_never_500(scripted, owner_key, body):
    response = await complete(owner_key, body)

    assert_openai_error(response, 400)
    assert scripted.calls == []


@transactional
async def test_image_models_are_refused_by_the_chat_endpoint(scripted, owner_key):
    await AIModel.objects.filter(name=SCRIPTED_MODEL).aupdate(category=AIModel.Category.IMAGE)

    assert_openai_error(await complete(owner_key, ask()), 400, param="model")


@transactional
async def test_other_methods_and_urls_answer_in_openai_shape(scripted, owner_key):
    wrong_method = await ServerAsyncClient().get(COMPLETIONS, headers=bearer(owner_key))
    unknown = await ServerAsyncClient().post("/v1/embeddings", "{}", content_type="application/json")

    assert_openai_error(wrong_method, 405, "method_not_allowed")
    assert_openai_error(unknown, 404, "unknown_url")


# --- models -----------------------------------------------------------------------------------------------------


@pytest.fixture
def second_model(scripted):
    provider, model = install_scripted_model(name="second-model", provider_name="second")
    yield model
    uninstall_scripted_model("second")


@pytest.mark.django_db
def test_models_lists_the_text_models_that_can_answer_now_in_openai_shape(client, scripted, second_model, owner_key):
    AIModel.objects.create(name="pro-model", full_name="p", provider="scripted", context_limit=4096, pro=True)
    AIModel.objects.create(
        name="image-model", full_name="i", provider="scripted", context_limit=4096, category=AIModel.Category.IMAGE
    )
    AIModel.objects.create(name="off-model", full_name="o", provider="scripted", context_limit=4096, enabled=False)

    response = client.get("/v1/models", headers=bearer(owner_key))

    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    listed = {model["id"]: model for model in body["data"]}
    assert {SCRIPTED_MODEL, "second-model"} <= set(listed)
    # Pro models are for subscribers; image models do not answer chat; disabled ones and unconfigured providers
    # (no keys in tests) are not offered.
    assert not {"pro-model", "image-model", "off-model", "gpt-4o"} & set(listed)
    assert listed[SCRIPTED_MODEL] == {
        "id": SCRIPTED_MODEL, "object": "model", "created": 0, "owned_by": "scripted", "vision": False
    }


@pytest.mark.django_db
def test_one_model_can_be_retrieved_and_an_unlisted_one_is_404(client, scripted, owner_key):
    found = client.get(f"/v1/models/{SCRIPTED_MODEL}", headers=bearer(owner_key))
    missing = client.get("/v1/models/vendor/no-such-model", headers=bearer(owner_key))

    assert found.json() == {
        "id": SCRIPTED_MODEL, "object": "model", "created": 0, "owned_by": "scripted", "vision": False
    }
    assert_openai_error(missing, 404, "model_not_found")


@pytest.mark.django_db
def test_models_need_a_key(client, scripted, owner_client):
    assert_openai_error(client.get("/v1/models"), 401, "invalid_api_key")
    assert_openai_error(owner_client.get("/v1/models"), 401, "invalid_api_key")
