"""Documents in a chat: ingest stores them once per chat, they stay with the chat across turns, and they go when
the chat goes (rows and the stored file)."""

import threading
from datetime import timedelta

import pytest
from django.core.files.storage import default_storage
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from chat.models import Chat
from rag import service
from rag.embeddings import OPENAI_EMBEDDING_MODEL, get_embedder
from rag.files import check_upload
from rag.models import Chunk, Document
from rag.retrieval import retrieve
from rag.service import chat_has_documents, documents_for_chat, ingest
from rag.types import FileRejected
from testsupport.files import make_text_pdf

NOTES = (
    b"# Office notes\n\n"
    b"The wifi password is mango-42.\n\n"
    b"Locker 17 belongs to Priya. The plants on the third floor are watered on Fridays.\n"
)


@pytest.fixture(autouse=True)
def _local_embeddings_and_media(settings, tmp_path):
    settings.RAG_EMBEDDINGS = "local"
    settings.MEDIA_ROOT = tmp_path


@pytest.fixture
def chat(make_chat, owner):
    return make_chat(owner)


@pytest.fixture
def extract_calls(monkeypatch):
    """Counts how often ingest really reads a file."""
    calls = []
    real = service.extract

    def counting(upload, progress=None):
        calls.append(upload.name)
        return real(upload, progress=progress)

    monkeypatch.setattr(service, "extract", counting)
    return calls


def test_ingest_stores_the_document_its_chunks_and_the_file(chat, owner):
    messages = []
    upload = check_upload("notes.txt", NOTES)
    document = ingest(chat, upload, progress=messages.append)

    document.refresh_from_db()
    assert document.status == Document.Status.READY
    assert (document.name, document.kind, document.mime) == ("notes.txt", upload.kind, upload.mime)
    assert (document.pages, document.size, document.sha256) == (1, len(NOTES), upload.sha256)
    assert document.embedding_model == get_embedder().name
    chunks = list(document.chunks.order_by("position"))
    assert chunks and all(c.chat_id == chat.id for c in chunks)
    assert "mango-42" in " ".join(c.text for c in chunks)
    assert all(len(c.vector) == get_embedder().dimensions for c in chunks)
    assert document.file.name == f"documents/{owner.id}/{document.sha256}/notes.txt"
    with default_storage.open(document.file.name, "rb") as stored:
        assert stored.read() == NOTES
    assert f"Embedding notes.txt: {len(chunks)} of {len(chunks)} chunks" in messages
    assert messages[-1] == "notes.txt is ready"


@pytest.mark.parametrize(("name", "stored_as"), [("???", "file"), ("my notes (v2).txt", "my_notes_v2.txt")])
def test_stored_file_names_are_safe(chat, owner, name, stored_as):
    document = ingest(chat, check_upload(name, NOTES))
    assert document.file.name == f"documents/{owner.id}/{document.sha256}/{stored_as}"
    assert document.name == name  # shown to the user as uploaded


def test_the_same_file_twice_in_a_chat_is_processed_once(chat, extract_calls):
    first = ingest(chat, check_upload("notes.txt", NOTES))
    chunk_count = Chunk.objects.count()
    messages = []
    again = ingest(chat, check_upload("renamed.md", NOTES), progress=messages.append)
    assert again.pk == first.pk
    assert extract_calls == ["notes.txt"]
    assert Chunk.objects.count() == chunk_count
    assert messages == ["notes.txt is already in this chat"]


def test_the_unique_constraint_backs_the_dedupe(chat):
    ingest(chat, check_upload("notes.txt", NOTES))
    with pytest.raises(IntegrityError), transaction.atomic():
        Document.objects.create(
            chat=chat, name="copy", kind="text", mime="text/plain", sha256=Document.objects.get().sha256
        )


