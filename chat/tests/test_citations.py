"""Numbered citations in the UI: a source list under each grounded answer (file and page linking to the stored
file, web results linking out), [n] markers in the answer linked to it, the chat's documents listed, and the
original files served to the chat's owner only."""

import pytest
from django.core.files.base import ContentFile
from django.test import Client

from chat.fragments import HtmxFramer, render_answer
from rag.models import Document
from testsupport.files import make_text_pdf
from testsupport.html import Elements

PDF = make_text_pdf(["First page", "The door code is 4471."])


def file_source(n, chat, document, page):
    return {
        "n": n,
        "ref": str(n),
        "kind": "file",
        "documentId": document.pk,
        "documentName": document.name,
        "title": document.name,
        "page": page,
        "heading": "",
        "url": f"/chat/{chat.pk}/documents/{document.pk}/file#page={page}",
        "snippet": "The door code is 4471.",
    }


def web_source(n):
    return {
        "n": n,
        "ref": f"W{n}",
        "kind": "web",
        "title": f"Result <{n}>",
        "url": f"https://example.com/{n}",
        "snippet": "A web snippet.",
    }


def make_document(chat, name="handbook.pdf", data=PDF, kind="pdf", mime="application/pdf", **fields) -> Document:
    document = Document(chat=chat, name=name, kind=kind, mime=mime, sha256=name.ljust(64, "0"), size=len(data))
    for field, value in {"status": "ready", "pages": 2, **fields}.items():
        setattr(document, field, value)
    document.file.save(name, ContentFile(data), save=False)
    document.save()
    return document


@pytest.fixture
def cited_chat(owner, make_chat):
    chat = make_chat(owner, [("What is the door code?", "It is 4471 [1], see also [W1] and [1, W1]; not [7].")])
    document = make_document(chat)
    query = chat.queries.get()
    query.metadata = {"sources": [file_source(1, chat, document, 2), web_source(1)]}
    query.save()
    return chat, query, document


# --- the answer's markers --------------------------------------------------------------------------------------


def test_markers_naming_a_source_link_to_it_and_everything_else_stays_escaped_text():
    sources = [{"ref": "1"}, {"ref": "2"}, {"ref": "W1"}]

    html = render_answer("q", 'See [1] and [2][W1], or [1, W1]. Not [3] nor [x]. <script>alert("x")</script>', sources)

    assert html == (
        '<div class="markdown"><p>See [<a class="cite" href="#source-q-1" rel="noopener nofollow">1</a>] and '
        '[<a class="cite" href="#source-q-2" rel="noopener nofollow">2</a>]'
        '[<a class="cite" href="#source-q-W1" rel="noopener nofollow">W1</a>], or '
        '[<a class="cite" href="#source-q-1" rel="noopener nofollow">1</a>, '
        '<a class="cite" href="#source-q-W1" rel="noopener nofollow">W1</a>]. Not [3] nor [x]. '
        '&lt;script&gt;alert("x")&lt;/script&gt;</p>\n</div>'
    )
    assert render_answer("q", "<b>[1]</b>", None) == '<div class="markdown"><p>&lt;b&gt;[1]&lt;/b&gt;</p>\n</div>'


# --- the chat page ---------------------------------------------------------------------------------------------


def test_the_page_lists_each_answers_sources_and_links_its_markers(owner_client, cited_chat):
    chat, query, document = cited_chat

    page = Elements(owner_client.get(f"/chat/{chat.pk}/").content.decode())

    (file_item,) = page.find("li", id=f"source-{query.pk}-1")
    assert file_item[1].startswith("[1] handbook.pdf, page 2")
    (file_link,) = [a for a, text in page.find("a") if text == "handbook.pdf, page 2"]
    assert file_link["href"] == f"/chat/{chat.pk}/documents/{document.pk}/file#page=2"
    (web_item,) = page.find("li", id=f"source-{query.pk}-W1")
    assert web_item[1].startswith("[W1] Result <1>")  # the title is text, not markup
    (web_link,) = [a for a, text in page.find("a") if text == "Result <1>"]
    assert (web_link["href"], web_link["rel"], web_link["target"]) == (
        "https://example.com/1",
        "noopener noreferrer",
        "_blank",
    )

    (answer,) = page.find("div", id=f"answer-{query.pk}")
    assert answer[1] == "It is 4471 [1], see also [W1] and [1, W1]; not [7]."
    cites = [a["href"] for a, _ in page.find("a", class_="cite")]
    assert cites == [f"#source-{query.pk}-{ref}" for ref in ("1", "W1", "1", "W1")]


