"""An assistant's documents one by one: read in the background (processing, then ready or failed, in the API and on
the page), cited by chats only once ready (a chat started meanwhile answers from what is ready and says so), and
deleted on their own, chunks and all, by the assistant's owner only (others 404 or 403, anonymous 401)."""

import time
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone

from billing.models import UsagePeriod
from chat import assistants
from chat.models import Assistant
from rag.models import Chunk, Document
from testsupport.files import make_text_pdf
from testsupport.html import Elements
from testsupport.http import ServerAsyncClient, bearer, parse_sse, read_streaming
from testsupport.scripted import SCRIPTED_MODEL

BASE = "/api/v1/chat/assistants"
GUIDE = make_text_pdf(["# Trains\nBook trains through the portal; the travel code is ORCA-19."])
HOTELS = make_text_pdf(["# Hotels\nHotels are booked by the desk; the hotel code is HERON-7."])
transactional = pytest.mark.django_db(transaction=True)


def wait_until_read(collection_id, timeout: float = 60.0) -> None:
    """Until none of the collection's documents is being read (the background reader has finished), or fail."""
    deadline = time.monotonic() + timeout
    while Document.objects.filter(collection_id=collection_id, status=Document.Status.PROCESSING).exists():
        assert time.monotonic() < deadline, "the documents were not read in time"
        time.sleep(0.05)


@pytest.fixture(autouse=True)
def _local_embeddings(settings):
    settings.RAG_EMBEDDINGS = "local"


@pytest.fixture
def assistant(scripted, owner):
    return assistants.do_create_assistant(owner, {"name": "Travel desk", "model": SCRIPTED_MODEL})


def add_now(owner, assistant, *files):
    """Add files and read them in this thread (the same reader the background runs)."""
    documents = assistants.do_add_documents(owner, assistant.pk, list(files), assistants.read_documents)
    assistant.refresh_from_db()
    return documents


def add_later(owner, assistant, *files):
    """Add files whose reading has not happened yet: (documents, a function that reads them now)."""
    deferred = []
    documents = assistants.do_add_documents(owner, assistant.pk, list(files), deferred.extend)
    assistant.refresh_from_db()
    return documents, lambda: assistants.read_documents(deferred)


def documents_list(client, assistant) -> list[tuple[dict, str]]:
    return Elements(client.get(f"/chat/assistants/{assistant.pk}/").content.decode()).find(id="assistant-documents")


def delete_forms(client, assistant) -> list[tuple[dict, str]]:
    page = Elements(client.get(f"/chat/assistants/{assistant.pk}/").content.decode())
    return page.find("form", class_="inline-form document-delete")


def file_uses(user) -> int:
    period = UsagePeriod.objects.filter(user=user).first()
    return period.file_rag_used if period else 0


def pdf(name, data):
    return SimpleUploadedFile(name, data, content_type="application/pdf")


async def stream(key, path, **fields) -> list[dict]:
    response = await ServerAsyncClient().post(path, fields, content_type="application/json", headers=bearer(key))
    assert response.status_code == 200, response.content
    return parse_sse(await read_streaming(response))


def cited(events) -> list[str]:
    found = next((e for e in events if e["type"] == "sources"), {"sources": []})
    return sorted({source["documentName"] for source in found["sources"] if source["kind"] == "file"})


def statuses(events) -> list[str]:
    return [e["message"] for e in events if e["type"] == "status"]


# --- read in the background -------------------------------------------------------------------------------------


@transactional
def test_an_upload_answers_at_once_and_the_document_is_read_in_the_background(assistant, owner, owner_key):
    response = Client().post(f"{BASE}/{assistant.pk}/documents", {"files": [pdf("guide.pdf", GUIDE)]},
                             headers=bearer(owner_key))

    assert response.status_code == 202, response.content
    assert [d["status"] for d in response.json()["documents"]] == ["processing"]
    assistant.refresh_from_db()
    wait_until_read(assistant.collection_id)
    (document,) = Client().get(f"{BASE}/{assistant.pk}", headers=bearer(owner_key)).json()["assistant"]["documents"]
    assert (document["status"], document["pages"], document["error"]) == ("ready", 1, "")
    assert Chunk.objects.filter(collection_id=assistant.collection_id).exists()
    assert file_uses(owner) == 1