def test_the_same_file_in_another_chat_of_the_user_reuses_the_work_and_the_stored_file(
    chat, make_chat, owner, extract_calls
):
    first = ingest(chat, check_upload("notes.txt", NOTES))
    other_chat = make_chat(owner)
    messages = []
    second = ingest(other_chat, check_upload("notes.txt", NOTES), progress=messages.append)
    assert second.pk != first.pk and second.chat_id == other_chat.id
    assert second.status == Document.Status.READY
    assert extract_calls == ["notes.txt"]  # no second extraction or embedding
    assert "reusing" in messages[0]
    first_texts = list(first.chunks.order_by("position").values_list("text", "embedding"))
    assert list(second.chunks.order_by("position").values_list("text", "embedding")) == first_texts
    assert second.file.name == first.file.name
    assert retrieve(other_chat.id, "wifi password")[0].document_id == second.pk


def test_another_users_copy_is_not_reused(chat, make_chat, other, extract_calls):
    ingest(chat, check_upload("notes.txt", NOTES))
    theirs = ingest(make_chat(other), check_upload("notes.txt", NOTES))
    assert extract_calls == ["notes.txt", "notes.txt"]
    assert theirs.file.name.startswith(f"documents/{other.id}/")


def test_a_file_without_text_is_rejected_and_remembered_as_failed(chat, extract_calls):
    blank_pdf = check_upload("blank.pdf", make_text_pdf(["", ""]))
    with pytest.raises(FileRejected) as caught:
        ingest(chat, blank_pdf)
    document = Document.objects.get(chat=chat)
    assert document.status == Document.Status.FAILED
    assert document.error == caught.value.message and "blank.pdf" in document.error
    assert not document.chunks.exists() and not document.file
    assert not chat_has_documents(chat.id)

    # Uploading it again tries again (on the same row), and fails the same way.
    with pytest.raises(FileRejected):
        ingest(chat, blank_pdf)
    assert extract_calls == ["blank.pdf", "blank.pdf"]
    assert Document.objects.filter(chat=chat).count() == 1


def test_a_failed_document_can_succeed_on_a_later_upload(chat, monkeypatch):
    upload = check_upload("notes.txt", NOTES)

    def unreadable(upload, progress=None):
        raise FileRejected("cannot read it today", code="no_text")

    with monkeypatch.context() as patch:
        patch.setattr(service, "extract", unreadable)
        with pytest.raises(FileRejected):
            ingest(chat, upload)
    document = ingest(chat, upload)
    assert document.status == Document.Status.READY and document.error == ""
    assert chat_has_documents(chat.id)


def test_a_cancelled_ingest_leaves_a_retryable_failure_not_a_stuck_document(chat):
    class Stop(BaseException):
        pass

    def stop_when_embedding(message):
        if message.startswith("Embedding"):
            raise Stop

    upload = check_upload("notes.txt", NOTES)
    with pytest.raises(Stop):
        ingest(chat, upload, progress=stop_when_embedding)
    document = Document.objects.get(chat=chat)
    assert document.status == Document.Status.FAILED and "stopped" in document.error
    assert not document.chunks.exists()
    assert ingest(chat, upload).status == Document.Status.READY  # at once, no waiting for a stale worker


def test_an_unreachable_embedder_fails_the_file_with_a_503(chat, emulator, settings):
    settings.RAG_EMBEDDINGS = "auto"  # the emulator fixture set OPENAI_API_KEY
    emulator.configure(fault="http_500")
    with pytest.raises(FileRejected) as caught:
        ingest(chat, check_upload("notes.txt", NOTES))
    assert (caught.value.code, caught.value.status) == ("embedding_unavailable", 503)
    assert "OpenAI" in caught.value.message
    assert Document.objects.get(chat=chat).status == Document.Status.FAILED


def test_openai_embeddings_are_stored_with_their_model_name(chat, emulator, settings):
    settings.RAG_EMBEDDINGS = "auto"
    document = ingest(chat, check_upload("notes.txt", NOTES))
    assert document.embedding_model == f"openai:{OPENAI_EMBEDDING_MODEL}"
    chunk = document.chunks.first()
    assert len(chunk.vector) == emulator.config["embedding_dimensions"]
    (request,) = [r for r in emulator.requests if r["path"].endswith("/embeddings")]
    assert request["body"]["model"] == OPENAI_EMBEDDING_MODEL


