"""Assistants in the web UI and their services: saved, edited and deleted by their owner; a chat started from one
in one click takes its system prompt, model and web search; its documents are read once into its collection and
searched (and served) through every chat started from it, never copied; staff publish one to everyone."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from accounts.models import User
from billing.models import UsagePeriod
from chat import assistants
from chat.models import Assistant, Chat
from chat.services import usable_collection_ids
from chat.tests.test_assistant_documents import wait_until_read
from rag.files import check_upload
from rag.models import Chunk, Collection, Document
from rag.retrieval import retrieve
from rag.service import ingest
from testsupport.files import make_text_pdf
from testsupport.html import Elements
from testsupport.scripted import SCRIPTED_MODEL

pytestmark = pytest.mark.django_db

GUIDE = make_text_pdf(
    [
        "# Travel guide\nThis guide covers how staff travel for work.",
        "# Trains\nBook trains through the portal; the travel code is ORCA-19.",
    ]
)
NOTES = b"# Chat notes\n\nThe parking spot of the visitor is number 88.\n"


@pytest.fixture(autouse=True)
def _local_embeddings(settings):
    settings.RAG_EMBEDDINGS = "local"


def pdf(name="guide.pdf", data=GUIDE):
    return SimpleUploadedFile(name, data, content_type="application/pdf")


@pytest.fixture
def assistant(scripted, owner):
    return assistants.do_create_assistant(
        owner, {"name": "Travel desk", "systemPrompt": "You answer travel questions.", "model": SCRIPTED_MODEL}
    )


@pytest.fixture
def with_document(assistant, owner):
    # Read now, in this thread (the test's transaction is invisible to the background reader).
    (document,) = assistants.do_add_documents(owner, assistant.pk, [("guide.pdf", GUIDE)], assistants.read_documents)
    document.refresh_from_db()
    assert document.status == Document.Status.READY
    assistant.refresh_from_db()
    return assistant, document


def text_of(response, element_id: str) -> str:
    (found,) = Elements(response.content.decode()).find(id=element_id)
    return found[1]


def listed_names(client) -> list[str]:
    page = Elements(client.get("/chat/assistants/").content.decode())
    return [text for _, text in page.find(class_="assistant-name")]


def file_uses(user) -> int:
    period = UsagePeriod.objects.filter(user=user).first()
    return period.file_rag_used if period else 0


# --- create, edit, delete -------------------------------------------------------------------------------------


def test_the_owner_creates_an_assistant_from_the_page(scripted, owner, owner_client):
    response = owner_client.post(
        "/chat/assistants/",
        {"name": "  Code   reviewer ", "system_prompt": "Review code.", "model": SCRIPTED_MODEL, "web_search": "on"},
    )

    saved = Assistant.objects.get(owner=owner)
    assert response.status_code == 302 and response["Location"] == f"/chat/assistants/{saved.pk}/"
    assert (saved.name, saved.system_prompt, saved.model, saved.web_search, saved.published) == (
        "Code reviewer",
        "Review code.",
        SCRIPTED_MODEL,
        True,
        False,
    )
    assert listed_names(owner_client) == ["Code reviewer"]


def test_the_owner_edits_the_assistant_from_its_page(assistant, owner_client):
    page = owner_client.get(f"/chat/assistants/{assistant.pk}/")
    assert page.status_code == 200 and 'id="assistant-edit"' in page.content.decode()

    response = owner_client.post(
        f"/chat/assistants/{assistant.pk}/", {"name": "Travel", "system_prompt": "Be brief.", "model": SCRIPTED_MODEL}
    )

    assert response.status_code == 302
    assistant.refresh_from_db()
    assert (assistant.name, assistant.system_prompt, assistant.web_search) == ("Travel", "Be brief.", False)


def test_deleting_an_assistant_deletes_its_documents_and_keeps_its_chats(with_document, owner, owner_client):
    assistant, document = with_document
    chat = assistants.do_start_chat(owner, assistant.pk)

    response = owner_client.post(f"/chat/assistants/{assistant.pk}/delete/")

    assert response.status_code == 302 and response["Location"] == "/chat/assistants/"
    assert not Assistant.objects.filter(pk=assistant.pk).exists()
    assert not Collection.objects.exists() and not Document.objects.exists() and not Chunk.objects.exists()
    chat.refresh_from_db()
    assert chat.assistant_id is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "  ", "model": SCRIPTED_MODEL}, "An assistant needs a name."),
        ({"name": "x" * 101, "model": SCRIPTED_MODEL}, "The name is 101 characters; the limit is 100."),
        ({"name": "A", "model": "no-such-model"}, "Unknown model “no-such-model”."),
    ],
)
def test_bad_fields_are_refused_with_the_reason(scripted, owner_client, fields, message):
    form = {"system_prompt": "", **{("system_prompt" if k == "systemPrompt" else k): v for k, v in fields.items()}}

    response = owner_client.post("/chat/assistants/", form)

    assert response.status_code == 400
    assert message in text_of(response, "assistant-error")
    assert not Assistant.objects.exists()


def test_a_too_long_system_prompt_is_refused(scripted, owner):
    with pytest.raises(assistants.ChatError) as refused:
        assistants.do_create_assistant(owner, {"name": "A", "systemPrompt": "x" * 20_001, "model": SCRIPTED_MODEL})
    assert refused.value.status == 413


# --- documents: read once, charged once, never copied ----------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_documents_are_uploaded_from_the_page_read_in_the_background_and_charged_once(assistant, owner, owner_client):
    response = owner_client.post(f"/chat/assistants/{assistant.pk}/documents/", {"files": [pdf()]})

    assert response.status_code == 302
    assistant.refresh_from_db()
    wait_until_read(assistant.collection_id)
    (document,) = Document.objects.filter(collection_id=assistant.collection_id)
    assert (document.status, document.pages, document.chat_id) == ("ready", 2, None)
    assert file_uses(owner) == 1
    assert "guide.pdf" in text_of(owner_client.get(f"/chat/assistants/{assistant.pk}/"), "assistant-documents")

    owner_client.post(f"/chat/assistants/{assistant.pk}/documents/", {"files": [pdf("guide again.pdf")]})
    wait_until_read(assistant.collection_id)
    assert Document.objects.count() == 1 and file_uses(owner) == 1  # the same file again: nothing new to read


def test_an_unreadable_upload_is_refused_before_any_charge(assistant, owner, owner_client):
    response = owner_client.post(
        f"/chat/assistants/{assistant.pk}/documents/", {"files": [SimpleUploadedFile("tool.exe", b"MZ\x90\x00" * 10)]}
    )

    assert response.status_code == 400
    assert "tool.exe" in text_of(response, "assistant-error")
    assert not Document.objects.exists() and file_uses(owner) == 0


def test_a_file_with_no_text_is_listed_as_skipped_and_its_charge_given_back(assistant, owner):
    (document,) = assistants.do_add_documents(
        owner, assistant.pk, [("blank.pdf", make_text_pdf([""]))], assistants.read_documents
    )

    document.refresh_from_db()
    assert document.status == Document.Status.FAILED and document.error == '"blank.pdf" has no readable text.'
    assert file_uses(owner) == 0


def test_chats_started_from_an_assistant_share_its_chunks_without_copying_them(with_document, owner, other):
    assistant, document = with_document
    chunks = Chunk.objects.count()
    assert chunks > 0

    first = assistants.do_start_chat(owner, assistant.pk)
    second = assistants.do_start_chat(owner, assistant.pk)
    hits_first = retrieve(first.pk, "What is the travel code?", collection_ids=usable_collection_ids(first.pk))
    hits_second = retrieve(second.pk, "What is the travel code?", collection_ids=usable_collection_ids(second.pk))

    assert Chunk.objects.count() == chunks and Document.objects.count() == 1
    assert not Chunk.objects.filter(chat__isnull=False).exists()
    assert hits_first[0].document_id == hits_second[0].document_id == document.pk
    assert hits_first[0].page == 2 and "ORCA-19" in hits_first[0].text
    assert file_uses(owner) == 1  # starting chats charges nothing


def test_retrieval_searches_the_chats_own_files_and_the_assistants_together(with_document, owner):
    assistant, document = with_document
    chat = assistants.do_start_chat(owner, assistant.pk)
    own = ingest(chat, check_upload("notes.md", NOTES))
    collections = usable_collection_ids(chat.pk)

    parking = retrieve(chat.pk, "Which parking spot has the visitor?", collection_ids=collections)
    travel = retrieve(chat.pk, "What is the travel code for trains?", collection_ids=collections)

    assert parking[0].document_id == own.pk
    assert travel[0].document_id == document.pk
    assert {hit.document_id for hit in travel} == {own.pk, document.pk}  # one list, both sources
    assert retrieve(chat.pk, "What is the travel code for trains?")[0].document_id == own.pk  # without: only its own


# --- starting a chat --------------------------------------------------------------------------------------------


def test_start_chat_opens_a_chat_with_the_assistants_settings(assistant, owner, owner_client):
    assistant.web_search = True
    assistant.save()

    response = owner_client.post(f"/chat/assistants/{assistant.pk}/start/")

    chat = Chat.objects.get(owner=owner)
    assert response.status_code == 302 and response["Location"] == f"/chat/{chat.pk}/"
    assert (chat.title, chat.model, chat.system_prompt, chat.web_search, chat.assistant_id) == (
        "Travel desk",
        SCRIPTED_MODEL,
        "You answer travel questions.",
        True,
        assistant.pk,
    )
    page = Elements(owner_client.get(response["Location"]).content.decode())
    assert page.find("textarea", name="systemPrompt")[0][1] == "You answer travel questions."
    assert [attrs["value"] for attrs, _ in page.find("option", selected=True)] == [SCRIPTED_MODEL]
    assert "checked" in page.find("input", id="web-search")[0][0]


def test_the_sidebar_links_to_the_assistants_page(owner_client):
    page = Elements(owner_client.get("/chat/").content.decode())
    assert page.find("a", id="assistants-link")[0][0]["href"] == "/chat/assistants/"


# --- who sees what -------------------------------------------------------------------------------------------------


def test_another_user_neither_sees_nor_reaches_an_unpublished_assistant(with_document, other_client):
    assistant, _ = with_document

    assert "Travel desk" not in other_client.get("/chat/assistants/").content.decode()
    for path in ("", "delete/", "documents/", "start/"):
        method = other_client.get if path == "" else other_client.post
        assert method(f"/chat/assistants/{assistant.pk}/{path}").status_code == 404, path
    assert other_client.post(f"/chat/assistants/{assistant.pk}/", {"name": "Mine now"}).status_code == 404
    assert not Chat.objects.filter(assistant=assistant).exists()


def test_a_published_assistant_is_started_by_others_but_changed_by_its_owner_only(with_document, other, other_client):
    assistant, document = with_document
    Assistant.objects.filter(pk=assistant.pk).update(published=True)

    assert listed_names(other_client) == ["Travel desk"]
    page = other_client.get(f"/chat/assistants/{assistant.pk}/").content.decode()
    assert 'id="assistant-edit"' not in page and 'id="assistant-upload"' not in page
    assert other_client.post(f"/chat/assistants/{assistant.pk}/", {"name": "Mine now"}).status_code == 403
    assert other_client.post(f"/chat/assistants/{assistant.pk}/delete/").status_code == 403
    assert other_client.post(f"/chat/assistants/{assistant.pk}/documents/", {"files": [pdf()]}).status_code == 403
    assistant.refresh_from_db()
    assert assistant.name == "Travel desk" and Document.objects.count() == 1

    response = other_client.post(f"/chat/assistants/{assistant.pk}/start/")

    chat = Chat.objects.get(owner=other)
    assert response["Location"] == f"/chat/{chat.pk}/"
    hits = retrieve(chat.pk, "What is the travel code?", collection_ids=usable_collection_ids(chat.pk))
    assert hits[0].document_id == document.pk
    assert file_uses(other) == 0


def test_anonymous_visitors_are_sent_to_log_in(assistant):
    client = Client()
    for path, method in [
        ("/chat/assistants/", client.get),
        ("/chat/assistants/", client.post),
        (f"/chat/assistants/{assistant.pk}/", client.get),
        (f"/chat/assistants/{assistant.pk}/", client.post),
        (f"/chat/assistants/{assistant.pk}/delete/", client.post),
        (f"/chat/assistants/{assistant.pk}/documents/", client.post),
        (f"/chat/assistants/{assistant.pk}/start/", client.post),
    ]:
        response = method(path)
        assert response.status_code == 302 and "/login" in response["Location"], path
    assert Assistant.objects.count() == 1 and not Chat.objects.exists()


def test_forms_need_a_csrf_token(assistant, owner):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)

    assert client.post(f"/chat/assistants/{assistant.pk}/start/").status_code == 403
    assert client.post("/chat/assistants/", {"name": "X", "model": SCRIPTED_MODEL}).status_code == 403


# --- the assistant's files, served through a chat that uses it --------------------------------------------------


def test_an_assistant_document_is_served_through_a_chat_that_uses_it_and_to_nobody_else(
    with_document, owner, other, owner_client, other_client, make_chat
):
    assistant, document = with_document
    chat = assistants.do_start_chat(owner, assistant.pk)
    unrelated = make_chat(owner)
    others_chat = make_chat(other)
    path = f"/chat/{chat.pk}/documents/{document.pk}/file"

    served = owner_client.get(path)
    assert served.status_code == 200 and served["Content-Type"] == "application/pdf"
    assert b"".join(served.streaming_content) == GUIDE
    assert other_client.get(path).status_code == 404  # not their chat
    assert owner_client.get(f"/chat/{unrelated.pk}/documents/{document.pk}/file").status_code == 404
    assert other_client.get(f"/chat/{others_chat.pk}/documents/{document.pk}/file").status_code == 404
    assert Client().get(path).status_code == 302  # to the login page


def test_unpublishing_takes_the_documents_away_from_other_users_chats(with_document, other, other_client):
    assistant, document = with_document
    Assistant.objects.filter(pk=assistant.pk).update(published=True)
    chat = assistants.do_start_chat(other, assistant.pk)
    path = f"/chat/{chat.pk}/documents/{document.pk}/file"
    assert other_client.get(path).status_code == 200

    Assistant.objects.filter(pk=assistant.pk).update(published=False)

    assert other_client.get(path).status_code == 404
    assert usable_collection_ids(chat.pk) == []


# --- admin ------------------------------------------------------------------------------------------------------


def test_staff_publish_an_assistant_in_admin(assistant):
    staff = User.objects.create_superuser("admin@example.com", "admin password 123")
    client = Client()
    client.force_login(staff)
    assert client.get("/admin/chat/assistant/").status_code == 200

    response = client.post(
        "/admin/chat/assistant/", {"action": "publish", "_selected_action": [assistant.pk], "index": 0}
    )

    assert response.status_code == 302
    assistant.refresh_from_db()
    assert assistant.published


def test_the_chat_page_lists_the_assistants_documents_linked_through_the_chat(
    with_document, owner, owner_client, make_chat
):
    assistant, document = with_document
    chat = assistants.do_start_chat(owner, assistant.pk)

    page = Elements(owner_client.get(f"/chat/{chat.pk}/").content.decode())

    links = [attrs["href"] for attrs, text in page.find("a") if text == "guide.pdf"]
    assert links == [f"/chat/{chat.pk}/documents/{document.pk}/file"]
    plain = make_chat(owner)
    assert not Elements(owner_client.get(f"/chat/{plain.pk}/").content.decode()).find(id="assistant-chat-documents")
