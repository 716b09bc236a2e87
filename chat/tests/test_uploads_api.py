"""Files sent with a turn through the API: multipart/form-data on the JSON and SSE chat endpoints, alongside the
same fields as the JSON body. Good files are read into the chat and ground the answer; bad ones are refused with a
4xx naming the file before any quota is charged."""

import hashlib

import pytest
from asgiref.sync import sync_to_async
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, override_settings

from billing.models import UsagePeriod
from chat.models import Chat, ChatQuery
from rag.models import Document
from testsupport.files import (
    decompression_bomb_png,
    make_empty_pdf,
    make_encrypted_pdf,
    make_image,
    make_text_pdf,
    zip_bytes,
)
from testsupport.http import ServerAsyncClient, bearer, parse_sse, read_streaming

transactional = pytest.mark.django_db(transaction=True)



HANDBOOK = make_text_pdf(
    [
        "# Office handbook\nWelcome to the office. This handbook covers the building and its rules.",
        "# Access\nThe door code for the back entrance is 4471. Visitors sign in at the front desk.",
    ]
)


def upload(name: str, data: bytes, content_type: str = "application/octet-stream") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type=content_type)


async def post_multipart(key, fields: dict, files: list[SimpleUploadedFile], path="/api/v1/chat"):
    return await ServerAsyncClient().post(path, {**fields, "files": files}, headers=bearer(key))


def usage(user) -> dict:
    period = UsagePeriod.objects.filter(user=user).first()
    names = ("chats_used", "images_used", "web_searches_used", "file_rag_used")
    return {name: getattr(period, name) if period else 0 for name in names}


def grounding_of(call: dict) -> str:
    """The grounding system message the provider received (file excerpts and web results)."""
    texts = [m["content"] for m in call["messages"] if m["role"] == "system" and "<file_excerpts>" in m["content"]]
    assert len(texts) == 1, call["messages"]
    return texts[0]


# --- accepted files ------------------------------------------------------------------------------------------