def test_a_stale_processing_document_is_taken_over(chat, settings, extract_calls):
    upload = check_upload("notes.txt", NOTES)
    abandoned = Document.objects.create(
        chat=chat, name="notes.txt", kind="markdown", mime="text/markdown", sha256=upload.sha256
    )
    Document.objects.filter(pk=abandoned.pk).update(
        updated_at=timezone.now() - timedelta(seconds=settings.RAG_INGEST_STALE_SECONDS + 1)
    )
    document = ingest(chat, upload)
    assert document.pk == abandoned.pk and document.status == Document.Status.READY
    assert extract_calls == ["notes.txt"]


@pytest.mark.django_db(transaction=True)
def test_concurrent_ingests_of_one_file_make_one_document(make_chat, owner, monkeypatch):
    chat = make_chat(owner)
    upload = check_upload("notes.txt", NOTES)
    real = service.extract
    calls = []
    both_started = threading.Barrier(2)

    def slow_extract(upload, progress=None):
        calls.append(upload.name)
        threading.Event().wait(0.5)  # the other request arrives while this one works
        return real(upload, progress=progress)

    monkeypatch.setattr(service, "extract", slow_extract)
    results, errors, messages = [], [], []

    def worker():
        try:
            both_started.wait()
            results.append(ingest(Chat.objects.get(pk=chat.pk), upload, progress=messages.append).pk)
        except Exception as exc:  # surfaced by the assertions below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert len(results) == 2 and results[0] == results[1]
    assert calls == ["notes.txt"]
    assert Document.objects.filter(chat=chat).count() == 1
    assert Document.objects.get().status == Document.Status.READY
    assert any("waiting" in m for m in messages)


# --- documents belong to the chat -----------------------------------------------------------------------------


def test_documents_stay_with_the_chat_across_turns(chat, make_chat, owner):
    assert not chat_has_documents(chat.id)
    ingest(chat, check_upload("notes.txt", NOTES))
    ingest(chat, check_upload("second.txt", b"The cafeteria opens at eight."))
    # A later turn (a fresh lookup, nothing uploaded this time) still has both.
    later = Chat.objects.get(pk=chat.pk)
    assert chat_has_documents(later.id)
    assert [d.name for d in documents_for_chat(later.id)] == ["notes.txt", "second.txt"]
    assert retrieve(later.id, "Who owns locker 17?")[0].text.count("Priya") == 1
    assert not chat_has_documents(make_chat(owner).id)


def test_failed_documents_are_listed_but_not_searched(chat):
    with pytest.raises(FileRejected):
        ingest(chat, check_upload("blank.pdf", make_text_pdf([""])))
    (listed,) = documents_for_chat(chat.id)
    assert listed.status == Document.Status.FAILED and listed.error
    assert not chat_has_documents(chat.id)


@pytest.mark.django_db(transaction=True)
def test_deleting_the_chat_deletes_its_documents_chunks_and_file(make_chat, owner):
    chat = make_chat(owner)
    document = ingest(chat, check_upload("notes.txt", NOTES))
    stored = document.file.name
    assert default_storage.exists(stored)
    chat.delete()
    assert not Document.objects.exists()
    assert not Chunk.objects.exists()
    assert not default_storage.exists(stored)


@pytest.mark.django_db(transaction=True)
def test_a_file_shared_with_another_chat_survives_one_chat_being_deleted(make_chat, owner):
    first_chat, second_chat = make_chat(owner), make_chat(owner)
    first = ingest(first_chat, check_upload("notes.txt", NOTES))
    second = ingest(second_chat, check_upload("notes.txt", NOTES))
    assert first.file.name == second.file.name
    first_chat.delete()
    assert default_storage.exists(second.file.name)
    second_chat.delete()
    assert not default_storage.exists(second.file.name)


def test_the_file_goes_to_s3_when_configured(chat, owner, s3_storage):
    document = ingest(chat, check_upload("notes.txt", NOTES))
    key = f"documents/{owner.id}/{document.sha256}/notes.txt"
    assert document.file.name == key
    assert s3_storage.get_object(Bucket=s3_storage.bucket, Key=key)["Body"].read() == NOTES
