"""Assistants over the API (/api/v1/chat/assistants…): the owner creates, reads, changes and deletes theirs and adds
documents; anyone starts a chat from their own or a published one; a turn of that chat (the one pipeline) follows
the assistant's system prompt and model and cites its documents; others get 404 (unpublished) or 403 (published,
not theirs); anonymous callers 401; bad input a 4xx."""

import json

import pytest
from asgiref.sync import sync_to_async
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from billing.models import UsagePeriod
from chat.models import Assistant, Chat
from chat.tests.test_assistant_documents import wait_until_read
from querynox.body_limits import request_body_limit, upload_limit
from rag.models import Chunk, Document
from testsupport.files import make_text_pdf
from testsupport.http import ServerAsyncClient, bearer, parse_sse, read_streaming
from testsupport.scripted import SCRIPTED_MODEL

BASE = "/api/v1/chat/assistants"
GUIDE = make_text_pdf(
    [
        "# Travel guide\nThis guide covers how staff travel for work.",
        "# Trains\nBook trains through the portal; the travel code is ORCA-19.",
    ]
)


@pytest.fixture(autouse=True)
def _local_embeddings(settings):
    settings.RAG_EMBEDDINGS = "local"


def api(key=None):
    client = Client()
    headers = bearer(key) if key else {}

    def call(method, path, body=None, **extra):
        kwargs = {"headers": headers, **extra}
        if body is not None:
            kwargs.update(data=json.dumps(body), content_type="application/json")
        return getattr(client, method)(path, **kwargs)

    return call


def upload(key, assistant_id, *files):
    return Client().post(f"{BASE}/{assistant_id}/documents", {"files": list(files)}, headers=bearer(key))


def guide(name="guide.pdf", data=GUIDE):
    return SimpleUploadedFile(name, data, content_type="application/pdf")


@pytest.fixture
def created(scripted, owner_key):
    response = api(owner_key)(
        "post", BASE, {"name": "Travel desk", "systemPrompt": "You answer travel questions.", "model": SCRIPTED_MODEL}
    )
    assert response.status_code == 201, response.content
    return response.json()["assistant"]


def file_uses(user) -> int:
    period = UsagePeriod.objects.filter(user=user).first()
    return period.file_rag_used if period else 0


@pytest.mark.django_db
def test_the_owner_creates_reads_changes_and_deletes_an_assistant(created, owner_key):
    call = api(owner_key)
    assert created["name"] == "Travel desk" and created["model"] == SCRIPTED_MODEL
    assert created["mine"] is True and created["published"] is False and created["documents"] == []

    assert [a["id"] for a in call("get", BASE).json()["assistants"]] == [created["id"]]
    assert call("get", f"{BASE}/{created['id']}").json()["assistant"]["systemPrompt"] == "You answer travel questions."

    changed = call("patch", f"{BASE}/{created['id']}", {"webSearch": True, "name": "Travel"})
    assert changed.status_code == 200
    assert (changed.json()["assistant"]["name"], changed.json()["assistant"]["webSearch"]) == ("Travel", True)
    assert changed.json()["assistant"]["systemPrompt"] == "You answer travel questions."  # not sent: kept

    assert call("delete", f"{BASE}/{created['id']}").status_code == 204
    assert call("get", f"{BASE}/{created['id']}").status_code == 404
    assert not Assistant.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"name": ""}, 400),
        ({"name": "A", "model": "no-such-model"}, 400),
        ({"name": "A", "webSearch": "maybe"}, 400),
        ({"systemPrompt": "no name"}, 400),
        ({"name": "A", "systemPrompt": "x" * 20_001}, 413),
        ({"name": "\ud800"}, 400),
    ],
)
def test_bad_input_is_refused(scripted, owner_key, body, status):
    response = api(owner_key)("post", BASE, body)
    assert response.status_code == status, response.content
    assert response.json()["error"] and response.json()["code"]
    assert not Assistant.objects.exists()


@pytest.mark.django_db
def test_ids_that_are_not_assistants_are_not_found(scripted, owner_key):
    call = api(owner_key)
    for assistant_id in ("abc", "0", "-1", "99999999999999999999999", "12"):
        assert call("get", f"{BASE}/{assistant_id}").status_code == 404, assistant_id
        assert call("post", f"{BASE}/{assistant_id}/chats").status_code == 404, assistant_id


