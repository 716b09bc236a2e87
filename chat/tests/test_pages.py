"""The HTMX chat pages: composer and model picker, vendored scripts, history, live turns and the sidebar."""

import json
import re
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.staticfiles import finders
from django.test import Client

from chat.models import ChatQuery
from testsupport.html import MARKDOWN_ANSWER, MARKDOWN_PROMPT, Elements, assert_no_live_markup
from testsupport.http import ServerAsyncClient, bearer
from testsupport.scripted import SCRIPTED_MODEL

VENDORED_SCRIPTS = ["js/htmx-2.0.11.min.js", "js/htmx-ext-ws-2.0.4.js"]


def page(client, path) -> Elements:
    response = client.get(path)
    assert response.status_code == 200
    return Elements(response.content.decode())


def model_options(client, path="/chat/") -> dict[str, tuple[dict, str]]:
    doc = page(client, path)
    assert doc.find("select", name="model", id="model"), "the composer has no model select"
    return {attrs["value"]: (attrs, text) for attrs, text in doc.find("option")}


# --- the composer --------------------------------------------------------------------------------------------


def test_the_new_chat_page_has_the_composer(owner_client):
    doc = page(owner_client, "/chat/")

    assert doc.find("form", id="composer")
    assert doc.find("textarea", name="prompt")
    assert doc.find("textarea", name="systemPrompt")
    assert doc.find("input", name="chatId", value="")
    assert doc.find("div", **{"ws-connect": "/ws/chat/"})


def test_the_local_model_is_selectable_and_selected_by_default(owner_client):
    options = model_options(owner_client)

    attrs, text = options["smollm2-135m"]
    assert "disabled" not in attrs
    assert "selected" in attrs
    assert "offline" in text


@pytest.mark.parametrize(
    "name,reason",
    [
        ("gpt-3.5-turbo", "OPENAI_API_KEY is not set"),
        ("Claude 3.5 Sonnet", "CLAUDE_API_KEY is not set"),
        ("llama-3.3-70b-versatile", "GROQ_API_KEY is not set"),
        ("gemini-1.5-flash", "GEMINI_API_KEY is not set"),
        ("grok-3-mini", "OPENROUTER_API_KEY is not set"),
    ],
)
def test_cloud_models_without_a_key_are_disabled_with_the_reason(owner_client, name, reason):
    attrs, text = model_options(owner_client)[name]

    assert "disabled" in attrs
    assert reason in text


def test_pro_models_are_labelled(owner_client):
    options = model_options(owner_client)

    assert "(pro)" in options["Claude 3.5 Sonnet"][1]
    assert "(pro)" not in options["gpt-3.5-turbo"][1]


def test_a_chat_page_selects_the_chats_model(owner, owner_client, make_chat):
    chat = make_chat(owner, model="smollm2-135m")
    chat_options = model_options(owner_client, f"/chat/{chat.pk}/")

    assert "selected" in chat_options["smollm2-135m"][0]
    assert [name for name, (attrs, _) in chat_options.items() if "selected" in attrs] == ["smollm2-135m"]


# --- static assets -------------------------------------------------------------------------------------------


def test_the_page_loads_vendored_htmx_and_ws_from_static(owner_client):
    doc = page(owner_client, "/chat/")
    scripts = [attrs["src"] for attrs, _ in doc.find("script") if "src" in attrs]

    for asset in VENDORED_SCRIPTS:
        assert f"/static/{asset}" in scripts
        path = finders.find(asset)
        assert path, f"{asset} is not in the static files"
        assert "htmx" in Path(path).read_text(encoding="utf-8")[:5000].lower()
    assert all(src.startswith("/static/") for src in scripts)


def test_no_template_loads_anything_from_another_origin():
    external = re.compile(r"""(src|href|ws-connect)\s*=\s*["']?\s*(https?:|wss?:)?//""", re.IGNORECASE)
    templates = list(Path(settings.BASE_DIR, "templates").rglob("*.html"))
    assert templates

    offenders = [f"{path}: {match.group(0)}" for path in templates for match in external.finditer(path.read_text())]

    assert offenders == []


@pytest.mark.parametrize("path", ["/chat/", "/accounts/login/", "/accounts/signup/"])
def test_rendered_pages_reference_no_cdn(db, owner, path):
    client = Client()
    if path == "/chat/":
        client.force_login(owner)
    html = client.get(path).content.decode()

    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "cdn" not in html.lower()


# --- history and live turns ----------------------------------------------------------------------------------


