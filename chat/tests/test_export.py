"""Exporting chats: one chat as JSON (its whole branch tree) or Markdown (the branch shown), all of one's chats as a
ZIP of JSON; over the API and from the pages, for the owner only."""

import io
import json
import zipfile

import pytest
from django.test import Client

from chat.models import Chat, ChatQuery
from chat.schemas import ChatExportOut
from testsupport.chats import branched_chat
from testsupport.html import Elements
from testsupport.http import bearer

UNKNOWN_ID = "6f1c1a8e-0000-4000-8000-000000000000"


def api_get(key, path):
    return Client().get(path, headers=bearer(key) if key else {})


def download_name(response) -> str:
    disposition = response["Content-Disposition"]
    assert disposition.startswith("attachment;"), disposition
    return disposition.split("filename=", 1)[1].strip('"')


# --- one chat as JSON ------------------------------------------------------------------------------------------


def test_the_json_export_holds_every_version_of_every_turn_with_its_parent_and_selection(owner, owner_key, make_chat):
    chat, q1, q2, q3, q2b = branched_chat(make_chat, owner)

    response = api_get(owner_key, f"/api/v1/chat/{chat.pk}/export?format=json")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert download_name(response).endswith(f"-{str(chat.pk)[:8]}.json")
    document = json.loads(response.content)
    assert (document["format"], document["version"]) == ("querynox.chat", 1)
    assert document["chat"]["id"] == str(chat.pk) and document["chat"]["title"] == chat.title
    exported = ChatExportOut.model_validate(document)  # the schema the API declares lists every field sent
    assert not exported.model_extra and not exported.chat.model_extra and not exported.queries[0].model_extra
    rows = {q["id"]: q for q in document["queries"]}
    assert list(rows) == [str(q.pk) for q in (q1, q2, q3, q2b)]  # oldest first, the hidden versions included
    assert {key: (row["parentId"], row["selected"], row["prompt"], row["response"]) for key, row in rows.items()} == {
        str(q1.pk): (None, True, "Q1", "A1"),
        str(q2.pk): (str(q1.pk), False, "Q2", "A2"),
        str(q3.pk): (str(q2.pk), True, "Q3", "A3"),
        str(q2b.pk): (str(q1.pk), True, "Q2", "A2b"),
    }


def test_json_is_the_default_format_and_an_unknown_one_is_a_400(owner, owner_key, make_chat):
    chat = make_chat(owner)

    assert api_get(owner_key, f"/api/v1/chat/{chat.pk}/export")["Content-Type"] == "application/json"
    refused = api_get(owner_key, f"/api/v1/chat/{chat.pk}/export?format=pdf")
    assert refused.status_code == 400 and refused.json()["code"] == "invalid_body"
    page = Client()
    page.force_login(owner)
    assert page.get(f"/chat/{chat.pk}/export/?format=pdf").status_code == 400


# --- one chat as Markdown --------------------------------------------------------------------------------------


def test_the_markdown_export_is_the_branch_shown_with_headings_per_turn(owner, owner_key, make_chat):
    chat, *_ = branched_chat(make_chat, owner)
    Chat.objects.filter(pk=chat.pk).update(title="Baking **bread**", system_prompt="Be brief.")

    response = api_get(owner_key, f"/api/v1/chat/{chat.pk}/export?format=markdown")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/markdown; charset=utf-8"
    assert download_name(response) == f"baking-bread-{str(chat.pk)[:8]}.md"
    text = response.content.decode()
    assert text.startswith("# Baking **bread**\n")
    assert "  > Be brief." in text
    turns = text.split("\n---\n")[1:]
    assert len(turns) == 2  # Q1, then the version of turn 2 shown (A2b); Q3 follows the hidden version
    assert "### You\n\nQ1\n\n### Assistant (" in turns[0] and "\n\nA1\n" in turns[0]
    assert "_Version 2 of 2 (the JSON export holds every version)._" in turns[1]
    assert "Q2" in turns[1] and "A2b" in turns[1]
    assert "A3" not in text and "\nA2\n" not in text


# --- all chats as a ZIP ----------------------------------------------------------------------------------------


