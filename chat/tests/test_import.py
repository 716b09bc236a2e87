"""Importing chats: QueryNox's own JSON (one chat, or the ZIP of all) comes back as the same tree, and ChatGPT's
conversations.json keeps the branch tree of its mapping; imports are owned by the importer, `complete`, charged to
no quota, over the API (multipart or a JSON body) and from the account page's form."""

import datetime as dt
import io
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from billing.models import Charge, UsageEntry, UsagePeriod
from chat import services
from chat.models import Chat, ChatQuery
from testsupport.chats import branched_chat
from testsupport.exports import BASE_TIME, chatgpt_branched_conversation, chatgpt_linear_conversation, zip_of
from testsupport.html import Elements
from testsupport.http import bearer


def api_import(key, data: bytes, filename="export.json"):
    upload = SimpleUploadedFile(filename, data, content_type="application/octet-stream")
    return Client().post("/api/v1/chat/import", {"file": upload}, headers=bearer(key) if key else {})


def api_export(key, chat) -> bytes:
    return Client().get(f"/api/v1/chat/{chat.pk}/export?format=json", headers=bearer(key)).content


def tree_shape(chat) -> dict:
    """A chat as its texts: the chat's fields and, for each query, its texts, whether it is selected, its
    timestamps and its parent's texts (ids differ after an import; the shape must not)."""
    queries = list(ChatQuery.objects.filter(chat=chat).order_by("created_at"))
    by_id = {q.pk: q for q in queries}
    chat = Chat.objects.get(pk=chat.pk)
    return {
        "chat": (chat.title, chat.name, chat.model, chat.system_prompt, chat.web_search, chat.created_at,
                 chat.updated_at),
        "queries": [
            (
                q.prompt,
                q.response,
                q.selected,
                q.model,
                q.created_at,
                (by_id[q.parent_id].prompt, by_id[q.parent_id].response) if q.parent_id else None,
            )
            for q in queries
        ],
    }


def shown_texts(chat) -> list[tuple[str, str]]:
    return [(q.prompt, q.response) for q in services.chat_history(chat)]


# --- QueryNox's JSON -------------------------------------------------------------------------------------------


def test_a_json_export_imports_as_the_same_tree_with_the_same_branch_shown(scripted, owner, owner_key, make_chat):
    chat, q1, q2, q3, q2b = branched_chat(make_chat, owner)
    Chat.objects.filter(pk=chat.pk).update(system_prompt="Answer in French.", name="A short name")
    ChatQuery.objects.filter(pk=q3.pk).update(response="A3 with **Markdown** and `code`\n\n- item")

    response = api_import(owner_key, api_export(owner_key, chat))

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["format"] == "querynox" and body["queries"] == 4
    [imported_info] = body["chats"]
    imported = Chat.objects.get(pk=imported_info["id"])
    assert imported.pk != chat.pk and imported.owner == owner
    assert tree_shape(imported) == tree_shape(chat)
    assert shown_texts(imported) == shown_texts(chat) == [("Q1", "A1"), ("Q2", "A2b")]
    assert not set(ChatQuery.objects.filter(chat=imported).values_list("pk", flat=True)) & {q1.pk, q2.pk, q3.pk}
    assert set(ChatQuery.objects.filter(chat=imported).values_list("status", flat=True)) == {"complete"}


def test_the_hidden_branch_comes_back_too_and_can_be_shown(scripted, owner, owner_key, make_chat):
    chat, *_ = branched_chat(make_chat, owner)
    imported = Chat.objects.get(pk=api_import(owner_key, api_export(owner_key, chat)).json()["chats"][0]["id"])
    hidden = ChatQuery.objects.get(chat=imported, response="A2")

    services.do_select_version(owner, imported.pk, hidden.pk)

    assert shown_texts(imported) == [("Q1", "A1"), ("Q2", "A2"), ("Q3", "A3")]