@transactional
async def test_a_pdf_sent_with_a_json_turn_grounds_the_answer_and_is_kept_in_the_chat(scripted, owner, owner_key):
    scripted.tokens = ["The code is 4471 [1]."]

    response = await post_multipart(
        owner_key, {"prompt": "What is the door code?", "systemPrompt": "Be brief."}, [upload("handbook.pdf", HANDBOOK)]
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["chatQuery"]["response"] == "The code is 4471 [1]."
    assert body["chatQuery"]["metadata"]["files"] == [
        {"name": "handbook.pdf", "kind": "pdf", "mime": "application/pdf", "size": len(HANDBOOK),
         "sha256": hashlib.sha256(HANDBOOK).hexdigest()}
    ]
    document = await Document.objects.aget(chat_id=body["chat"]["id"])
    assert (document.name, document.status, document.pages) == ("handbook.pdf", "ready", 2)

    # What the model received: the user's system prompt, then the excerpts in their delimiters, then the question.
    messages = scripted.calls[-1]["messages"]
    assert messages[0] == {"role": "system", "content": "Be brief."}
    grounding = grounding_of(scripted.calls[-1])
    assert grounding.startswith("<file_excerpts>\n[1] handbook.pdf, page 2")
    assert "The door code for the back entrance is 4471." in grounding
    assert "</file_excerpts>" in grounding and "cite it right after the statement by its number" in grounding
    assert messages[-1] == {"role": "user", "content": "What is the door code?"}

    sources = body["chatQuery"]["metadata"]["sources"]
    assert sources[0]["kind"] == "file" and sources[0]["documentName"] == "handbook.pdf"
    assert (sources[0]["n"], sources[0]["ref"], sources[0]["page"]) == (1, "1", 2)
    assert sources[0]["url"] == f"/chat/{body['chat']['id']}/documents/{document.pk}/file#page=2"
    assert "4471" in sources[0]["snippet"]
    assert await sync_to_async(usage)(owner) == {
        "chats_used": 1,
        "images_used": 0,
        "web_searches_used": 0,
        "file_rag_used": 1,
    }


@transactional
async def test_an_image_sent_to_the_sse_endpoint_is_read_by_ocr_with_live_progress(scripted, owner_key):
    scan = make_image("Locker 17 belongs to Priya", fmt="PNG")

    response = await post_multipart(
        owner_key, {"prompt": "Whose is locker 17?"}, [upload("lockers.png", scan)], "/api/v1/chat/stream"
    )

    assert response.status_code == 200, response.content
    events = parse_sse(await read_streaming(response))
    statuses = [e["message"] for e in events if e["type"] == "status"]
    assert "Reading lockers.png…" in statuses
    assert "OCR page 1 of 1 in lockers.png" in statuses
    kinds = [e["type"] for e in events]
    assert kinds.index("sources") < kinds.index("content")  # what the answer stands on comes first
    sources = next(e for e in events if e["type"] == "sources")["sources"]
    assert [(s["kind"], s["documentName"], s["page"]) for s in sources] == [("file", "lockers.png", 1)]
    assert "Priya" in grounding_of(scripted.calls[-1])
    assert kinds[-2:] == ["complete", "done"]


@transactional
async def test_multipart_follow_ups_and_their_fields_work_like_json(scripted, owner_key, owner, make_chat):
    chat = await sync_to_async(make_chat)(owner, [("Earlier question", "Earlier answer")])
    notes = b"# Garden notes\n\n- The tomatoes are watered on Tuesdays.\n- The gate key hangs in the shed."

    response = await post_multipart(
        owner_key,
        {"prompt": "When are the tomatoes watered?", "webSearch": "false", "systemPrompt": "Answer briefly."},
        [upload("garden.md", notes, "text/markdown")],
        f"/api/v1/chat/{chat.pk}",
    )

    assert response.status_code == 200, response.content
    saved = await Chat.objects.aget(pk=chat.pk)
    assert (saved.system_prompt, saved.web_search) == ("Answer briefly.", False)
    document = await Document.objects.aget(chat=chat)
    assert (document.kind, document.status) == ("markdown", "ready")
    roles = [(m["role"], m["content"][:20]) for m in scripted.calls[-1]["messages"]]
    assert roles[0] == ("system", "Answer briefly.")
    assert ("user", "Earlier question") in roles
    assert "Tuesdays" in grounding_of(scripted.calls[-1])


@transactional
async def test_a_file_without_readable_text_is_skipped_the_answer_goes_on_and_its_quota_is_returned(
    scripted, owner, owner_key
):
    blank = make_image("", fmt="PNG")  # a valid image with nothing to read

    response = await post_multipart(
        owner_key, {"prompt": "What does it say?"}, [upload("blank.png", blank)], "/api/v1/chat/stream"
    )

    events = parse_sse(await read_streaming(response))
    skipped = [e["message"] for e in events if e["type"] == "status" and "was skipped" in e["message"]]
    assert len(skipped) == 1 and skipped[0].startswith("blank.png was skipped: ")
    assert events[-2]["type"] == "complete" and events[-2]["query"]["response"] == "Hello, world!"
    assert "sources" not in [e["type"] for e in events]
    assert await sync_to_async(usage)(owner) == {
        "chats_used": 1,
        "images_used": 0,
        "web_searches_used": 0,
        "file_rag_used": 0,
    }
    document = await Document.objects.aget()
    assert document.status == "failed" and document.error.startswith('"blank.png" ')
    # The status says why, without naming the file twice.
    assert skipped == ["blank.png was skipped: it " + document.error.removeprefix('"blank.png" ')]


# --- refused files -------------------------------------------------------------------------------------------

# name → (bytes, status, code, a phrase the message must contain besides the file name)
BAD_FILES = {
    "corrupt.pdf": (b"%PDF-1.7\n1 0 obj << /Type /Catalog >> this is not a real PDF", 400, None, ""),
    "locked.pdf": (make_encrypted_pdf(), 400, None, "password"),
    "empty.pdf": (make_empty_pdf(), 400, None, "empty"),
    "photo.png": (zip_bytes(), 400, "unsupported_type", "zip"),
    "nothing.txt": (b"", 400, "empty_file", "empty"),
    "bomb.png": (decompression_bomb_png(), 400, None, "pixels"),
    "program.pdf": (b"\x7fELF\x02\x01\x01" + b"\x00" * 64, 400, "unsupported_type", ""),
}
TURN_PATHS = ["/api/v1/chat", "/api/v1/chat/stream", "/api/v1/chat/{chat}", "/api/v1/chat/{chat}/stream"]


def snapshot():
    return (
        [c.as_dict() for c in Chat.objects.order_by("pk")],
        [q.as_dict() for q in ChatQuery.objects.order_by("pk")],
        list(Document.objects.values_list("pk", flat=True)),
    )


def assert_refused_naming(response, status: int, name: str, code: str | None = None, phrase: str = ""):
    assert response.status_code == status, response.content
    body = response.json()
    assert name in body["error"], body
    assert phrase.lower() in body["error"].lower(), body
    if code:
        assert body["code"] == code, body


@pytest.mark.parametrize("path", TURN_PATHS)
@pytest.mark.parametrize("name", BAD_FILES)
def test_a_bad_file_is_refused_naming_it_before_any_quota_is_charged(scripted, owner, owner_key, make_chat, path, name):
    data, status, code, phrase = BAD_FILES[name]
    chat = make_chat(owner, [("Earlier question", "Earlier answer")])
    before = snapshot()

    response = Client().post(
        path.format(chat=chat.pk), {"prompt": "Read this", "files": [upload(name, data)]}, headers=bearer(owner_key)
    )

    assert_refused_naming(response, status, name, code, phrase)
    assert snapshot() == before
    assert usage(owner) == {"chats_used": 0, "images_used": 0, "web_searches_used": 0, "file_rag_used": 0}
    assert scripted.calls == []


@override_settings(RAG_MAX_FILE_BYTES=2048)
def test_an_oversized_file_is_refused_with_413_naming_it(scripted, owner, owner_key):
    response = Client().post(
        "/api/v1/chat", {"prompt": "Read", "files": [upload("big.txt", b"word " * 1000)]}, headers=bearer(owner_key)
    )

    assert_refused_naming(response, 413, "big.txt", "file_too_large", "limit")
    assert not ChatQuery.objects.exists()
    assert usage(owner)["chats_used"] == 0


@override_settings(RAG_MAX_REQUEST_BYTES=3000)
def test_files_over_the_request_limit_together_are_refused_with_413(scripted, owner, owner_key, settings):
    settings.FREE_TIER_LIMITS = {**settings.FREE_TIER_LIMITS, "files_per_request": 3}
    files = [upload(f"part{i}.txt", f"Part {i} ".encode() * 250) for i in range(2)]

    response = Client().post("/api/v1/chat", {"prompt": "Read", "files": files}, headers=bearer(owner_key))

    assert response.status_code == 413, response.content
    assert response.json()["code"] == "request_too_large"
    assert not ChatQuery.objects.exists()


@override_settings(RAG_MAX_REQUEST_BYTES=1000, DATA_UPLOAD_MAX_MEMORY_SIZE=1024)
def test_a_body_far_over_the_limits_is_refused_before_its_files_are_read(scripted, owner, owner_key):
    response = Client().post(
        "/api/v1/chat", {"prompt": "Read", "files": [upload("big.txt", b"x" * 5000)]}, headers=bearer(owner_key)
    )

    assert response.status_code == 413, response.content
    assert response.json()["code"] == "request_too_large"
    assert response.json()["error"].startswith("The request is ")
    assert not ChatQuery.objects.exists()


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=2048)
def test_oversized_fields_in_a_multipart_body_are_refused_with_413(scripted, owner_key):
    response = Client().post(
        "/api/v1/chat", {"prompt": "x" * 5000, "files": [upload("a.txt", b"Text.")]}, headers=bearer(owner_key)
    )

    assert response.status_code == 413, response.content
    assert response.json()["code"] == "body_too_large"
    assert not ChatQuery.objects.exists()


