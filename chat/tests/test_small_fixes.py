"""Two small ones from the audit: the chat page's tab title was "QueryNox<script …>" (a script tag inside the title
block), and a fallback status read "… try again shortly.. Answering with …" (the provider's message ends with a
period of its own)."""

import re

import pytest
from django.test import override_settings

from testsupport.http import ServerAsyncClient, bearer, parse_sse, read_streaming
from testsupport.scripted import install_scripted_model, uninstall_scripted_model


def page_title(html: str) -> str:
    (title,) = re.findall(r"<title>(.*?)</title>", html, flags=re.S)
    return title


def test_the_chat_pages_title_is_only_text(owner_client, owner, make_chat):
    assert page_title(owner_client.get("/chat/").content.decode()) == "QueryNox"
    chat = make_chat(owner, title="Sums")
    html = owner_client.get(f"/chat/{chat.pk}/").content.decode()
    assert page_title(html) == "Sums · QueryNox"
    assert html.count("js/uploads.js") == 1  # the script is still on the page, once


@pytest.fixture
def backup(scripted):
    provider, _ = install_scripted_model(name="backup-model", provider_name="backup")
    provider.tokens = ["Backup", " answer"]
    with override_settings(FALLBACK_MODELS=["backup-model"]):
        yield provider
    uninstall_scripted_model("backup")


@pytest.mark.django_db(transaction=True)
async def test_a_fallback_status_has_one_period_after_a_message_ending_in_one(scripted, backup, owner_key):
    scripted.fail_before_first = "scripted is busy; try again shortly."
    response = await ServerAsyncClient().post(
        "/api/v1/chat/stream", {"prompt": "Hi"}, content_type="application/json", headers=bearer(owner_key)
    )
    statuses = [e["message"] for e in parse_sse(await read_streaming(response)) if e["type"] == "status"]
    assert "scripted-model failed: scripted is busy; try again shortly. Answering with backup-model." in statuses
    assert not any(".." in status for status in statuses)
