"""The non-streaming JSON API: a turn answered in one response, and every bad request refused with a clear 4xx."""

import json

import pytest
from asgiref.sync import sync_to_async
from django.test import Client, override_settings

from chat.models import AIModel, Chat, ChatQuery
from testsupport.http import ServerAsyncClient, bearer, parse_sse, read_streaming
from testsupport.scripted import SCRIPTED_MODEL, install_scripted_model, uninstall_scripted_model

transactional = pytest.mark.django_db(transaction=True)


async def post_turn(key, payload, path="/api/v1/chat"):
    return await ServerAsyncClient().post(path, payload, content_type="application/json", headers=bearer(key))


# --- answered turns ------------------------------------------------------------------------------------------


@transactional
async def test_new_chat_returns_201_with_the_saved_answer_and_chat(scripted, owner_key, owner):
    scripted.tokens = ["Bonjour", " le", " monde"]

    response = await post_turn(owner_key, {"prompt": "Say hello in French", "systemPrompt": "Be brief."})

    assert response.status_code == 201, response.content
    body = response.json()
    query, chat = body["chatQuery"], body["chat"]
    assert (query["prompt"], query["response"], query["status"]) == (
        "Say hello in French",
        "Bonjour le monde",
        "complete",
    )
    assert query["chatId"] == chat["id"]
    assert (chat["title"], chat["model"], chat["systemPrompt"]) == ("Say hello in French", SCRIPTED_MODEL, "Be brief.")

    saved = await ChatQuery.objects.select_related("chat").aget(pk=query["id"])
    assert (saved.response, saved.status, saved.chat.owner_id) == ("Bonjour le monde", "complete", owner.pk)
    assert scripted.calls[0]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello in French"},
    ]


@transactional
async def test_continuing_a_chat_returns_200_and_sends_the_history(scripted, owner_key):
    first = (await post_turn(owner_key, {"prompt": "First question"})).json()
    chat_id = first["chat"]["id"]
    scripted.tokens = ["Second", " answer"]

    response = await post_turn(owner_key, {"prompt": "Second question"}, f"/api/v1/chat/{chat_id}")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["chat"]["id"] == chat_id
    assert (body["chatQuery"]["response"], body["chatQuery"]["status"]) == ("Second answer", "complete")
    assert [(m["role"], m["content"]) for m in scripted.calls[-1]["messages"]] == [
        ("user", "First question"),
        ("assistant", "Hello, world!"),
        ("user", "Second question"),
    ]
    assert await ChatQuery.objects.filter(chat_id=chat_id).acount() == 2
    assert await Chat.objects.acount() == 1


@transactional
async def test_provider_failing_before_the_first_token_is_a_502_and_saved_as_error(scripted, owner_key):
    scripted.fail_before_first = "The provider is unreachable."

    response = await post_turn(owner_key, {"prompt": "Hello?"})

    assert response.status_code == 502, response.content
    body = response.json()
    assert (body["error"], body["code"]) == ("The provider is unreachable.", "provider_error")
    assert (body["chatQuery"]["status"], body["chatQuery"]["response"]) == ("error", "")
    saved = await ChatQuery.objects.aget(pk=body["chatQuery"]["id"])
    assert (saved.status, saved.error, saved.response) == ("error", "The provider is unreachable.", "")


@transactional
async def test_provider_failing_mid_answer_keeps_the_partial_answer(scripted, owner_key):
    scripted.tokens = ["one ", "two ", "three ", "four "]
    scripted.fail_after = (2, "The connection dropped.")

    response = await post_turn(owner_key, {"prompt": "Count"})

    assert response.status_code == 502, response.content
    body = response.json()
    assert body["error"] == "The connection dropped."
    saved = await ChatQuery.objects.aget(pk=body["chatQuery"]["id"])
    assert (saved.status, saved.response, saved.error) == ("error", "one two ", "The connection dropped.")