def test_more_files_than_the_free_tier_allows_are_refused(scripted, owner, owner_key):
    files = [upload("one.txt", b"First file."), upload("two.txt", b"Second file.")]

    response = Client().post("/api/v1/chat", {"prompt": "Read both", "files": files}, headers=bearer(owner_key))

    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "too_many_files"
    assert "1 file per message" in body["error"]
    assert not ChatQuery.objects.exists()
    assert usage(owner) == {"chats_used": 0, "images_used": 0, "web_searches_used": 0, "file_rag_used": 0}


def test_an_exhausted_file_quota_refuses_with_429_and_charges_nothing(scripted, owner, owner_key, settings):
    settings.FREE_TIER_LIMITS = {**settings.FREE_TIER_LIMITS, "file_rag_limit": 0}

    response = Client().post(
        "/api/v1/chat", {"prompt": "Read", "files": [upload("notes.txt", b"Some notes.")]}, headers=bearer(owner_key)
    )

    assert response.status_code == 429, response.content
    assert response.json()["code"] == "quota_exceeded"
    assert "file uses" in response.json()["error"]
    assert not ChatQuery.objects.exists()
    assert usage(owner) == {"chats_used": 0, "images_used": 0, "web_searches_used": 0, "file_rag_used": 0}


def test_files_in_another_field_are_refused(scripted, owner_key):
    response = Client().post(
        "/api/v1/chat", {"prompt": "Read", "document": [upload("notes.txt", b"Notes.")]}, headers=bearer(owner_key)
    )

    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid_field"
    assert "files" in response.json()["error"]