@transactional
def test_a_document_that_cannot_be_read_fails_in_the_background_and_gives_its_file_use_back(
    assistant, owner, owner_key
):
    response = Client().post(f"{BASE}/{assistant.pk}/documents", {"files": [pdf("blank.pdf", make_text_pdf([""]))]},
                             headers=bearer(owner_key))

    assert response.status_code == 202
    assistant.refresh_from_db()
    wait_until_read(assistant.collection_id)
    (document,) = Client().get(f"{BASE}/{assistant.pk}", headers=bearer(owner_key)).json()["assistant"]["documents"]
    assert (document["status"], document["error"]) == ("failed", '"blank.pdf" has no readable text.')
    assert file_uses(owner) == 0


@pytest.mark.django_db
def test_the_page_follows_a_document_being_read_and_stops_once_it_is_ready(assistant, owner, owner_client):
    (document,), read = add_later(owner, assistant, ("guide.pdf", GUIDE))

    (reading,) = documents_list(owner_client, assistant)
    read()
    (ready,) = documents_list(owner_client, assistant)

    attrs, text = reading
    assert attrs.get("hx-trigger") == "every 2s" and attrs["hx-select"] == "#assistant-documents"
    assert "guide.pdf being read…" in text
    attrs, text = ready
    assert "hx-trigger" not in attrs
    assert "guide.pdf 1 page" in text


@pytest.mark.django_db
def test_a_document_whose_reader_stopped_is_shown_as_failed(assistant, owner, owner_key):
    (document,), _ = add_later(owner, assistant, ("guide.pdf", GUIDE))
    Document.objects.filter(pk=document.pk).update(updated_at=timezone.now() - timedelta(hours=1))

    (listed,) = Client().get(f"{BASE}/{assistant.pk}", headers=bearer(owner_key)).json()["assistant"]["documents"]

    assert listed["status"] == "failed" and "Upload it again to retry" in listed["error"]


@transactional
async def test_a_chat_started_while_a_document_is_read_cites_what_is_ready_and_says_so(scripted, owner, owner_key):
    assistant = await sync_to_async(assistants.do_create_assistant)(owner, {"name": "Desk", "model": SCRIPTED_MODEL})
    await sync_to_async(add_now)(owner, assistant, ("guide.pdf", GUIDE))
    _, read = await sync_to_async(add_later)(owner, assistant, ("hotels.pdf", HOTELS))
    chat = await sync_to_async(assistants.do_start_chat)(owner, assistant.pk)

    during = await stream(owner_key, f"/api/v1/chat/{chat.pk}/stream", prompt="What are the travel and hotel codes?")
    await sync_to_async(read)()
    after = await stream(owner_key, f"/api/v1/chat/{chat.pk}/stream", prompt="What are the travel and hotel codes?")

    assert during[-2]["type"] == "complete" and after[-2]["type"] == "complete"
    assert "hotels.pdf is still being read; answering from the documents that are ready." in statuses(during)
    assert cited(during) == ["guide.pdf"]
    assert cited(after) == ["guide.pdf", "hotels.pdf"]
    assert not any("still being read" in message for message in statuses(after))


@transactional
async def test_a_chat_started_before_any_document_is_ready_answers_without_them(scripted, owner, owner_key):
    assistant = await sync_to_async(assistants.do_create_assistant)(owner, {"name": "Desk", "model": SCRIPTED_MODEL})
    await sync_to_async(add_later)(owner, assistant, ("guide.pdf", GUIDE))
    chat = await sync_to_async(assistants.do_start_chat)(owner, assistant.pk)

    events = await stream(owner_key, f"/api/v1/chat/{chat.pk}/stream", prompt="What is the travel code?")

    assert events[-2]["type"] == "complete"
    assert "guide.pdf is still being read; answering from the documents that are ready." in statuses(events)
    assert cited(events) == []


# --- deleting one document ----------------------------------------------------------------------------------------


@transactional
async def test_the_owner_deletes_one_document_over_the_api_and_chats_stop_citing_it(scripted, owner, owner_key):
    assistant = await sync_to_async(assistants.do_create_assistant)(owner, {"name": "Desk", "model": SCRIPTED_MODEL})
    (guide,) = await sync_to_async(add_now)(owner, assistant, ("guide.pdf", GUIDE))
    (hotels,) = await sync_to_async(add_now)(owner, assistant, ("hotels.pdf", HOTELS))
    chat = await sync_to_async(assistants.do_start_chat)(owner, assistant.pk)
    before = await stream(owner_key, f"/api/v1/chat/{chat.pk}/stream", prompt="What are the travel and hotel codes?")
    stored = (await Document.objects.aget(pk=hotels.pk)).file.name

    path = f"{BASE}/{assistant.pk}/documents/{hotels.pk}"
    response = await ServerAsyncClient().delete(path, headers=bearer(owner_key))

    assert response.status_code == 204
    after = await stream(owner_key, f"/api/v1/chat/{chat.pk}/stream", prompt="What are the travel and hotel codes?")
    assert cited(before) == ["guide.pdf", "hotels.pdf"] and cited(after) == ["guide.pdf"]
    assert not await Chunk.objects.filter(document_id=hotels.pk).aexists()
    assert await Chunk.objects.filter(document_id=guide.pk).aexists()
    assert not await sync_to_async(default_storage.exists)(stored)
    listed = (await ServerAsyncClient().get(f"{BASE}/{assistant.pk}", headers=bearer(owner_key))).json()
    assert [d["name"] for d in listed["assistant"]["documents"]] == ["guide.pdf"]