@transactional
async def test_provider_failing_mid_stream_sends_an_error_event_and_keeps_the_partial_answer(scripted, owner_key):
    scripted.tokens = ["one ", "two ", "three ", "four "]
    scripted.fail_after = (2, "The connection dropped.")

    response = await post_turn(owner_key, {"prompt": "Count"}, "/api/v1/chat/stream")
    assert response.status_code == 200
    events = parse_sse(await read_streaming(response))

    kinds = [e["type"] for e in events]
    assert "complete" not in kinds
    assert kinds[-2:] == ["error", "done"]
    assert [e["content"] for e in events if e["type"] == "content"] == ["one ", "two "]
    error = events[-2]
    assert (error["message"], error["code"]) == ("The connection dropped.", "provider_error")
    saved = await ChatQuery.objects.aget(pk=error["queryId"])
    assert (saved.status, saved.response) == ("error", "one two ")


# --- refused requests ----------------------------------------------------------------------------------------

# (raw body, status, code, a phrase the message must contain)
BAD_BODIES = {
    "empty prompt": (json.dumps({"prompt": ""}), 400, "empty_prompt", "empty"),
    "blank prompt": (json.dumps({"prompt": " \n\t "}), 400, "empty_prompt", "empty"),
    "missing prompt": (json.dumps({"model": SCRIPTED_MODEL}), 400, "invalid_body", "prompt"),
    "prompt is a number": (json.dumps({"prompt": 42}), 400, "invalid_body", "prompt"),
    "prompt is a list": (json.dumps({"prompt": ["hi"]}), 400, "invalid_body", "prompt"),
    "prompt is null": (json.dumps({"prompt": None}), 400, "invalid_body", "prompt"),
    "model is not a name": (json.dumps({"prompt": "hi", "model": 7}), 400, "invalid_body", "model"),
    "webSearch is not a boolean": (
        json.dumps({"prompt": "hi", "webSearch": "maybe"}),
        400,
        "invalid_body",
        "webSearch",
    ),
    "unknown model": (json.dumps({"prompt": "hi", "model": "gpt-17"}), 400, "unknown_model", "gpt-17"),
    "model without a key": (
        json.dumps({"prompt": "hi", "model": "gpt-3.5-turbo"}),
        400,
        "model_unavailable",
        "OPENAI_API_KEY",
    ),
    "other model without a key": (
        json.dumps({"prompt": "hi", "model": "Claude 3.5 Sonnet"}),
        400,
        "model_unavailable",
        "CLAUDE_API_KEY",
    ),
    "image model without key": (
        json.dumps({"prompt": "a cat", "model": "dall-e-3"}),
        400,
        "model_unavailable",
        "OPENAI_API_KEY",
    ),
    "malformed JSON": ('{"prompt": "hi"', 400, "invalid_body", "parse"),
    "JSON list": (json.dumps(["hi"]), 400, "invalid_body", "prompt"),
    "JSON string": (json.dumps("hi"), 400, "invalid_body", "prompt"),
    "no body": ("", 400, "invalid_body", "required"),
}
TURN_PATHS = ["/api/v1/chat", "/api/v1/chat/stream", "/api/v1/chat/{chat}", "/api/v1/chat/{chat}/stream"]


@pytest.fixture
def own_chat(owner, make_chat):
    return make_chat(owner, [("Earlier question", "Earlier answer")])


def snapshot():
    return [c.as_dict() for c in Chat.objects.order_by("pk")] + [q.as_dict() for q in ChatQuery.objects.order_by("pk")]


def assert_refused(response, status, code, phrase):
    assert response.status_code == status, response.content
    body = response.json()
    assert body["code"] == code
    assert phrase.lower() in body["error"].lower()


@pytest.mark.parametrize("path", TURN_PATHS)
@pytest.mark.parametrize("case", BAD_BODIES)
def test_bad_turn_requests_are_refused_with_a_clear_4xx(scripted, own_chat, owner_key, path, case):
    raw, status, code, phrase = BAD_BODIES[case]
    before = snapshot()

    response = Client().post(
        path.format(chat=own_chat.pk), raw, content_type="application/json", headers=bearer(owner_key)
    )

    assert_refused(response, status, code, phrase)
    assert snapshot() == before
    assert scripted.calls == []


def test_a_form_encoded_body_is_refused(scripted, owner_key):
    response = Client().post(
        "/api/v1/chat", "prompt=hi", content_type="application/x-www-form-urlencoded", headers=bearer(owner_key)
    )

    assert_refused(response, 400, "invalid_body", "parse")
    assert not ChatQuery.objects.exists()