@pytest.mark.parametrize(
    "fields, phrase",
    [({}, "prompt"), ({"prompt": "   "}, "empty"), ({"prompt": "hi", "webSearch": "maybe"}, "webSearch")],
)
def test_bad_multipart_fields_are_refused_like_bad_json(scripted, owner_key, fields, phrase):
    response = Client().post(
        "/api/v1/chat", {**fields, "files": [upload("a.txt", b"Text.")]}, headers=bearer(owner_key)
    )

    assert response.status_code == 400, response.content
    assert phrase.lower() in response.json()["error"].lower()
    assert not ChatQuery.objects.exists()


# --- reading a chat's documents back ---------------------------------------------------------------------------


@transactional
async def test_get_chat_returns_sources_and_documents_and_files_download_for_the_owner_only(
    scripted, owner_key, other_key
):
    response = await post_multipart(owner_key, {"prompt": "What is the door code?"}, [upload("handbook.pdf", HANDBOOK)])
    chat_id = response.json()["chat"]["id"]
    client = ServerAsyncClient()

    chat = (await client.get(f"/api/v1/chat/{chat_id}", headers=bearer(owner_key))).json()
    assert chat["queries"][0]["metadata"]["sources"][0]["documentName"] == "handbook.pdf"
    listed = (await client.get(f"/api/v1/chat/{chat_id}/documents", headers=bearer(owner_key))).json()["documents"]
    assert listed == chat["documents"]
    assert [(d["name"], d["status"], d["pages"], d["kind"]) for d in listed] == [("handbook.pdf", "ready", 2, "pdf")]

    download = await client.get(listed[0]["downloadUrl"], headers=bearer(owner_key))
    assert download.status_code == 200
    assert b"".join(download.streaming_content) == HANDBOOK
    assert download["Content-Type"] == "application/pdf"

    for path in (listed[0]["downloadUrl"], f"/api/v1/chat/{chat_id}/documents"):
        refused = await client.get(path, headers=bearer(other_key))
        assert refused.status_code == 404, path
        assert (await client.get(path)).status_code == 401, path