@pytest.mark.django_db
def test_deleting_a_document_while_it_is_read_stores_nothing_and_gives_its_file_use_back(assistant, owner, owner_key):
    (document,), read = add_later(owner, assistant, ("guide.pdf", GUIDE))
    assert file_uses(owner) == 1

    response = Client().delete(f"{BASE}/{assistant.pk}/documents/{document.pk}", headers=bearer(owner_key))
    read()

    assert response.status_code == 204
    assert not Document.objects.exists() and not Chunk.objects.exists()
    assert file_uses(owner) == 0


@pytest.mark.django_db
def test_others_cannot_delete_a_document_and_anonymous_callers_get_401(assistant, owner, owner_key, other_key):
    (document,) = add_now(owner, assistant, ("guide.pdf", GUIDE))
    path = f"{BASE}/{assistant.pk}/documents/{document.pk}"

    assert Client().delete(path, headers=bearer(other_key)).status_code == 404  # unpublished: not even seen
    Assistant.objects.filter(pk=assistant.pk).update(published=True)
    assert Client().delete(path, headers=bearer(other_key)).status_code == 403  # published: seen, not theirs
    assert Client().delete(path).status_code == 401
    assert Document.objects.filter(pk=document.pk).exists()


@pytest.mark.django_db
def test_ids_that_are_not_the_assistants_documents_are_not_found(assistant, owner, owner_key, make_chat):
    (document,) = add_now(owner, assistant, ("guide.pdf", GUIDE))
    second = assistants.do_create_assistant(owner, {"name": "Other desk", "model": SCRIPTED_MODEL})

    for path in (
        f"{BASE}/{assistant.pk}/documents/abc",
        f"{BASE}/{assistant.pk}/documents/0",
        f"{BASE}/{assistant.pk}/documents/{document.pk + 1000}",
        f"{BASE}/{second.pk}/documents/{document.pk}",  # another assistant's (the owner's own)
        f"{BASE}/99999/documents/{document.pk}",
    ):
        assert Client().delete(path, headers=bearer(owner_key)).status_code == 404, path
    assert Document.objects.filter(pk=document.pk).exists()


@pytest.mark.django_db
def test_the_owner_deletes_a_document_from_the_page(assistant, owner, owner_client):
    (guide,) = add_now(owner, assistant, ("guide.pdf", GUIDE))
    (hotels,) = add_now(owner, assistant, ("hotels.pdf", HOTELS))
    assert [attrs["action"] for attrs, _ in delete_forms(owner_client, assistant)] == [
        f"/chat/assistants/{assistant.pk}/documents/{guide.pk}/delete/",
        f"/chat/assistants/{assistant.pk}/documents/{hotels.pk}/delete/",
    ]

    response = owner_client.post(f"/chat/assistants/{assistant.pk}/documents/{hotels.pk}/delete/")

    assert response.status_code == 302 and response["Location"] == f"/chat/assistants/{assistant.pk}/"
    assert list(Document.objects.values_list("name", flat=True)) == ["guide.pdf"]
    assert not Chunk.objects.filter(document_id=hotels.pk).exists()


@pytest.mark.django_db
def test_others_and_anonymous_visitors_cannot_delete_a_document_from_the_page(
    assistant, owner, other_client
):
    (document,) = add_now(owner, assistant, ("guide.pdf", GUIDE))
    path = f"/chat/assistants/{assistant.pk}/documents/{document.pk}/delete/"

    assert other_client.post(path).status_code == 404
    Assistant.objects.filter(pk=assistant.pk).update(published=True)
    assert delete_forms(other_client, assistant) == []  # no control for someone else's assistant
    assert other_client.post(path).status_code == 403
    anonymous = Client().post(path)
    assert anonymous.status_code == 302 and "/login" in anonymous["Location"]
    csrf_checked = Client(enforce_csrf_checks=True)
    csrf_checked.force_login(owner)
    assert csrf_checked.post(path).status_code == 403
    assert Document.objects.filter(pk=document.pk).exists()
