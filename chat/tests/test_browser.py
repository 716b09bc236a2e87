"""The web UI as a person uses it: headless Chromium (Playwright) against a real daphne server and the real local
model. Every wait is for a condition on the page, with generous timeouts: the model shares 2 cores with the browser.

The tests run in file order and share one signed-up browser session (signing up is the first step a person takes);
each test starts its own chat."""

import re
from itertools import pairwise

import httpx
import pytest

from testsupport.browser import CHAT_URL, ask, new_chat, open_tab, sign_up, wait_for, wait_for_socket
from testsupport.browser import wait_until_finished as wait_until_rendered

pytestmark = [pytest.mark.browser, pytest.mark.local_model]

SCREENSHOT = "/tmp/querynox-chat.png"
EMAIL = "browser-user@example.com"
PASSWORD = "a long browser-test password"
STEP_MS = 30_000  # a page step (navigation, HTMX swap, first token)
ANSWER_MS = 180_000  # a whole answer: up to 512 tokens on a busy 2-core machine

# Installed before any page script: tells the test when htmx's socket is open, and records what the newest turn
# shows after every change of the conversation (status lines and the answer's text while it streams, before the
# server replaces it with its rendered Markdown), so a test can check the streaming afterwards without racing it.
WATCH_SCRIPT = """
window.__qnx = {socketOpen: false, statuses: [], answers: []};
document.addEventListener("htmx:wsOpen", () => { window.__qnx.socketOpen = true; });
document.addEventListener("htmx:wsClose", () => { window.__qnx.socketOpen = false; });
document.addEventListener("DOMContentLoaded", () => {
  const messages = document.getElementById("messages");
  if (!messages) return;
  const record = () => {
    const turns = messages.querySelectorAll("article.turn");
    const last = turns[turns.length - 1];
    if (!last) return;
    const status = last.querySelector(".status");
    const text = status ? status.textContent.trim() : "";
    const statuses = window.__qnx.statuses;
    if (text && statuses[statuses.length - 1] !== text) statuses.push(text);
    const element = last.querySelector(".answer");
    if (element.querySelector(".markdown")) return;  // rendered: the streaming is over
    const answer = element.textContent;
    const answers = window.__qnx.answers;
    if (answers[answers.length - 1] !== answer) answers.push(answer);
  };
  new MutationObserver(record).observe(messages, {childList: true, subtree: true, characterData: true});
});
"""


@pytest.fixture(scope="module")
def page(browser, live_server_url):
    """A browser tab of a person who has just signed up with email and password."""
    # Dialogs are left to the tests: deleting a chat asks to confirm.
    tab = open_tab(browser, live_server_url, init_script=WATCH_SCRIPT, step_ms=STEP_MS, dismiss_dialogs=False,
                   viewport={"width": 1280, "height": 800})
    sign_up(tab.page, EMAIL, PASSWORD)
    yield tab.page
    tab.close()


def wait_until_answer_longer_than(turn, length: int, timeout=ANSWER_MS) -> str:
    # By id, not by element: the answer element is replaced when a follow starts and when the answer is rendered.
    wait_for(
        turn.page,
        "([id, n]) => { const el = document.getElementById(id); return !!el && el.textContent.length > n; }",
        [turn.locator(".answer").get_attribute("id"), length],
        timeout_ms=timeout,
    )
    return turn.locator(".answer").text_content()


def wait_until_finished(turn):
    wait_until_rendered(turn, ANSWER_MS)  # the streamed text, replaced by its rendering


def markdown_source(turn) -> str:
    """The answer as the model wrote it (what its Copy button copies), not as rendered."""
    return turn.locator(".answer-foot template").evaluate("template => template.content.textContent")


def test_sign_up_lands_on_a_new_chat_with_the_local_model_selected(page, live_server_url):
    from playwright.sync_api import expect

    models = httpx.get(f"{live_server_url}/api/v1/chat/models", timeout=30).json()["models"]
    local = [m["name"] for m in models if m["provider"] == "local"]
    cloud = [m["name"] for m in models if m["provider"] != "local"]
    assert len(local) == 1 and cloud

    expect(page.locator("#model")).to_have_value(local[0])
    options = page.locator("#model option").evaluate_all(
        "options => options.map(o => ({value: o.value, disabled: o.disabled, text: o.textContent.trim()}))"
    )
    by_name = {option["value"]: option for option in options}
    assert not by_name[local[0]]["disabled"]
    for name in cloud:
        assert by_name[name]["disabled"], by_name[name]
        assert "unavailable" in by_name[name]["text"]
    expect(page.locator(".sidebar-foot")).to_contain_text(EMAIL)
    expect(page.locator("#chat-list")).to_contain_text("No chats yet.")


