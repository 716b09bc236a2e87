"""Files in the web UI. The UI's turns go over a WebSocket, whose frames cannot carry a 5 MB file, so a picked or
dropped file is POSTed at once to a staging endpoint (checked there, shown as a chip) and the turn names it by id."""

import json
import os
import time

import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from billing.models import UsagePeriod
from chat.models import ChatQuery
from chat.services import ATTACHMENT_TTL
from rag.models import Document
from testsupport.files import make_text_pdf, zip_bytes
from testsupport.html import Elements
from testsupport.sockets import chat_socket, frames_until

HANDBOOK = make_text_pdf(["# Access\nThe door code for the back entrance is 4471."])



def attach(client, *files, attachments=()):
    return client.post("/chat/attachments/", {"files": list(files), "attachments": list(attachments)})


def pdf(name="handbook.pdf", data=HANDBOOK):
    return SimpleUploadedFile(name, data, content_type="application/pdf")


def chips(response) -> list[tuple[str, str]]:
    """(attachment id, visible text) of each chip in a staging response."""
    page = Elements(response.content.decode())
    ids = [attrs["value"] for attrs, _ in page.find("input", name="attachments")]
    texts = [text for _, text in page.find("span", class_="chip")]
    assert len(ids) == len(texts)
    return list(zip(ids, texts, strict=True))


def staged_files(user) -> list[str]:
    try:
        return default_storage.listdir(f"attachments/{user.pk}")[1]
    except FileNotFoundError:
        return []


def usage(user) -> tuple[int, int]:
    period = UsagePeriod.objects.filter(user=user).first()
    return (period.chats_used, period.file_rag_used) if period else (0, 0)


# --- staging ---------------------------------------------------------------------------------------------------


def test_a_picked_file_becomes_a_chip_with_name_type_size_and_a_remove_button(owner_client, owner):
    response = attach(owner_client, pdf())

    assert response.status_code == 200
    ((attachment_id, text),) = chips(response)
    assert text == f"handbook.pdf pdf · {len(HANDBOOK) / 1024:.3g} kB ×"
    page = Elements(response.content.decode())
    ((remove, _),) = page.find("button", class_="chip-remove")
    assert remove["hx-post"] == f"/chat/attachments/{attachment_id}/remove/"
    assert remove["aria-label"] == "Remove handbook.pdf"
    assert len(staged_files(owner)) == 1
    assert usage(owner) == (0, 0)  # staging is free: quota is charged when the message is sent


def test_a_bad_file_is_refused_at_once_naming_it_and_the_staged_ones_stay(owner_client, owner, settings):
    settings.FREE_TIER_LIMITS = {**settings.FREE_TIER_LIMITS, "files_per_request": 3}
    ((kept_id, _),) = chips(attach(owner_client, pdf()))

    response = attach(owner_client, SimpleUploadedFile("photo.png", zip_bytes()), attachments=[kept_id])

    assert response.status_code == 400
    page = Elements(response.content.decode())
    ((_, error),) = page.find("div", class_="attach-error")
    assert "photo.png" in error and "ZIP" in error
    assert [attachment_id for attachment_id, _ in chips(response)] == [kept_id]
    assert len(staged_files(owner)) == 1


def test_more_files_than_the_plan_allows_are_refused_counting_those_already_staged(owner_client, owner):
    ((kept_id, _),) = chips(attach(owner_client, pdf()))

    response = attach(owner_client, SimpleUploadedFile("notes.txt", b"More notes."), attachments=[kept_id])

    assert response.status_code == 400
    assert "Your plan allows 1 file per message" in response.content.decode()
    assert [attachment_id for attachment_id, _ in chips(response)] == [kept_id]


def test_removing_a_chip_discards_the_staged_file(owner_client, owner):
    ((attachment_id, _),) = chips(attach(owner_client, pdf()))

    response = owner_client.post(f"/chat/attachments/{attachment_id}/remove/")

    assert response.status_code == 200 and response.content == b""
    assert staged_files(owner) == []


