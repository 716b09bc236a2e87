"""Hostile and broken imports: a wrong format, an oversized body (the server's limit and the app's), deep nesting,
ZIP bombs, HTML in the messages, damaged trees and text, and too many imports a day. Each gets a clear 4xx or is
imported inert, and a refused import leaves no row behind."""

import io
import json
import struct
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, override_settings

from chat import portability, services
from chat.models import Chat, ChatQuery
from core.bodylimit import RequestBodyLimit
from querynox.body_limits import import_limit, request_body_limit, too_large_message
from testsupport.exports import chatgpt_branched_conversation, chatgpt_linear_conversation, zip_of
from testsupport.html import MARKDOWN_ANSWER, MARKDOWN_PROMPT, Elements, assert_no_live_markup
from testsupport.http import bearer

MB = 1024 * 1024


def api_import(key, data: bytes, filename="export.json"):
    upload = SimpleUploadedFile(filename, data, content_type="application/octet-stream")
    return Client().post("/api/v1/chat/import", {"file": upload}, headers=bearer(key))


def rows() -> tuple[int, int]:
    return Chat.objects.count(), ChatQuery.objects.count()


def querynox_document(queries, **chat) -> dict:
    return {
        "format": "querynox.chat",
        "version": 1,
        "chat": {"title": "Imported", "model": "m", **chat},
        "queries": queries,
    }


def query(key, parent=None, prompt="Q", response="A", **fields) -> dict:
    return {"id": key, "parentId": parent, "prompt": prompt, "response": response, **fields}


def assert_refused(response, status, code):
    assert response.status_code == status, response.content
    body = response.json()
    assert body["code"] == code and body["error"], body
    return body["error"]


# --- the wrong thing -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "code", "says"),
    [
        (b'{"hello": "world"}', "import_unknown_format", "neither a QueryNox export nor ChatGPT"),
        (b"[1, 2, 3]", "import_unknown_format", "neither a QueryNox export nor ChatGPT"),
        (b"[]", "import_unknown_format", "neither"),
        (b"not json at all", "import_invalid", "not valid JSON"),
        (b"\xff\xfe\x00\x01binary", "import_invalid", "not UTF-8"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3", "import_invalid", "not UTF-8"),
        (b"%PDF-1.7\n1 0 obj", "import_invalid", "not valid JSON"),
        (b"PK\x03\x04 not really a zip", "import_invalid", "damaged or not a ZIP"),
        (b'{"format": "querynox.chat", "version": 99, "chat": {}, "queries": []}', "import_invalid", "version 99"),
        (b'{"format": "querynox.chat", "version": 1, "chat": {}, "queries": "none"}', "import_invalid", "queries"),
        (b'{"format": "querynox.chat", "version": 1, "chat": {}, "queries": [{"id": "a", "prompt": 5}]}',
         "import_invalid", "prompt must be text"),
        (b'{"mapping": {}}', "import_invalid", "holds no chats"),
        (b"NaN", "import_unknown_format", "neither"),
    ],
)
def test_what_is_not_an_export_is_a_clear_400(owner, owner_key, data, code, says):
    error = assert_refused(api_import(owner_key, data), 400, code)

    assert says in error
    assert rows() == (0, 0)


def test_an_empty_file_and_an_empty_body_are_400s(owner_key):
    assert "empty" in assert_refused(api_import(owner_key, b""), 400, "import_invalid")
    empty_body = Client().post("/api/v1/chat/import", b"", content_type="application/json", headers=bearer(owner_key))
    assert_refused(empty_body, 400, "invalid_body")


def test_a_malformed_multipart_body_is_a_400(owner_key):
    response = Client().post(
        "/api/v1/chat/import",
        b"--x\r\nContent-Disposition: form-data; name=\"file\"\r\n",
        content_type="multipart/form-data; boundary=",
        headers=bearer(owner_key),
    )

    assert response.status_code == 400


# --- too large -------------------------------------------------------------------------------------------------