def test_a_chat_page_shows_the_whole_history_in_order(owner, owner_client, make_chat):
    turns = [(f"Question {n} <b>bold</b>", f"Answer {n} & more") for n in range(1, 6)]
    chat = make_chat(owner, turns, title="Five turns")

    doc = page(owner_client, f"/chat/{chat.pk}/")

    prompts = [text for _, text in doc.find("div", class_="prompt")]
    answers = [text for _, text in doc.find("div", class_="answer")]
    assert prompts == [prompt for prompt, _ in turns]  # escaped on the way out, so shown as typed
    assert answers == [answer for _, answer in turns]
    assert doc.find("input", name="title", value="Five turns")
    assert doc.find("input", name="chatId", value=str(chat.pk))
    assert not doc.find("div", id="empty-state")


def test_a_turn_still_streaming_renders_a_follow_trigger_and_a_stop_button(owner, owner_client, make_chat):
    chat = make_chat(owner, [("Done question", "Done answer"), ("Live question", "Partial ans", "streaming")])
    live = chat.queries.get(status=ChatQuery.Status.STREAMING)
    done = chat.queries.get(status=ChatQuery.Status.COMPLETE)

    doc = page(owner_client, f"/chat/{chat.pk}/")

    sends = [json.loads(attrs["hx-vals"]) for attrs, _ in doc.find(**{"ws-send": True}) if "hx-vals" in attrs]
    followers = [a for a, _ in doc.find(**{"hx-trigger": "load"}) if "ws-send" in a]
    assert [json.loads(a["hx-vals"]) for a in followers] == [{"action": "follow", "queryId": str(live.pk)}]
    assert {"action": "stop", "queryId": str(live.pk)} in sends
    # The ended turn may be regenerated, never followed or stopped.
    assert all(send["queryId"] != str(done.pk) for send in sends if send["action"] in ("follow", "stop"))
    assert [text for _, text in doc.find("div", id=f"answer-{live.pk}")] == ["Partial ans"]


@pytest.mark.parametrize("status,shown", [("stopped", "Stopped."), ("error", "The provider timed out.")])
def test_finished_turns_show_how_they_ended(owner, owner_client, make_chat, status, shown):
    chat = make_chat(owner, [("Question", "Part", status)])
    chat.queries.update(error="The provider timed out." if status == "error" else "")
    query = chat.queries.get()

    doc = page(owner_client, f"/chat/{chat.pk}/")

    assert [text for _, text in doc.find("div", id=f"status-{query.pk}")] == [shown]
    assert not doc.find(**{"hx-trigger": "load"})


def test_the_empty_state_shows_on_a_new_chat(owner_client):
    doc = page(owner_client, "/chat/")

    assert doc.find("div", id="empty-state")
    assert not doc.find("article")


# --- the sidebar ---------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_the_sidebar_titles_a_chat_from_its_first_prompt(scripted, owner, owner_key):
    client = ServerAsyncClient()
    first_prompt = "How do I   keep sourdough starter alive while I travel for three weeks?"
    response = await client.post(
        "/api/v1/chat", {"prompt": first_prompt}, content_type="application/json", headers=bearer(owner_key)
    )
    chat_id = response.json()["chat"]["id"]
    await client.post(
        f"/api/v1/chat/{chat_id}",
        {"prompt": "And in summer?"},
        content_type="application/json",
        headers=bearer(owner_key),
    )
    await client.aforce_login(owner)

    html = (await client.get(f"/chat/{chat_id}/")).content.decode()

    links = [(a, text) for a, text in Elements(html).find("a") if a.get("href") == f"/chat/{chat_id}/"]
    expected = "How do I keep sourdough starter alive while I trav…"  # whitespace folded, cut at 50 characters
    assert [text for _, text in links] == [expected]
    assert "active" in links[0][0]["class"].split()


def test_the_sidebar_lists_only_the_users_chats_and_marks_bookmarks(owner, other, owner_client, make_chat):
    mine = make_chat(owner, [("My chat", "a")], bookmarked=True)
    make_chat(other, [("Their chat", "b")])

    doc = page(owner_client, "/chat/")

    links = doc.find("a", class_="chat-link")
    assert [(a["href"], text) for a, text in links] == [(f"/chat/{mine.pk}/", "★My chat")]


def test_the_chat_model_is_shown_per_turn(owner, owner_client, make_chat):
    chat = make_chat(owner, [("Question", "Answer")], model=SCRIPTED_MODEL)

    doc = page(owner_client, f"/chat/{chat.pk}/")

    assert [text for _, text in doc.find("span", class_="answer-model")] == [SCRIPTED_MODEL]


# --- answers as Markdown, prompts as text ---------------------------------------------------------------------