@pytest.mark.django_db(transaction=True)
def test_documents_are_read_once_in_the_background_charged_once_and_listed(created, owner, owner_key):
    response = upload(owner_key, created["id"], guide())

    assert response.status_code == 202, response.content
    (document,) = response.json()["documents"]
    assert (document["name"], document["status"]) == ("guide.pdf", "processing")
    assert [d["id"] for d in response.json()["assistant"]["documents"]] == [document["id"]]
    wait_until_read(Assistant.objects.get().collection_id)
    (listed,) = api(owner_key)("get", f"{BASE}/{created['id']}").json()["assistant"]["documents"]
    assert (listed["id"], listed["status"], listed["pages"]) == (document["id"], "ready", 2)
    assert file_uses(owner) == 1
    chunks = Chunk.objects.count()

    again = upload(owner_key, created["id"], guide("copy.pdf"))
    assert again.status_code == 202 and again.json()["documents"][0]["id"] == document["id"]
    assert again.json()["documents"][0]["status"] == "ready"  # nothing new to read
    assert file_uses(owner) == 1 and Chunk.objects.count() == chunks


@pytest.mark.django_db
def test_bad_uploads_are_refused_before_any_charge(created, owner, owner_key):
    assert upload(owner_key, created["id"], guide("tool.exe", b"MZ\x90\x00" * 10)).status_code == 400
    assert upload(owner_key, created["id"], guide("a.pdf"), guide("b.pdf", GUIDE + b" ")).status_code == 400  # plan: 1
    assert upload(owner_key, created["id"]).status_code == 400  # no files
    as_json = api(owner_key)("post", f"{BASE}/{created['id']}/documents", {"files": []})
    assert as_json.status_code == 400
    assert not Document.objects.exists() and file_uses(owner) == 0


@pytest.mark.django_db
def test_starting_a_chat_applies_the_assistants_settings(created, owner, owner_key):
    response = api(owner_key)("post", f"{BASE}/{created['id']}/chats")

    assert response.status_code == 201
    chat = response.json()["chat"]
    assert (chat["assistantId"], chat["model"], chat["systemPrompt"], chat["title"]) == (
        created["id"],
        SCRIPTED_MODEL,
        "You answer travel questions.",
        "Travel desk",
    )
    assert Chat.objects.get(pk=chat["id"]).owner == owner
    listed = api(owner_key)("get", "/api/v1/chat/user").json()["chats"]
    assert [c["id"] for c in listed] == [chat["id"]]


@pytest.mark.django_db
def test_another_user_gets_404_for_an_unpublished_assistant_on_every_endpoint(created, other_key):
    call = api(other_key)
    path = f"{BASE}/{created['id']}"

    assert call("get", BASE).json()["assistants"] == []
    assert call("get", path).status_code == 404
    assert call("patch", path, {"name": "Mine"}).status_code == 404
    assert call("delete", path).status_code == 404
    assert upload(other_key, created["id"], guide()).status_code == 404
    assert call("post", f"{path}/chats").status_code == 404
    assert Assistant.objects.get().name == "Travel desk" and not Chat.objects.exists()


@pytest.mark.django_db
def test_a_published_assistant_is_read_and_started_by_others_and_changed_by_nobody_but_its_owner(
    created, owner_key, other, other_key
):
    upload(owner_key, created["id"], guide())
    Assistant.objects.filter(pk=created["id"]).update(published=True)
    call = api(other_key)
    path = f"{BASE}/{created['id']}"

    (listed,) = call("get", BASE).json()["assistants"]
    assert listed["id"] == created["id"] and listed["mine"] is False and listed["published"] is True
    assert [d["name"] for d in call("get", path).json()["assistant"]["documents"]] == ["guide.pdf"]
    assert call("patch", path, {"name": "Mine"}).status_code == 403
    assert call("delete", path).status_code == 403
    assert upload(other_key, created["id"], guide("other.pdf", GUIDE + b" ")).status_code == 403
    started = call("post", f"{path}/chats")
    assert started.status_code == 201
    assert Chat.objects.get(pk=started.json()["chat"]["id"]).owner == other
    assert Assistant.objects.get().name == "Travel desk" and Document.objects.count() == 1
    assert file_uses(other) == 0