def lazy_body(total: int, chunk: int = MB):
    """`total` bytes of a JSON-looking body, made a chunk at a time as they are asked for (never held whole)."""
    sent = 0
    while sent < total:  # bounded by total
        size = min(chunk, total - sent)
        yield b"[" if sent == 0 else b" " * size
        sent += size


class Downstream:
    def __init__(self):
        self.called = False

    async def __call__(self, scope, receive, send):
        self.called = True
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


async def send_through_server_limit(path: str, headers: list, body_chunks):
    app = Downstream()
    wrapped = RequestBodyLimit(app, request_body_limit, too_large_message)
    received, sent = [], []
    chunks = iter(body_chunks)

    async def receive():
        chunk = next(chunks, None)
        received.append(len(chunk or b""))
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(), "headers": headers}
    await wrapped(scope, receive, send)
    return app.called, sent, sum(received)


@pytest.mark.parametrize("path", ["/api/v1/chat/import", "/chat/import/"])
async def test_a_200_mb_upload_is_refused_by_the_server_before_the_app_sees_it(path):
    declared = [(b"content-length", str(200 * MB).encode()), (b"content-type", b"application/json")]
    app_called, sent, read = await send_through_server_limit(path, declared, lazy_body(200 * MB))
    assert not app_called and sent[0]["status"] == 413 and read == 0  # refused on the header alone

    chunked = [(b"transfer-encoding", b"chunked"), (b"content-type", b"application/json")]
    app_called, sent, read = await send_through_server_limit(path, chunked, lazy_body(200 * MB))
    assert not app_called and sent[0]["status"] == 413
    assert read <= import_limit() + MB  # read up to the limit, not the 200 MB
    assert json.loads(sent[1]["body"])["code"] == "body_too_large"


@override_settings(IMPORT_MAX_BYTES=20 * MB, DATA_UPLOAD_MAX_MEMORY_SIZE=MB, RAG_MAX_REQUEST_BYTES=10 * MB)
def test_the_import_paths_have_their_own_body_limit_above_the_turns():
    assert request_body_limit("/api/v1/chat/import") == request_body_limit("/chat/import/") == 21 * MB
    assert request_body_limit("/api/v1/chat/0b7e") == 11 * MB
    assert request_body_limit("/api/v1/chat/0b7e/share") == MB


@override_settings(IMPORT_MAX_BYTES=4096)
def test_the_app_refuses_a_file_over_its_import_limit(owner, owner_key, owner_client):
    big = json.dumps([chatgpt_linear_conversation("Big", [("x" * 5000, "y")])]).encode()

    error = assert_refused(api_import(owner_key, big), 413, "import_too_large")
    assert "imports are at most 4.0 KB" in error or "at most" in error
    as_body = Client().post("/api/v1/chat/import", big, content_type="application/json", headers=bearer(owner_key))
    assert_refused(as_body, 413, "import_too_large")
    page = owner_client.post("/chat/import/", {"file": SimpleUploadedFile("big.json", big)})
    assert page.status_code == 413 and "Nothing was imported" in page.content.decode()
    assert rows() == (0, 0)


@override_settings(IMPORT_MAX_QUERIES=3)
def test_more_turns_than_an_import_may_hold_is_a_413(owner_key):
    conversation = chatgpt_linear_conversation("Long", [(f"q{i}", f"a{i}") for i in range(4)])

    assert "more than 3 messages" in assert_refused(
        api_import(owner_key, json.dumps([conversation]).encode()), 413, "import_too_large"
    )
    assert rows() == (0, 0)


@override_settings(IMPORT_MAX_CHATS=2)
def test_more_chats_than_an_import_may_hold_is_a_413(owner_key):
    conversations = [chatgpt_linear_conversation(f"c{i}", [("q", "a")]) for i in range(3)]

    assert_refused(api_import(owner_key, json.dumps(conversations).encode()), 413, "import_too_large")
    assert rows() == (0, 0)


# --- deep nesting ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [100_000, 5_000])
def test_json_nested_beyond_the_parsers_depth_is_a_400(owner_key, depth):
    nested = b"[" * depth + b"]" * depth

    assert "nested too deeply" in assert_refused(api_import(owner_key, nested), 400, "import_too_deep")
    as_body = Client().post("/api/v1/chat/import", nested, content_type="application/json", headers=bearer(owner_key))
    assert_refused(as_body, 400, "import_too_deep")