def test_stored_answers_render_as_markdown_and_prompts_as_text(owner, owner_client, make_chat):
    chat = make_chat(owner, [(MARKDOWN_PROMPT, MARKDOWN_ANSWER)])
    query = chat.queries.get()

    html = owner_client.get(f"/chat/{chat.pk}/").content.decode()
    doc = Elements(html)

    assert [text for _, text in doc.find("h2")] == ["Steps"]
    assert [text for _, text in doc.find("li")][-2:] == ["Mix", "Bake"]
    assert doc.find("code", class_="language-python") and doc.find("button", class_="copy-code")
    assert [text for _, text in doc.find("td")] == ["a", "1"]
    assert [text for _, text in doc.find(class_="math math-inline")] == ["e^{i\\pi} + 1 = 0"]
    ((_, answer),) = doc.find("div", id=f"answer-{query.pk}")
    assert answer.endswith("<script>alert(1)</script> <img src=x onerror=alert(1)> [x](javascript:alert(1))")
    assert_no_live_markup(doc)
    # The page loads KaTeX and the answer behaviours from this site, and the code colours.
    scripts = [attrs["src"] for attrs, _ in doc.find("script")]
    assert any(src.endswith("/katex.min.js") for src in scripts) and any(src.endswith("/answers.js") for src in scripts)
    assert any(attrs["href"].endswith("/pygments.css") for attrs, _ in doc.find("link", rel="stylesheet"))

    # The prompt exactly as typed: its markup is text, its line break kept (the CSS keeps white space).
    ((_, prompt),) = doc.find("div", class_="prompt")
    assert prompt == " ".join(MARKDOWN_PROMPT.split())
    assert "Write **bold** &lt;b&gt;now&lt;/b&gt;\nsecond line &lt;script&gt;" in html


def test_the_footer_offers_the_markdown_source_model_and_tokens(owner, owner_client, make_chat):
    chat = make_chat(owner, [("Q", "**A** & <b>")])
    query = chat.queries.get()
    query.metadata = {"usage": {"inputTokens": 12, "outputTokens": 34}}
    query.save()

    doc = page(owner_client, f"/chat/{chat.pk}/")

    ((foot, text),) = doc.find("div", id=f"answer-foot-{query.pk}")
    assert "hidden" not in foot
    assert text.endswith(f"{SCRIPTED_MODEL} 12 in · 34 out")
    ((button, _),) = doc.find("button", class_="icon-button copy-answer")
    assert [text for _, text in doc.find("template", id=button["data-copy-from"])] == ["**A** & <b>"]


def test_a_turn_still_streaming_shows_its_text_unrendered_until_it_ends(owner, owner_client, make_chat):
    chat = make_chat(owner, [("Q", "**partial", "streaming")])
    query = chat.queries.get()

    doc = page(owner_client, f"/chat/{chat.pk}/")

    ((_, answer),) = doc.find("div", id=f"answer-{query.pk}")
    assert answer == "**partial" and not doc.find("div", class_="markdown")
    ((foot, _),) = doc.find("div", id=f"answer-foot-{query.pk}")
    assert "hidden" in foot
    assert doc.find("span", id=f"elapsed-{query.pk}")  # the elapsed-time counter's place


def test_the_theme_script_loads_before_the_page_and_every_page_has_a_toggle(owner, owner_client, db):
    for client, path in ((owner_client, "/chat/"), (owner_client, "/accounts/"), (Client(), "/pricing/")):
        html = client.get(path).content.decode()
        head = html[: html.index("</head>")]
        assert '<script src="/static/js/theme.js">' in head  # not deferred: no flash of the wrong theme
        assert head.index("js/theme.js") < head.index("css/app.css")
        ((toggle, _),) = Elements(html).find("button", **{"data-theme-toggle": True})
        assert toggle["aria-pressed"] == "false" and toggle["type"] == "button"


def test_the_sidebar_collapses_behind_a_labelled_button(owner_client):
    doc = page(owner_client, "/chat/")

    ((toggle, label),) = doc.find("button", id="sidebar-toggle")
    assert (toggle["aria-controls"], toggle["aria-expanded"], label) == ("sidebar", "false", "☰ Chats")
    assert doc.find("aside", id="sidebar")


def test_the_pages_have_no_inline_scripts(owner, owner_client, make_chat):
    chat = make_chat(owner, [("Q", MARKDOWN_ANSWER)])
    for path in ("/chat/", f"/chat/{chat.pk}/"):
        doc = page(owner_client, path)
        for attrs, text in doc.find("script"):
            assert attrs.get("src") and not text, attrs  # a strict Content-Security-Policy: script-src 'self'
