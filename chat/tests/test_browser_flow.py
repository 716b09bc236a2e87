"""One person's first session, end to end, in a real Chromium under the site's real Content-Security-Policy, against a
real daphne whose only provider is the provider emulator (each answer is exactly the text the step asks for, streamed
word by word at the pace it asks for): sign up → ask, and watch the answer stream and then render as Markdown →
stop a running answer → regenerate it → move between the two versions → edit and resend the first prompt, the
conversation below following the version shown → a prompt from a tab whose branch another tab has since unselected
→ reload during an answer → attach a file and follow its citation → share and read it logged out → the dark theme →
phone width. Screenshots of the pages it passes go to screenshots/ (git-ignored)."""

import re
from itertools import pairwise

import pytest

from testsupport.browser import (
    CHAT_URL,
    EMULATOR_MODEL,
    answer_growth,
    ask,
    new_chat,
    open_tab,
    screenshot,
    sign_up,
    wait_for,
    wait_for_socket,
    wait_until_finished,
)
from testsupport.files import make_text_pdf

pytestmark = pytest.mark.browser

EMAIL = "first-session@example.com"
PASSWORD = "a long first-session password"
CODE = "def area(r):\n    return 3.14159 * r ** 2"
MARKDOWN_REPLY = (
    "Here is how:\n\n"
    "- **measure** the radius\n"
    "- square it\n\n"
    "| r | area |\n|---|---|\n| 1 | 3.14 |\n| 2 | 12.57 |\n\n"
    f"```python\n{CODE}\n```\n\n"
    "Done."
)
LONG_REPLY = " ".join(f"word{n}" for n in range(300))
REGENERATED = "A shorter second version."
FIRST_PROMPT = "How do I compute the area of a circle?"
EDITED_PROMPT = "How do I compute the area of a square?"
EDITED_ANSWER = "Multiply the side by itself."
FOLLOW_UP = "And of a rectangle?"
FOLLOW_UP_REPLY = " ".join(f"step{n}" for n in range(60))
NOTES = "Garden notes. The greenhouse key hangs on the blue hook behind the shed door."
CITED_REPLY = "The key hangs on the blue hook behind the shed door [1]."

# How far the conversation is scrolled from its end, in pixels (static/js/chat.js follows within 48 of it).
FROM_END = "(m => m.scrollHeight - m.scrollTop - m.clientHeight)(document.getElementById('messages'))"


def turns(page):
    return page.locator("#messages article.turn")


def versions_of(turn):
    return turn.locator(".versions .version-position")


def provider_conversations(emulator) -> list[list[str]]:
    """The messages each chat completion the emulator served was sent (system prompts left out)."""
    return [
        [m["content"] for m in entry["messages"] if m["role"] != "system"]
        for entry in emulator.requests
        if entry.get("messages")  # chat completions (embeddings have none)
    ]