def test_deep_nesting_within_the_parsers_depth_is_refused_for_its_shape(owner_key):
    deep = '{"a":' * 500 + "1" + "}" * 500
    head = '{"format": "querynox.chat", "version": 1, "chat": {}, "queries": [{"id": "a", "prompt": '
    document = (head + deep + "}]}").encode()
    part = {"content_type": "x", "nested": json.loads('{"a":' * 500 + "1" + "}" * 500)}
    conversation = chatgpt_linear_conversation("Deep parts", [("q", "a")])
    conversation["mapping"]["u0"]["message"]["content"] = {"content_type": "multimodal_text", "parts": [part, "q"]}

    assert "prompt must be text" in assert_refused(api_import(owner_key, document), 400, "import_invalid")
    response = api_import(owner_key, json.dumps([conversation]).encode())
    assert response.status_code == 201  # the odd part is a placeholder; nothing walks its nesting
    assert ChatQuery.objects.get().prompt == "[attachment]\n\nq"


# --- ZIP bombs -------------------------------------------------------------------------------------------------


def zeros_zip(size: int, name="chats/bomb.json") -> bytes:
    """A ZIP whose one member inflates to `size` bytes (written in pieces: the test never holds it inflated)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open(name, "w", force_zip64=True) as member:
            piece = b" " * MB
            for _ in range(size // MB):  # bounded
                member.write(piece)
    return buffer.getvalue()


def test_a_zip_bomb_is_refused_by_its_declared_size_without_inflating_it(owner_key):
    bomb = zeros_zip(200 * MB)
    assert len(bomb) < MB  # 200 MB of spaces deflate to a few hundred KB

    error = assert_refused(api_import(owner_key, bomb, "chats.zip"), 413, "import_too_large")
    assert "unpacks to more than" in error
    assert rows() == (0, 0)


def lie_about_size(archive: bytes, claimed: int) -> bytes:
    """The ZIP with its member's uncompressed size rewritten (central directory and local header) to `claimed`."""
    data = bytearray(archive)
    central = data.index(b"PK\x01\x02")
    struct.pack_into("<I", data, central + 24, claimed)
    local = data.index(b"PK\x03\x04")
    struct.pack_into("<I", data, local + 22, claimed)
    return bytes(data)


def test_a_zip_that_understates_its_size_is_cut_off_while_inflating(owner_key):
    honest = zip_of({"chats/a.json": querynox_document([query("a", response="x" * 3 * MB)])})
    liar = lie_about_size(honest, 1000)

    with zipfile.ZipFile(io.BytesIO(liar)) as archive:
        assert archive.infolist()[0].file_size == 1000
    with pytest.raises(portability.ImportRefused):
        portability.check_import(liar)
    response = api_import(owner_key, liar, "chats.zip")
    assert response.status_code in (400, 413) and response.json()["code"].startswith("import_")
    assert rows() == (0, 0)


def test_the_running_cap_stops_inflating_at_the_limit_whatever_the_directory_says(settings):
    settings.IMPORT_MAX_BYTES = 64 * 1024
    archive = zipfile.ZipFile(io.BytesIO(zip_of({"a.json": b" " * MB})))
    info = archive.infolist()[0]

    with pytest.raises(portability.ImportRefused) as refused:
        portability._read_member(archive, info, 64 * 1024)  # the directory's 1 MB is more than the limit

    assert refused.value.status == 413


@override_settings(IMPORT_MAX_ZIP_MEMBERS=5)
def test_a_zip_with_too_many_members_is_refused(owner_key):
    members = {f"chats/{i}.json": querynox_document([query("a")]) for i in range(6)}

    assert "holds 6 files" in assert_refused(api_import(owner_key, zip_of(members), "c.zip"), 413, "import_too_large")