def test_imported_queries_are_complete_and_measured_whatever_the_file_said(owner, owner_key, make_chat):
    chat = make_chat(owner, [("Asked", "Half an answ", "stopped"), ("Again", "", "error")])
    document = json.loads(api_export(owner_key, chat))

    body = api_import(owner_key, json.dumps(document).encode()).json()

    queries = ChatQuery.objects.filter(chat_id=body["chats"][0]["id"]).order_by("created_at")
    assert [(q.status, q.error) for q in queries] == [("complete", ""), ("complete", "")]
    assert [(q.prompt_tokens > 0, q.response_tokens) for q in queries][1] == (True, 0)
    assert queries[0].response_tokens > 0


def test_the_json_export_can_be_sent_as_the_request_body(scripted, owner, owner_key, make_chat):
    chat, *_ = branched_chat(make_chat, owner)

    response = Client().post(
        "/api/v1/chat/import", api_export(owner_key, chat), content_type="application/json", headers=bearer(owner_key)
    )

    assert response.status_code == 201
    assert tree_shape(Chat.objects.get(pk=response.json()["chats"][0]["id"])) == tree_shape(chat)


def test_the_zip_of_all_chats_imports_every_chat(scripted, owner, other, owner_key, other_key, make_chat):
    first, *_ = branched_chat(make_chat, owner)
    second = make_chat(owner, [("Only question", "Only answer")], title="Second")
    archive = b"".join(Client().get("/api/v1/chat/export", headers=bearer(owner_key)).streaming_content)

    response = api_import(other_key, archive, "querynox-chats.zip")  # another account: a move between accounts

    assert response.status_code == 201, response.content
    assert response.json()["queries"] == 5
    imported = Chat.objects.filter(owner=other)
    assert sorted(tree_shape(c)["chat"][0] for c in imported) == sorted([first.title, second.title])
    by_title = {c.title: c for c in imported}
    assert tree_shape(by_title[first.title]) == tree_shape(first)
    assert tree_shape(by_title["Second"]) == tree_shape(second)


def test_the_file_timestamps_are_kept_so_old_chats_sort_below_new_ones(owner, owner_key, make_chat):
    old = make_chat(owner, [("Old question", "Old answer")], title="From last year")
    year_ago = dt.datetime(2024, 3, 1, 12, 0, tzinfo=dt.UTC)
    Chat.objects.filter(pk=old.pk).update(created_at=year_ago, updated_at=year_ago)
    ChatQuery.objects.filter(chat=old).update(created_at=year_ago, updated_at=year_ago)
    exported = api_export(owner_key, old)
    recent = make_chat(owner, [("New question", "New answer")], title="Today")

    imported_id = api_import(owner_key, exported).json()["chats"][0]["id"]

    imported = Chat.objects.get(pk=imported_id)
    assert (imported.created_at, imported.updated_at) == (year_ago, year_ago)
    assert ChatQuery.objects.get(chat=imported).created_at == year_ago
    sidebar = [c.pk for c in Chat.objects.owned_by(owner)]
    assert sidebar.index(recent.pk) < sidebar.index(imported.pk)


# --- ChatGPT's conversations.json ------------------------------------------------------------------------------