def test_someone_elses_attachment_cannot_be_removed_or_listed(owner_client, other_client, owner):
    ((attachment_id, _),) = chips(attach(owner_client, pdf()))

    other_client.post(f"/chat/attachments/{attachment_id}/remove/")
    response = attach(other_client, attachments=[attachment_id])

    assert chips(response) == []
    assert len(staged_files(owner)) == 1


def test_anonymous_callers_are_sent_to_log_in_and_stage_nothing(owner_client, owner):
    ((attachment_id, _),) = chips(attach(owner_client, pdf()))
    anonymous = Client()

    for response in (attach(anonymous, pdf()), anonymous.post(f"/chat/attachments/{attachment_id}/remove/")):
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    assert len(staged_files(owner)) == 1


def test_the_composer_has_a_picker_that_posts_its_files_at_once(owner_client):
    page = Elements(owner_client.get("/chat/").content.decode())

    ((picker, _),) = page.find("input", id="file-picker")
    assert (picker["type"], picker["name"], "multiple" in picker) == ("file", "files", True)
    assert (picker["hx-post"], picker["hx-encoding"], picker["hx-trigger"]) == (
        "/chat/attachments/",
        "multipart/form-data",
        "change",
    )
    assert picker["hx-params"] == "files,attachments"
    assert page.find("div", id="attachments")
    assert page.find("script", src="/static/js/uploads.js")


# --- sending a message with staged files over the socket --------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_a_message_with_staged_files_reads_them_and_shows_sources(scripted, owner, owner_key):
    from asgiref.sync import sync_to_async
    from django.test import Client

    client = Client()
    await sync_to_async(client.force_login)(owner)
    ((attachment_id, _),) = chips(await sync_to_async(attach)(client, pdf()))
    comm = chat_socket(owner_key)
    await comm.connect()

    await comm.send_json_to(
        {"prompt": "What is the door code?", "attachments": attachment_id, "HEADERS": {"HX-Request": "true"}}
    )
    frames = await frames_until(comm, 'class="turn-controls" hx-swap-oob', timeout=30)  # cleared when the turn ends
    await comm.disconnect()

    html = "".join(frames)
    assert '<div id="attachments" class="attachments" aria-live="polite" hidden hx-swap-oob="outerHTML">' in html
    query = await ChatQuery.objects.aget()
    assert f'<ol id="sources-{query.pk}" class="sources" aria-label="Sources" hx-swap-oob="outerHTML">' in html
    assert "handbook.pdf, page 1" in html
    assert "Reading handbook.pdf…" in html
    document = await Document.objects.aget(chat_id=query.chat_id)
    assert (document.name, document.status) == ("handbook.pdf", "ready")
    assert "4471" in str(scripted.calls[-1]["messages"])
    assert await sync_to_async(staged_files)(owner) == []  # the message took them
    assert await sync_to_async(usage)(owner) == (1, 1)


@pytest.mark.django_db(transaction=True)
async def test_a_message_naming_someone_elses_or_an_expired_attachment_is_refused(scripted, owner, other, other_key):
    from asgiref.sync import sync_to_async
    from django.test import Client

    client = Client()
    await sync_to_async(client.force_login)(owner)
    ((attachment_id, _),) = chips(await sync_to_async(attach)(client, pdf()))
    comm = chat_socket(other_key)
    await comm.connect()

    await comm.send_json_to({"prompt": "Read it", "attachments": [attachment_id]})
    refusal = json.loads(await comm.receive_from(timeout=10))
    await comm.disconnect()

    assert (refusal["type"], refusal["code"]) == ("error", "attachment_expired")
    assert await ChatQuery.objects.acount() == 0
    assert await sync_to_async(usage)(other) == (0, 0)

    (name,) = await sync_to_async(staged_files)(owner)
    stale = time.time() - ATTACHMENT_TTL.total_seconds() - 60
    os.utime(default_storage.path(f"attachments/{owner.pk}/{name}"), (stale, stale))
    response = await sync_to_async(attach)(client, attachments=[attachment_id])
    assert chips(response) == []  # expired: gone from the message, and from the storage
    assert await sync_to_async(staged_files)(owner) == []