@override_settings(IMPORT_MAX_UNPACKED_BYTES=4096)
def test_a_zip_whose_members_add_up_to_more_than_the_limit_is_refused(owner_key):
    members = {f"chats/{i}.json": querynox_document([query("a", response="y" * 1500)]) for i in range(3)}

    assert_refused(api_import(owner_key, zip_of(members), "c.zip"), 413, "import_too_large")


def test_a_zip_without_chats_and_an_encrypted_member_are_400s(owner_key):
    assert "no JSON chats" in assert_refused(api_import(owner_key, zip_of({"a.txt": "hi"}), "c.zip"), 400,
                                             "import_invalid")
    archive = bytearray(zip_of({"chats/a.json": querynox_document([query("a")])}))
    central = archive.index(b"PK\x01\x02")
    struct.pack_into("<H", archive, central + 8, 0x1)  # the "encrypted" flag bit
    assert "encrypted" in assert_refused(api_import(owner_key, bytes(archive), "c.zip"), 400, "import_invalid")


# --- nothing half-imported -------------------------------------------------------------------------------------


def test_one_bad_file_in_a_zip_imports_none_of_them(owner, owner_key, make_chat):
    make_chat(owner, [("Already here", "Yes")])
    before = rows()
    members = {
        "chats/1.json": querynox_document([query("a"), query("b", "a")]),
        "chats/2.json": querynox_document([query("c")]),
        "chats/3.json": querynox_document([query("d", "missing-parent")]),
    }

    error = assert_refused(api_import(owner_key, zip_of(members), "c.zip"), 400, "import_invalid")

    assert "which is not in the file" in error
    assert rows() == before


def test_a_failure_while_writing_rolls_the_whole_import_back(owner, make_chat, monkeypatch):
    make_chat(owner, [("Already here", "Yes")])
    before = rows()
    plan = portability.check_import(json.dumps([chatgpt_branched_conversation()] * 3).encode())

    write_timestamps = portability._write_timestamps

    def fail_on_queries(model, rows):
        write_timestamps(model, rows)
        if model is ChatQuery:
            raise RuntimeError("the database went away")

    # By then the chats and queries are inserted and their timestamps written.
    monkeypatch.setattr(portability, "_write_timestamps", fail_on_queries)
    with pytest.raises(RuntimeError):
        portability.do_import(owner, plan)

    assert rows() == before


@pytest.mark.parametrize(
    "queries",
    [
        [query("a", "b"), query("b", "a")],  # a loop
        [query("a"), query("a")],  # the same id twice
        [query("a", "a")],  # its own parent
        [{"id": 5, "prompt": "Q"}],
        ["not an object"],
    ],
)
def test_a_broken_tree_is_refused_whole(owner_key, queries):
    assert_refused(api_import(owner_key, json.dumps(querynox_document(queries)).encode()), 400, "import_invalid")
    assert rows() == (0, 0)


def test_a_chatgpt_mapping_with_loops_and_dangling_links_imports_what_is_reachable_once(owner_key):
    conversation = chatgpt_linear_conversation("Tangled", [("q0", "a0"), ("q1", "a1")])
    mapping = conversation["mapping"]
    mapping["a1"]["children"] = ["u0", "nowhere", 7]  # back to the first prompt, to a missing node, to junk
    mapping["loop1"] = {"id": "loop1", "message": None, "parent": "loop2", "children": ["loop2"]}
    mapping["loop2"] = {"id": "loop2", "message": None, "parent": "loop1", "children": ["loop1"]}
    mapping["junk"] = "not a node"

    response = api_import(owner_key, json.dumps([conversation]).encode())

    assert response.status_code == 201, response.content
    [chat] = Chat.objects.all()
    assert [(q.prompt, q.response) for q in services.chat_history(chat)] == [("q0", "a0"), ("q1", "a1")]


# --- HTML and odd text -----------------------------------------------------------------------------------------