@pytest.mark.django_db
def test_anonymous_callers_get_401_everywhere(created):
    call = api()
    path = f"{BASE}/{created['id']}"
    for method, target, body in [
        ("get", BASE, None),
        ("post", BASE, {"name": "A"}),
        ("get", path, None),
        ("patch", path, {"name": "A"}),
        ("delete", path, None),
        ("post", f"{path}/documents", None),
        ("post", f"{path}/chats", None),
    ]:
        assert call(method, target, body).status_code == 401, (method, target)
    assert Assistant.objects.count() == 1 and not Chat.objects.exists()


# --- a turn of a chat started from an assistant: the one pipeline --------------------------------------------


async def stream(key, path, **fields) -> list[dict]:
    response = await ServerAsyncClient().post(path, fields, content_type="application/json", headers=bearer(key))
    assert response.status_code == 200, response.content
    return parse_sse(await read_streaming(response))


@pytest.mark.django_db(transaction=True)
async def test_a_turn_follows_the_assistant_and_cites_its_document_with_the_page(
    scripted, owner, owner_key, other, other_key
):
    call = api(owner_key)
    fields = {"name": "Travel desk", "systemPrompt": "You answer travel questions.", "model": SCRIPTED_MODEL}
    created = (await sync_to_async(call)("post", BASE, fields)).json()["assistant"]
    assert (await sync_to_async(upload)(owner_key, created["id"], guide())).status_code == 202
    await sync_to_async(wait_until_read)((await Assistant.objects.aget()).collection_id)
    chunks = await Chunk.objects.acount()
    chat = (await sync_to_async(call)("post", f"{BASE}/{created['id']}/chats")).json()["chat"]

    events = await stream(owner_key, f"/api/v1/chat/{chat['id']}/stream", prompt="What is the travel code?")

    assert events[-2]["type"] == "complete"
    source, *_ = next(e for e in events if e["type"] == "sources")["sources"]
    assert (source["n"], source["kind"], source["documentName"], source["page"]) == (1, "file", "guide.pdf", 2)
    sent = scripted.calls[-1]
    assert sent["model_id"] == f"{SCRIPTED_MODEL}-v1"  # the assistant's model answered
    system = [m["content"] for m in sent["messages"] if m["role"] == "system"]
    assert "You answer travel questions." in system
    assert any("[1] guide.pdf, page 2" in text and "ORCA-19" in text for text in system)
    assert await Chunk.objects.acount() == chunks  # nothing copied into the chat
    assert not await Document.objects.filter(chat_id=chat["id"]).aexists()

    # The cited file is served through the chat to its owner, and to nobody else.
    served = await sync_to_async(Client().get)(source["url"].split("#")[0], headers=bearer(owner_key))
    assert served.status_code == 302  # a page of the site: the API key is no session
    session = Client()
    await sync_to_async(session.force_login)(owner)
    assert (await sync_to_async(session.get)(source["url"].split("#")[0])).status_code == 200
    api_download = f"/api/v1/chat/{chat['id']}/documents/{source['documentId']}/file"
    assert (await sync_to_async(Client().get)(api_download, headers=bearer(owner_key))).status_code == 200
    assert (await sync_to_async(Client().get)(api_download, headers=bearer(other_key))).status_code == 404
    assert await sync_to_async(file_uses)(owner) == 1


def test_the_document_uploads_may_carry_files_and_the_other_assistant_routes_may_not(settings):
    for path in (f"{BASE}/7/documents", "/chat/assistants/7/documents/"):
        assert request_body_limit(path) == upload_limit() > settings.DATA_UPLOAD_MAX_MEMORY_SIZE, path
    # (/api/v1/chat/assistants itself looks like a turn to /api/v1/chat/<id>, whose limit it shares.)
    for path in (f"{BASE}/7", f"{BASE}/7/chats", "/chat/assistants/7/"):
        assert request_body_limit(path) == settings.DATA_UPLOAD_MAX_MEMORY_SIZE, path
