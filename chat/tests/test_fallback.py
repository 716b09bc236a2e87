"""A model that fails before its first token hands the turn to the next model in the chain; after the first
token nothing is spliced: the partial answer is kept and the turn ends in error."""

import pytest
from django.test import override_settings

from chat.models import ChatQuery
from testsupport.http import ServerAsyncClient, bearer, parse_sse, read_streaming
from testsupport.scripted import install_scripted_model, uninstall_scripted_model

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def backup(scripted):
    provider, _ = install_scripted_model(name="backup-model", provider_name="backup")
    provider.tokens = ["Backup", " answer"]
    with override_settings(FALLBACK_MODELS=["gpt-3.5-turbo", "backup-model"]):
        yield provider
    uninstall_scripted_model("backup")


async def turn(key, prompt="Hi"):
    response = await ServerAsyncClient().post(
        "/api/v1/chat/stream", {"prompt": prompt}, content_type="application/json", headers=bearer(key)
    )
    return parse_sse(await read_streaming(response))


async def test_failure_before_the_first_token_falls_back_with_a_status(scripted, backup, owner_key):
    scripted.fail_before_first = "scripted is down"

    events = await turn(owner_key)

    statuses = [e["message"] for e in events if e["type"] == "status"]
    # gpt-3.5-turbo has no key here, so the chain skips it and goes on to the next available model.
    assert "scripted-model failed: scripted is down. Answering with backup-model." in statuses
    assert "".join(e["content"] for e in events if e["type"] == "content") == "Backup answer"
    saved = await ChatQuery.objects.aget(pk=events[1]["queryId"])
    assert (saved.status, saved.model, saved.response) == ("complete", "backup-model", "Backup answer")
    assert saved.metadata["requestedModel"] == "scripted-model"
    assert saved.metadata["fallbacks"] == [
        {"model": "scripted-model", "provider": "scripted", "error": "scripted is down"}
    ]


async def test_failure_after_tokens_keeps_the_partial_answer_and_never_splices(scripted, backup, owner_key):
    scripted.tokens = ["Half", " an", " answer", " more"]
    scripted.fail_after = (2, "stream cut")

    events = await turn(owner_key)

    assert events[-2] == {
        "type": "error",
        "message": "stream cut",
        "code": "provider_error",
        "queryId": events[1]["queryId"],
        "seq": events[-2]["seq"],
    }
    saved = await ChatQuery.objects.aget(pk=events[1]["queryId"])
    assert (saved.status, saved.response, saved.model) == ("error", "Half an", "scripted-model")
    assert backup.calls == []


async def test_when_every_model_fails_the_last_error_is_reported(scripted, backup, owner_key):
    scripted.fail_before_first = "first down"
    backup.fail_before_first = "backup down too"

    events = await turn(owner_key)

    assert events[-2]["type"] == "error" and events[-2]["message"] == "backup down too"
    saved = await ChatQuery.objects.aget(pk=events[1]["queryId"])
    assert saved.status == "error" and saved.response == ""
    assert [f["model"] for f in saved.metadata["fallbacks"]] == ["scripted-model"]


def test_the_default_chain_is_the_seeds(settings):
    from querynox import settings as project_settings

    assert project_settings.FALLBACK_MODELS == ["gpt-3.5-turbo", "smollm2-135m"]