def test_an_answer_without_sources_has_no_source_list_and_no_links(owner_client, owner, make_chat):
    chat = make_chat(owner, [("Question", "Plain answer [1] <i>not markup</i>")])
    query = chat.queries.get()

    html = owner_client.get(f"/chat/{chat.pk}/").content.decode()
    page = Elements(html)

    ((attrs, _),) = page.find("ol", id=f"sources-{query.pk}")
    assert "hidden" in attrs
    assert page.find("a", class_="cite") == []
    assert "Plain answer [1] &lt;i&gt;not markup&lt;/i&gt;" in html


def test_the_page_lists_the_chats_documents_with_pages_and_status(owner_client, owner, make_chat):
    chat = make_chat(owner)
    ready = make_document(chat)
    make_document(chat, "scan.png", b"not read", kind="image", mime="image/png", status="failed", error="No text.")

    page = Elements(owner_client.get(f"/chat/{chat.pk}/").content.decode())

    items = [text for _, text in page.find("li", class_="document document-ready")]
    assert items == ["handbook.pdf 2 pages"]
    assert [text for _, text in page.find("li", class_="document document-failed")] == ["scan.png skipped: No text."]
    assert [a["href"] for a, text in page.find("a") if text == "handbook.pdf"] == [
        f"/chat/{chat.pk}/documents/{ready.pk}/file"
    ]


# --- the stored files ------------------------------------------------------------------------------------------


def test_the_owner_downloads_the_original_file_and_nobody_else_can(owner_client, other_client, cited_chat):
    chat, _, document = cited_chat
    path = f"/chat/{chat.pk}/documents/{document.pk}/file"

    response = owner_client.get(path)
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == PDF
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"].startswith("inline")  # opened in the browser, where #page=N works

    assert other_client.get(path).status_code == 404
    assert other_client.get(f"/chat/{chat.pk}/documents/{document.pk + 1}/file").status_code == 404
    anonymous = Client().get(path)
    assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]


def test_a_text_file_is_served_as_plain_text_whatever_it_holds(owner_client, owner, make_chat):
    chat = make_chat(owner)
    document = make_document(chat, "page.md", b"<script>alert(1)</script>", kind="markdown", mime="text/markdown")

    response = owner_client.get(f"/chat/{chat.pk}/documents/{document.pk}/file")

    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response["Content-Security-Policy"] == "sandbox"
    assert response["X-Content-Type-Options"] == "nosniff"


# --- the live page (HTMX fragments over the socket) --------------------------------------------------------------


@pytest.mark.django_db
async def test_the_socket_fragments_fill_the_source_list_and_link_the_finished_answer(owner):
    framer = HtmxFramer(owner)
    sources = [web_source(1)]

    (fragment,) = await framer.frames("q1", {"type": "sources", "sources": sources})

    page = Elements(fragment)
    ((attrs, text),) = page.find("ol", id="sources-q1")
    assert attrs["hx-swap-oob"] == "outerHTML" and "hidden" not in attrs
    assert text.startswith("[W1] Result <1>")

    query = {"chatId": "c1", "response": "Per [W1].", "metadata": {"sources": sources}, "status": "complete"}
    frames = await framer.frames("q1", {"type": "complete", "status": "complete", "query": query, "usage": None})
    (answer,) = [f for f in frames if 'id="answer-q1"' in f]
    assert answer == (
        '<div id="answer-q1" class="answer" hx-swap-oob="outerHTML"><div class="markdown">'
        '<p>Per [<a class="cite" href="#source-q1-W1" rel="noopener nofollow">W1</a>].</p>\n</div></div>'
    )


@pytest.mark.django_db(transaction=True)
async def test_a_finished_turn_with_files_refreshes_the_document_list(owner, make_chat):
    from asgiref.sync import sync_to_async

    chat = await sync_to_async(make_chat)(owner)
    await sync_to_async(make_document)(chat)
    framer = HtmxFramer(owner)
    query = {"chatId": str(chat.pk), "response": "Done.", "metadata": {"files": [{"name": "handbook.pdf"}]}}

    frames = await framer.frames("q2", {"type": "complete", "status": "complete", "query": query, "usage": None})

    (documents,) = [f for f in frames if 'id="documents"' in f]
    assert 'hx-swap-oob="outerHTML"' in documents and "handbook.pdf" in documents


@pytest.mark.django_db(transaction=True)
async def test_a_finished_answer_replayed_from_the_database_brings_its_sources(cited_chat):
    from chat.generations import follow

    _, query, _ = cited_chat

    replayed = [event async for event in follow(query.pk)]

    assert [event["type"] for event in replayed] == ["metadata", "sources", "content", "complete"]
    assert replayed[1]["sources"] == query.metadata["sources"]