def test_html_in_an_import_is_inert_on_the_chat_page_and_the_public_page(owner, owner_client, owner_key):
    hostile_title = '<img src=x onerror="alert(1)">Title<script>alert(2)</script>'
    document = querynox_document(
        [query("a", prompt=MARKDOWN_PROMPT, response=MARKDOWN_ANSWER)],
        title=hostile_title,
        systemPrompt="<script>alert(3)</script>",
    )
    chat_id = api_import(owner_key, json.dumps(document).encode()).json()["chats"][0]["id"]
    services.do_set_shared(owner, chat_id, True)

    for page in (owner_client.get(f"/chat/{chat_id}/"), Client().get(f"/share/{chat_id}/")):
        assert page.status_code == 200
        html = page.content.decode()
        doc = Elements(html)
        assert_no_live_markup(doc)
        assert "<script>alert" not in html and 'onerror="alert' not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # the prompt's tag, shown as text
        assert any("Steps" in text for _, text in doc.find("h2"))  # the answer's Markdown still renders
    api_view = Client().get(f"/api/v1/chat/{chat_id}", headers=bearer(owner_key)).json()
    assert api_view["chat"]["title"] == " ".join(hostile_title.split())  # the API gives the text as it was


def test_nul_characters_and_lone_surrogates_are_cleaned(owner_key):
    raw = (
        b'{"format": "querynox.chat", "version": 1, "chat": {"title": "T\\u0000itle\\udc00"}, '
        b'"queries": [{"id": "a", "prompt": "Q\\u0000\\ud800uestion", "response": "A\\udfffnswer\\u0000"}]}'
    )

    response = api_import(owner_key, raw)

    assert response.status_code == 201, response.content
    saved = ChatQuery.objects.get()
    assert (saved.prompt, saved.response) == ("Q\ufffduestion", "A\ufffdnswer")
    assert saved.chat.title == "Title\ufffd"


@override_settings(MAX_PROMPT_CHARS=200, IMPORT_MAX_RESPONSE_CHARS=300)
def test_text_longer_than_the_limits_is_cut_with_a_note(owner_key):
    document = querynox_document(
        [query("a", prompt="p" * 1000, response="r" * 1000, model="m" * 500)], title="t" * 1000
    )

    api_import(owner_key, json.dumps(document).encode())

    saved = ChatQuery.objects.get()
    assert len(saved.prompt) == 200 and saved.prompt.endswith("cut on import: the original was longer]")
    assert len(saved.response) == 300 and saved.prompt.startswith("ppp")
    assert len(saved.model) == 100 and len(saved.chat.title) == 200


@pytest.mark.parametrize("moment", ["1970-01-01T00:00:00+00:00", "3024-01-01T00:00:00+00:00", "yesterday", 12, None])
def test_implausible_timestamps_become_the_import_time(owner_key, moment):
    from django.utils import timezone

    started = timezone.now()
    document = querynox_document([query("a", createdAt=moment)], createdAt=moment, updatedAt=moment)

    api_import(owner_key, json.dumps(document).encode())

    saved = ChatQuery.objects.select_related("chat").get()
    assert saved.created_at >= started and saved.chat.created_at >= started


def test_nan_and_infinite_chatgpt_times_are_ignored(owner_key):
    conversation = chatgpt_linear_conversation("Times", [("q", "a")])
    conversation["create_time"] = float("nan")
    conversation["mapping"]["u0"]["message"]["create_time"] = float("inf")

    response = api_import(owner_key, json.dumps([conversation]).encode())

    assert response.status_code == 201


# --- how many a day --------------------------------------------------------------------------------------------


@override_settings(IMPORT_DAILY_LIMIT=2)
def test_imports_are_limited_per_user_and_day(owner_key, other_key, owner_client):
    data = json.dumps([chatgpt_linear_conversation("Daily", [("q", "a")])]).encode()

    assert api_import(owner_key, data).status_code == 201
    assert api_import(owner_key, b"broken").status_code == 400  # a refused file counts: reading it is the work
    error = assert_refused(api_import(owner_key, data), 429, "import_rate_limited")
    assert "2 files a day" in error
    page = owner_client.post("/chat/import/", {"file": SimpleUploadedFile("c.json", data)})
    assert page.status_code == 429 and "2 files a day" in page.content.decode()

    assert api_import(other_key, data).status_code == 201  # someone else's count is their own
    assert Chat.objects.count() == 2