def test_a_disabled_model_is_refused(scripted, owner_key):
    AIModel.objects.filter(name=SCRIPTED_MODEL).update(enabled=False)

    response = Client().post(
        "/api/v1/chat",
        {"prompt": "hi", "model": SCRIPTED_MODEL},
        content_type="application/json",
        headers=bearer(owner_key),
    )

    assert_refused(response, 400, "model_disabled", "disabled")
    assert not ChatQuery.objects.exists()


@pytest.fixture
def tiny_model(db):
    """The scripted model with a 64-token window: 16 reserved for the answer leaves 48 for the prompt."""
    provider, model = install_scripted_model(context_limit=64)
    yield model
    uninstall_scripted_model()


def test_a_prompt_over_the_models_context_is_refused_with_413(tiny_model, owner_key):
    response = Client().post(
        "/api/v1/chat",
        {"prompt": "word " * 60, "model": tiny_model.name},
        content_type="application/json",
        headers=bearer(owner_key),
    )

    assert_refused(response, 413, "prompt_too_long", "tokens")
    assert "48" in response.json()["error"]  # the budget it is measured against
    assert not ChatQuery.objects.exists()


def test_a_system_prompt_counts_against_the_context(tiny_model, owner_key):
    payload = {"prompt": "Short question", "systemPrompt": "Rule. " * 40, "model": tiny_model.name}

    response = Client().post("/api/v1/chat", payload, content_type="application/json", headers=bearer(owner_key))

    assert_refused(response, 413, "prompt_too_long", "tokens")


@override_settings(MAX_PROMPT_CHARS=20)
def test_a_prompt_over_the_character_limit_is_refused_with_413(scripted, owner_key):
    response = Client().post(
        "/api/v1/chat", {"prompt": "x" * 21}, content_type="application/json", headers=bearer(owner_key)
    )

    assert_refused(response, 413, "prompt_too_long", "limit is 20")
    assert not ChatQuery.objects.exists()


@pytest.mark.parametrize("path", TURN_PATHS)
def test_an_oversized_body_is_refused_with_413(scripted, own_chat, owner_key, path):
    before = snapshot()
    body = json.dumps({"prompt": "x" * 5000})

    with override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=2048):
        response = Client().post(
            path.format(chat=own_chat.pk), body, content_type="application/json", headers=bearer(owner_key)
        )

    assert_refused(response, 413, "body_too_large", "too large")
    assert snapshot() == before


@pytest.mark.parametrize("suffix", ["", "/stream"])
@pytest.mark.parametrize("chat_id", ["not-a-uuid", "12345", "6f1c1a8e-0000-4000-8000-000000000000"])
def test_a_chat_id_that_is_not_an_existing_chat_is_404(scripted, owner_key, chat_id, suffix):
    response = Client().post(
        f"/api/v1/chat/{chat_id}{suffix}", {"prompt": "hi"}, content_type="application/json", headers=bearer(owner_key)
    )

    assert_refused(response, 404, "not_found", "not found")
    assert not ChatQuery.objects.exists()


@pytest.mark.parametrize("suffix", ["", "/stream"])
def test_another_users_chat_id_is_404(scripted, own_chat, other_key, suffix):
    before = snapshot()

    response = Client().post(
        f"/api/v1/chat/{own_chat.pk}{suffix}",
        {"prompt": "Let me in"},
        content_type="application/json",
        headers=bearer(other_key),
    )

    assert_refused(response, 404, "not_found", "not found")
    assert snapshot() == before


@transactional
async def test_a_refused_turn_leaves_the_chat_usable(scripted, owner_key):
    first = (await post_turn(owner_key, {"prompt": "Hello"})).json()
    chat_id = first["chat"]["id"]

    refused = await post_turn(owner_key, {"prompt": "   "}, f"/api/v1/chat/{chat_id}")
    assert refused.status_code == 400
    again = await post_turn(owner_key, {"prompt": "Hello again"}, f"/api/v1/chat/{chat_id}")

    assert again.status_code == 200
    prompts = await sync_to_async(
        lambda: list(ChatQuery.objects.filter(chat_id=chat_id).values_list("prompt", flat=True))
    )()
    assert prompts == ["Hello", "Hello again"]