def test_a_first_session_from_sign_up_to_phone(browser, emulator_server, provider_emulator):
    from playwright.sync_api import expect

    tab = open_tab(browser, emulator_server.url)
    page = tab.page

    # --- sign up, ask: the answer streams, then renders as Markdown ---------------------------------------------
    sign_up(page, EMAIL, PASSWORD)
    new_chat(page)
    expect(page.locator("#model")).to_have_value(EMULATOR_MODEL)
    provider_emulator.configure(reply=MARKDOWN_REPLY, tokens_per_second=25)
    first = ask(page, FIRST_PROMPT)
    grown = answer_growth(page, first)
    assert len(grown) >= 5, grown  # its text grew, step by step, each step extending the one before
    assert all(len(later) > len(earlier) and later.startswith(earlier) for earlier, later in pairwise(grown))
    assert "```python" in grown[-1]  # while streaming: the Markdown source, as text
    wait_until_finished(first)
    expect(page).to_have_url(CHAT_URL)
    chat_url = page.url

    answer = first.locator(".answer .markdown")
    expect(answer.locator("li")).to_have_text(["measure the radius", "square it"])
    expect(answer.locator("li strong")).to_have_text("measure")
    expect(answer.locator("table td")).to_have_text(["1", "3.14", "2", "12.57"])
    code = answer.locator(".code-block pre code.language-python")
    expect(code).to_have_text(CODE)
    keyword = code.locator("span.k").first  # highlighted: the keyword has its own colour
    expect(keyword).to_have_text("def")
    assert keyword.evaluate("el => getComputedStyle(el).color") != code.evaluate("el => getComputedStyle(el).color")
    expect(answer).not_to_contain_text("```")
    answer.locator("button.copy-code").click()
    expect(answer.locator("button.copy-code")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == CODE
    # A turn added live has its edit button once its answer ended, without a reload.
    expect(first.locator(".edit-prompt")).to_have_count(1)
    screenshot(page, "flow-chat-light")

    # --- a long answer: the view follows it at the end, not once the reader scrolls up; Escape stops it ----------
    provider_emulator.configure(reply=LONG_REPLY, tokens_per_second=12)
    long = ask(page, "Tell me a long story")
    expect(long.locator(".answer")).to_contain_text("word3")
    expect(long.locator(".edit-prompt")).to_have_count(0)  # still being written: nothing to edit yet
    wait_for(page, "(() => { const m = document.getElementById('messages'); "
                   "return m.scrollHeight > m.clientHeight + 200; })()")
    assert page.evaluate(FROM_END) <= 48  # following the newest words
    page.evaluate("document.getElementById('messages').scrollTop = 0")
    length = len(long.locator(".answer").text_content())
    wait_for(page, "([id, n]) => document.getElementById(id).textContent.length > n + 40",
             [long.locator(".answer").get_attribute("id"), length])
    assert page.evaluate("document.getElementById('messages').scrollTop") == 0  # the reader stays where they are
    page.keyboard.press("Escape")
    expect(long.locator(".status")).to_have_text("Stopped.")
    wait_until_finished(long)
    stopped_text = long.locator(".answer").text_content()
    assert "word3" in stopped_text and "word299" not in stopped_text
    expect(long.locator(".edit-prompt")).to_have_count(1)  # live: the ended turn's controls

    # --- regenerate, then move between the two versions -----------------------------------------------------------
    provider_emulator.configure(reply=REGENERATED, tokens_per_second=20)
    long.locator("button.regenerate").click()
    second = turns(page).nth(1)
    expect(versions_of(second)).to_have_text("2 / 2")
    wait_until_finished(second)
    expect(second.locator(".answer")).to_have_text(REGENERATED)
    expect(second.locator(".edit-prompt")).to_have_count(1)
    expect(turns(page)).to_have_count(2)
    second.get_by_role("button", name="Previous version").click()
    expect(versions_of(turns(page).nth(1))).to_have_text("1 / 2")
    expect(turns(page).nth(1).locator(".answer")).to_have_text(stopped_text)
    turns(page).nth(1).get_by_role("button", name="Next version").click()
    expect(versions_of(turns(page).nth(1))).to_have_text("2 / 2")
    expect(turns(page).nth(1).locator(".answer")).to_have_text(REGENERATED)

    # --- edit and resend the first prompt: the conversation below follows the version shown -----------------------
    provider_emulator.configure(reply=EDITED_ANSWER, tokens_per_second=20)
    turns(page).first.locator(".edit-prompt").click()
    editor = turns(page).first.locator(".prompt-editor textarea")
    expect(editor).to_have_value(FIRST_PROMPT)
    editor.fill(EDITED_PROMPT)
    turns(page).first.get_by_role("button", name="Save & send").click()
    expect(turns(page)).to_have_count(1)  # the later turns belong to the other version of this one
    edited = turns(page).first
    expect(edited.locator(".prompt")).to_have_text(EDITED_PROMPT)
    expect(versions_of(edited)).to_have_text("2 / 2")
    wait_until_finished(edited)
    expect(edited.locator(".answer")).to_have_text(EDITED_ANSWER)
    assert provider_conversations(provider_emulator)[-1] == [EDITED_PROMPT]  # the model saw no other branch
    edited.get_by_role("button", name="Previous version").click()
    expect(turns(page)).to_have_count(2)  # back: the turns that followed the first version come back
    expect(turns(page).first.locator(".prompt")).to_have_text(FIRST_PROMPT)
    expect(versions_of(turns(page).nth(1))).to_have_text("2 / 2")  # as last shown there
    expect(turns(page).nth(1).locator(".answer")).to_have_text(REGENERATED)
    turns(page).first.get_by_role("button", name="Next version").click()
    expect(turns(page)).to_have_count(1)
    expect(turns(page).first.locator(".prompt")).to_have_text(EDITED_PROMPT)

    # --- another tab shows the other branch; a prompt from this tab continues the branch this tab shows ----------
    other_tab = tab.context.new_page()
    other_tab.goto(chat_url)
    other_tab.locator("#messages article.turn").first.get_by_role("button", name="Previous version").click()
    expect(other_tab.locator("#messages article.turn")).to_have_count(2)
    other_tab.close()

    # --- reload while an answer is written: it completes after the reload ---------------------------------------
    provider_emulator.configure(reply=FOLLOW_UP_REPLY, tokens_per_second=8)
    follow_up = ask(page, FOLLOW_UP)
    expect(turns(page)).to_have_count(2)
    expect(follow_up.locator(".answer")).to_contain_text("step5")
    assert provider_conversations(provider_emulator)[-1] == [EDITED_PROMPT, EDITED_ANSWER, FOLLOW_UP]
    response = page.reload()
    assert "Reconnecting…" in response.text(), "the answer finished before the reload: nothing was resumed"
    wait_for_socket(page)
    follow_up = turns(page).last
    expect(turns(page).first.locator(".prompt")).to_have_text(EDITED_PROMPT)  # the branch this tab continued
    wait_until_finished(follow_up)
    expect(follow_up.locator(".answer")).to_have_text(FOLLOW_UP_REPLY)
    expect(follow_up.locator(".status")).to_have_text("")

    # --- attach a file: the answer cites it, and the citation leads to the stored file ------------------------------
    provider_emulator.configure(reply=CITED_REPLY, tokens_per_second=20)
    pdf = make_text_pdf([NOTES])
    page.set_input_files("#file-picker", files=[{"name": "notes.pdf", "mimeType": "application/pdf", "buffer": pdf}])
    expect(page.locator("#attachments .chip")).to_contain_text("notes.pdf")
    cited = ask(page, "Where does the greenhouse key hang?")
    expect(cited.locator(".turn-files")).to_contain_text("notes.pdf")
    wait_until_finished(cited)
    query_id = cited.get_attribute("id").removeprefix("turn-")
    citation = cited.locator(".answer a.cite")
    expect(citation).to_have_text("1")
    expect(citation).to_have_attribute("href", f"#source-{query_id}-1")
    source = cited.locator(f"#source-{query_id}-1")
    expect(source).to_contain_text("[1] notes.pdf, page 1")
    file_link = source.get_by_role("link", name="notes.pdf, page 1")
    href = file_link.get_attribute("href")
    assert re.fullmatch(r"/chat/[0-9a-f-]{36}/documents/\d+/file#page=1", href), href
    citation.click()
    expect(page).to_have_url(re.compile(f"#source-{query_id}-1$"))
    stored = page.request.get(href.split("#")[0])
    assert stored.status == 200 and stored.body() == pdf

    # --- share, and read the public page logged out: the branch selected, nothing else ------------------------
    header = page.locator("#chat-header")
    header.get_by_role("button", name="Share").click()
    public_path = header.get_by_role("link", name="Public link").get_attribute("href")
    stranger = open_tab(browser, emulator_server.url)
    assert stranger.page.goto(public_path).status == 200
    prompts = stranger.page.locator(".prompt")
    expect(prompts).to_have_text([EDITED_PROMPT, FOLLOW_UP, "Where does the greenhouse key hang?"])
    expect(stranger.page.locator("body")).not_to_contain_text(REGENERATED)
    expect(stranger.page.locator(".answer").first).to_have_text(EDITED_ANSWER)
    screenshot(stranger.page, "flow-public")
    stranger.page.goto("/chat/")
    expect(stranger.page).to_have_url(re.compile(r"/accounts/login/"))  # the stranger is not logged in
    stranger.close()

    # --- dark and light: the toggle is remembered ------------------------------------------------------------------
    html = page.locator("html")
    expect(html).to_have_attribute("data-theme", "light")
    light = page.evaluate("getComputedStyle(document.body).backgroundColor")
    page.locator("#sidebar [data-theme-toggle]").click()
    expect(html).to_have_attribute("data-theme", "dark")
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") != light
    page.reload()
    expect(html).to_have_attribute("data-theme", "dark")
    screenshot(page, "flow-chat-dark")
    page.locator("#sidebar [data-theme-toggle]").click()
    expect(html).to_have_attribute("data-theme", "light")
    page.goto("/accounts/")
    screenshot(page, "flow-account")

    # --- phone width: the sidebar behind its button, the composer usable -----------------------------------------
    phone = open_tab(browser, emulator_server.url, storage_state=tab.context.storage_state(),
                     viewport={"width": 390, "height": 844})
    phone.page.goto(chat_url)
    wait_for_socket(phone.page)
    toggle = phone.page.get_by_role("button", name="Chats")
    expect(toggle).to_have_attribute("aria-expanded", "false")
    expect(phone.page.locator("#sidebar")).to_be_hidden()
    composer = phone.page.locator("#composer").bounding_box()
    prompt = phone.page.locator("#prompt").bounding_box()
    assert composer["width"] >= 300 and prompt["width"] >= 250, (composer, prompt)
    assert composer["x"] >= 0 and composer["x"] + composer["width"] <= 390
    assert phone.page.evaluate("document.documentElement.scrollWidth") <= 390
    provider_emulator.configure(reply="Short enough for a phone.", tokens_per_second=20)
    on_phone = ask(phone.page, "Does this fit?")
    wait_until_finished(on_phone)
    expect(on_phone.locator(".answer")).to_have_text("Short enough for a phone.")
    screenshot(phone.page, "flow-phone")
    toggle.click()
    expect(phone.page.locator("#sidebar")).to_be_visible()
    expect(phone.page.locator("#chat-list a.chat-link.active")).to_have_count(1)
    phone.page.keyboard.press("Escape")
    expect(phone.page.locator("#sidebar")).to_be_hidden()
    phone.close()
    tab.close()