def test_the_zip_holds_one_json_file_per_chat_of_the_caller_only(owner, other, owner_key, make_chat):
    first, *_ = branched_chat(make_chat, owner)
    second = make_chat(owner, [("Only question", "Only answer")], title="Second chat")
    make_chat(owner, [("Hidden", "Hidden")], unlisted=True)
    make_chat(other, [("Not yours", "Not yours")])

    response = api_get(owner_key, "/api/v1/chat/export")

    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    assert download_name(response).startswith("querynox-chats-") and download_name(response).endswith(".zip")
    with zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))) as archive:
        names = archive.namelist()
        documents = [json.loads(archive.read(name)) for name in names]
    assert all(name.startswith("chats/") and name.endswith(".json") for name in names)
    assert sorted(d["chat"]["id"] for d in documents) == sorted([str(first.pk), str(second.pk)])
    by_id = {d["chat"]["id"]: d for d in documents}
    assert len(by_id[str(first.pk)]["queries"]) == 4
    assert [q["prompt"] for q in by_id[str(second.pk)]["queries"]] == ["Only question"]


def test_the_zip_of_someone_without_chats_is_an_empty_archive(owner_key):
    response = api_get(owner_key, "/api/v1/chat/export")

    with zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))) as archive:
        assert archive.namelist() == []


def test_the_zip_reads_its_chats_in_batches_not_one_query_per_chat(owner, make_chat, django_assert_max_num_queries):
    from chat.portability import export_zip

    for index in range(5):
        make_chat(owner, [(f"Question {index}", f"Answer {index}")])

    with django_assert_max_num_queries(1 + 2 * 3):  # the ids, then per batch of 2: the chats and their queries
        archive = export_zip(owner, batch=2)
    with zipfile.ZipFile(archive) as opened:
        assert len(opened.namelist()) == 5


# --- the pages -------------------------------------------------------------------------------------------------


def test_the_chat_header_offers_both_downloads(owner, owner_client, make_chat):
    chat = make_chat(owner)

    page = Elements(owner_client.get(f"/chat/{chat.pk}/").content.decode())

    [(markdown, _)] = page.find("a", id="export-markdown")
    [(json_link, _)] = page.find("a", id="export-json")
    assert markdown["href"] == f"/chat/{chat.pk}/export/?format=markdown" and "download" in markdown
    assert json_link["href"] == f"/chat/{chat.pk}/export/?format=json"


def test_the_page_downloads_are_the_same_files_as_the_api(owner, owner_client, owner_key, make_chat):
    chat, *_ = branched_chat(make_chat, owner)

    page_json = json.loads(owner_client.get(f"/chat/{chat.pk}/export/?format=json").content)
    api_json = json.loads(api_get(owner_key, f"/api/v1/chat/{chat.pk}/export").content)
    page_md = owner_client.get(f"/chat/{chat.pk}/export/?format=markdown")
    zipped = owner_client.get("/chat/export/")

    assert {k: v for k, v in page_json.items() if k != "exportedAt"} == {
        k: v for k, v in api_json.items() if k != "exportedAt"
    }
    assert page_md["Content-Type"] == "text/markdown; charset=utf-8"
    assert zipped.status_code == 200 and zipped["Content-Type"] == "application/zip"


def test_the_account_page_links_the_zip_download(owner_client):
    page = Elements(owner_client.get("/accounts/").content.decode())

    [(link, _)] = page.find("a", id="export-all")
    assert link["href"] == "/chat/export/"


# --- who may export --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("export_format", ["json", "markdown"])
def test_another_users_chat_is_not_found_and_anonymous_callers_are_refused(
    owner, other_key, other_client, make_chat, export_format
):
    chat = make_chat(owner, [("Private question", "Private answer")])

    for path in (f"/api/v1/chat/{chat.pk}/export?format={export_format}", f"/api/v1/chat/{UNKNOWN_ID}/export"):
        response = api_get(other_key, path)
        assert response.status_code == 404 and response.json()["code"] == "not_found"
    their_zip = b"".join(api_get(other_key, "/api/v1/chat/export").streaming_content)
    assert zipfile.ZipFile(io.BytesIO(their_zip)).namelist() == []
    assert api_get(None, f"/api/v1/chat/{chat.pk}/export").status_code == 401
    assert api_get(None, "/api/v1/chat/export").status_code == 401

    assert other_client.get(f"/chat/{chat.pk}/export/?format={export_format}").status_code == 404
    anonymous = Client()
    for path in (f"/chat/{chat.pk}/export/?format={export_format}", "/chat/export/"):
        response = anonymous.get(path)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_the_other_users_zip_holds_only_their_chats(owner, other, other_client, make_chat):
    make_chat(owner, [("Owner's question", "Owner's answer")])
    theirs = make_chat(other, [("Their question", "Their answer")])

    with zipfile.ZipFile(io.BytesIO(b"".join(other_client.get("/chat/export/").streaming_content))) as archive:
        documents = [json.loads(archive.read(name)) for name in archive.namelist()]

    assert [d["chat"]["id"] for d in documents] == [str(theirs.pk)]
    assert ChatQuery.objects.filter(chat__owner=owner).count() == 1