def test_a_question_streams_into_the_page_and_becomes_a_titled_chat(page, live_server_url):
    from playwright.sync_api import expect

    new_chat(page)
    question = "What is the capital of France?"
    turn = ask(page, question)
    wait_until_finished(turn)

    # Status lines were shown while the answer was made, then cleared.
    statuses = page.evaluate("window.__qnx.statuses")
    assert "Generating…" in statuses, statuses
    expect(turn.locator(".status")).to_have_text("")

    # The answer streamed in: the page showed it growing, each step extending the last, before it was complete
    # and rendered.
    answer = turn.locator(".answer").text_content()
    assert answer.strip()
    shown = [text for text in page.evaluate("window.__qnx.answers") if text]
    assert len(shown) >= 2, shown
    assert all(later.startswith(earlier) and len(later) > len(earlier) for earlier, later in pairwise(shown))
    assert markdown_source(turn).startswith(shown[-1])

    # The address bar moved to the new chat, which the sidebar lists under the prompt as its title.
    expect(page).to_have_url(CHAT_URL)
    chat_path = page.url.removeprefix(live_server_url)
    active = page.locator("#chat-list a.chat-link.active")
    expect(active).to_have_text(question)
    expect(active).to_have_attribute("href", chat_path)
    # …and the chat's actions are there without a reload.
    expect(page.locator("#chat-header input[name=title]")).to_have_value(question)

    # A follow-up continues the same chat.
    follow_up = ask(page, "And what is the capital of Germany?")
    wait_until_finished(follow_up)
    follow_up_answer = follow_up.locator(".answer").text_content()
    assert follow_up_answer.strip()
    assert page.url.endswith(chat_path)
    expect(page.locator("#chat-list a.chat-link")).to_have_count(1)
    page.screenshot(path=SCREENSHOT)

    # Both turns were saved exactly as shown.
    page.reload()
    expect(page.locator("article.turn .answer")).to_have_text([answer, follow_up_answer])


def test_reloading_during_an_answer_shows_it_complete_after_the_reload(page):
    from playwright.sync_api import expect

    new_chat(page)
    turn = ask(page, "Write a long story about a dragon")
    before_reload = wait_until_answer_longer_than(turn, 20)
    expect(page).to_have_url(CHAT_URL)

    response = page.reload()
    assert "Reconnecting…" in response.text(), "the answer finished before the reload: nothing was resumed"
    turn = page.locator("article.turn").last
    wait_for_socket(page)
    # The saved part is replayed and the rest keeps streaming in after the reload, until the answer is done.
    wait_until_answer_longer_than(turn, len(before_reload))
    wait_until_finished(turn)
    expect(turn.locator(".status")).to_have_text("")
    final = turn.locator(".answer").text_content()
    source = markdown_source(turn)
    assert source.startswith(before_reload) and len(source) > len(before_reload)

    page.reload()
    expect(page.locator("article.turn .answer").last).to_have_text(final)
    expect(page.locator("article.turn").last.locator("button.stop")).to_have_count(0)


def test_stop_ends_the_answer_and_keeps_what_was_written(page):
    from playwright.sync_api import expect

    new_chat(page)
    turn = ask(page, "Write a long story about a brave knight")
    wait_until_answer_longer_than(turn, 20)
    turn.locator("button.stop").click()

    expect(turn.locator(".status")).to_have_text("Stopped.")
    expect(turn.locator("button.stop")).to_have_count(0)
    partial = turn.locator(".answer").text_content()
    assert len(partial) > 20

    page.reload()
    saved = page.locator("article.turn").last
    expect(saved.locator(".answer")).to_have_text(partial)
    expect(saved.locator(".status")).to_have_text("Stopped.")


def test_share_bookmark_rename_delete_and_log_out(page, browser, live_server_url):
    from playwright.sync_api import expect

    new_chat(page)
    title = "What is the capital of Spain?"
    wait_until_finished(ask(page, title))
    answer = page.locator("article.turn .answer").last.text_content()
    header = page.locator("#chat-header")

    # Share, and open the public link in a fresh, logged-out browser.
    header.get_by_role("button", name="Share").click()
    expect(header.get_by_role("button", name="Stop sharing")).to_be_visible()
    public_path = header.get_by_role("link", name="Public link").get_attribute("href")
    stranger = browser.new_context(base_url=live_server_url)
    public = stranger.new_page()
    assert public.goto(public_path).status == 200
    expect(public.locator("h1")).to_have_text(title)
    expect(public.locator(".answer")).to_have_text(answer)
    public.goto("/chat/")
    expect(public).to_have_url(re.compile(r"/accounts/login/"))  # the stranger is not logged in

    # Bookmark: the sidebar marks it and the bookmarks page lists it.
    header.get_by_role("button", name="Bookmark").click()
    expect(header.get_by_role("button", name="Bookmarked")).to_be_visible()
    expect(page.locator("#chat-list a.chat-link.active .mark")).to_have_count(1)
    chat_path = page.url.removeprefix(live_server_url)
    page.goto("/chat/bookmarked/")
    expect(page.locator(".bookmarks a")).to_have_text([title])
    page.locator(".bookmarks a").click()
    expect(page).to_have_url(live_server_url + chat_path)

    # Rename: the header, the sidebar and the public page show the new title.
    new_title = "Spanish geography"
    page.locator("#chat-header input[name=title]").fill(new_title)
    page.locator("#chat-header").get_by_role("button", name="Rename").click()
    expect(page.locator("#chat-header input[name=title]")).to_have_value(new_title)
    expect(page.locator("#chat-list a.chat-link.active")).to_contain_text(new_title)
    public.goto(public_path)
    expect(public.locator("h1")).to_have_text(new_title)

    # Delete (after confirming): back on a new chat, the chat is gone, and so is its public page.
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#chat-header").get_by_role("button", name="Delete").click()
    expect(page).to_have_url(f"{live_server_url}/chat/")
    expect(page.locator("#chat-list")).not_to_contain_text(new_title)
    assert public.goto(public_path).status == 404
    stranger.close()

    # Log out: back on the login page, and the chats need a login again.
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/accounts/login/"))
    page.goto("/chat/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/chat/"))