def test_chatgpt_conversations_keep_their_branches_and_the_version_chatgpt_showed(owner, owner_key):
    conversations = [chatgpt_branched_conversation(), chatgpt_linear_conversation("Recipes", [("Soup?", "Yes.")])]

    response = api_import(owner_key, json.dumps(conversations).encode(), "conversations.json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["format"] == "chatgpt" and body["queries"] == 6
    assert [c["title"] for c in body["chats"]] == ["Trip planning", "Recipes"]
    trip = Chat.objects.get(pk=body["chats"][0]["id"])
    # Shown: the regenerated first answer and the edited second prompt (the path to current_node).
    assert shown_texts(trip) == [("Hi", "Hello v2"), ("[image]\n\nSecond question, edited", "Edited answer")]
    queries = {(q.prompt, q.response): q for q in ChatQuery.objects.filter(chat=trip)}
    assert set(queries) == {
        ("Hi", "Hello v1"),
        ("Hi", "Hello v2"),  # a regenerated answer: another version of the same turn
        ("Tell a joke", "A joke"),
        ("Second question", "```\nprint(6 * 7)\n```\n\nIt is 42."),  # code, tool output left out, the answer
        ("[image]\n\nSecond question, edited", "Edited answer"),  # an edited prompt: a version of turn 2
    }
    parent = {key: q.parent_id and queries_by_id(queries)[q.parent_id] for key, q in queries.items()}
    assert parent[("Tell a joke", "A joke")] == ("Hi", "Hello v1")
    assert parent[("Second question", "```\nprint(6 * 7)\n```\n\nIt is 42.")] == ("Hi", "Hello v2")
    assert parent[("[image]\n\nSecond question, edited", "Edited answer")] == ("Hi", "Hello v2")
    assert parent[("Hi", "Hello v1")] is None and parent[("Hi", "Hello v2")] is None
    assert queries[("[image]\n\nSecond question, edited", "Edited answer")].model == "gpt-4o-mini"
    assert queries[("Hi", "Hello v1")].created_at == dt.datetime.fromtimestamp(BASE_TIME + 1, tz=dt.UTC)
    assert trip.created_at == dt.datetime.fromtimestamp(BASE_TIME, tz=dt.UTC)
    assert trip.updated_at == dt.datetime.fromtimestamp(BASE_TIME + 11, tz=dt.UTC)


def queries_by_id(queries: dict) -> dict:
    return {q.pk: key for key, q in queries.items()}


def test_chatgpts_export_zip_imports_its_conversations_json_and_ignores_the_rest(owner, owner_key):
    archive = zip_of(
        {
            "conversations.json": [chatgpt_linear_conversation("Zipped", [("One", "Two"), ("Three", "Four")])],
            "user.json": {"email": "someone@example.com"},
            "message_feedback.json": [],
            "file-abc.png": b"\x89PNG not really",
            "chat.html": "<html><script>var jsonData = []</script></html>",
        }
    )

    response = api_import(owner_key, archive, "chatgpt-export.zip")

    assert response.status_code == 201, response.content
    [chat] = Chat.objects.filter(owner=owner)
    assert chat.title == "Zipped" and shown_texts(chat) == [("One", "Two"), ("Three", "Four")]


def test_a_chatgpt_conversation_keeps_the_catalog_default_as_the_chats_model(owner, owner_key):
    from chat.catalog import default_model_name

    body = api_import(owner_key, json.dumps([chatgpt_linear_conversation("M", [("a", "b")])]).encode()).json()

    chat = Chat.objects.get(pk=body["chats"][0]["id"])
    # gpt-4o is not in this server's catalog: continuing the chat uses the default; the turn keeps its model.
    assert chat.model == default_model_name()
    assert ChatQuery.objects.get(chat=chat).model == "gpt-4o"


# --- quota, ownership, pages -----------------------------------------------------------------------------------


def test_an_import_is_charged_to_no_quota(owner, owner_key, make_chat):
    chat, *_ = branched_chat(make_chat, owner)
    exported = api_export(owner_key, chat)
    before = (Charge.objects.count(), UsageEntry.objects.count(), list(UsagePeriod.objects.values()))

    assert api_import(owner_key, exported).status_code == 201

    assert (Charge.objects.count(), UsageEntry.objects.count(), list(UsagePeriod.objects.values())) == before


def test_the_imported_chats_are_the_importers_and_nobody_elses(owner, other_key, owner_key):
    body = api_import(owner_key, json.dumps([chatgpt_linear_conversation("Mine", [("a", "b")])]).encode()).json()
    chat_id = body["chats"][0]["id"]

    assert Client().get(f"/api/v1/chat/{chat_id}", headers=bearer(owner_key)).status_code == 200
    assert Client().get(f"/api/v1/chat/{chat_id}", headers=bearer(other_key)).status_code == 404
    assert Client().get(f"/api/v1/chat/{chat_id}/export", headers=bearer(other_key)).status_code == 404


def test_anonymous_callers_cannot_import(db):
    data = json.dumps([chatgpt_linear_conversation("Nobody's", [("a", "b")])]).encode()

    assert api_import(None, data).status_code == 401
    page = Client().post("/chat/import/", {"file": SimpleUploadedFile("c.json", data)})
    assert page.status_code == 302 and page["Location"].startswith("/accounts/login/")
    assert Chat.objects.count() == 0


def test_the_account_page_form_imports_and_lists_the_chats(owner, owner_client):
    account = Elements(owner_client.get("/accounts/").content.decode())
    [(form, _)] = account.find("form", id="import-form")
    assert (form["action"], form["method"], form["enctype"]) == ("/chat/import/", "post", "multipart/form-data")
    assert account.find("input", name="csrfmiddlewaretoken") and account.find("input", type="file", name="file")
    data = json.dumps([chatgpt_branched_conversation("From the form")]).encode()

    response = owner_client.post("/chat/import/", {"file": SimpleUploadedFile("conversations.json", data)})

    assert response.status_code == 200
    page = Elements(response.content.decode())
    [chat] = Chat.objects.filter(owner=owner)
    assert page.find("a", href=f"/chat/{chat.pk}/") == [({"href": f"/chat/{chat.pk}/"}, "From the form")]
    assert "Imported 1 chat (5 turns) from ChatGPT." in page.find("p", id="import-done")[0][1]


def test_the_form_needs_its_csrf_token(owner):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    data = json.dumps([chatgpt_linear_conversation("Forged", [("a", "b")])]).encode()

    response = client.post("/chat/import/", {"file": SimpleUploadedFile("c.json", data)})

    assert response.status_code == 403 and Chat.objects.count() == 0


def test_the_form_without_a_file_says_so(owner_client):
    response = owner_client.post("/chat/import/", {})

    assert response.status_code == 400
    assert "Choose an export file" in Elements(response.content.decode()).find("p", id="import-error")[0][1]


@pytest.mark.parametrize("field", ["files", "upload"])
def test_the_api_names_the_field_it_wants(owner_key, field):
    upload = SimpleUploadedFile("c.json", b"{}")

    response = Client().post("/api/v1/chat/import", {field: upload}, headers=bearer(owner_key))

    assert response.status_code == 400 and "“file”" in response.json()["error"]


def test_an_imported_chat_opens_on_its_page_with_its_versions(owner, owner_client):
    data = json.dumps([chatgpt_branched_conversation()]).encode()
    owner_client.post("/chat/import/", {"file": SimpleUploadedFile("conversations.json", io.BytesIO(data).read())})
    chat = Chat.objects.get(owner=owner)

    page = Elements(owner_client.get(f"/chat/{chat.pk}/").content.decode())

    assert [text for _, text in page.find("div", class_="prompt")] == ["Hi", "[image] Second question, edited"]
    assert [text for _, text in page.find("span", class_="version-position")] == ["2 / 2", "2 / 2"]


def test_imported_chats_are_found_by_search_at_once(owner, owner_key, other):
    from chat.search import search

    conversations = [chatgpt_linear_conversation("Sourdough notes", [("How long to proof rye?", "Overnight, cold.")])]
    chat_id = api_import(owner_key, json.dumps(conversations).encode()).json()["chats"][0]["id"]

    for words in ("sourdough", "proof rye", "overnight"):
        assert [str(result.chat.pk) for result in search(owner, words).results] == [chat_id], words
    assert search(other, "sourdough").results == []


def test_the_import_answer_costs_the_same_queries_for_one_chat_or_many(owner_key):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def queries_for(count: int) -> int:
        conversations = [chatgpt_linear_conversation(f"c{i}", [("q", "a")]) for i in range(count)]
        with CaptureQueriesContext(connection) as captured:
            assert api_import(owner_key, json.dumps(conversations).encode()).status_code == 201
        return len(captured)

    queries_for(1)  # the key's first use of the day is recorded once
    assert queries_for(20) == queries_for(1)
