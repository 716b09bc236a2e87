"""Files in the web UI as a person uses them: headless Chromium against a real daphne server (the real local model,
the real local embedder). Dropping and picking files shows chips, a refused file says why, and the answer shows
its numbered source, which opens the stored file."""

import re

import pytest

from testsupport.browser import log_in, open_tab, wait_for_socket

pytestmark = [pytest.mark.browser, pytest.mark.local_model]

EMAIL = "uploads-browser@example.com"
PASSWORD = "a long uploads-test password"
STEP_MS = 30_000
ANSWER_MS = 180_000
NOTES = "Garden notes.\n\nThe greenhouse key hangs on the blue hook behind the shed door.\n"

WATCH_SCRIPT = """
window.__qnx = {socketOpen: false, statuses: []};
document.addEventListener("htmx:wsOpen", () => { window.__qnx.socketOpen = true; });
document.addEventListener("DOMContentLoaded", () => {
  const messages = document.getElementById("messages");
  if (!messages) return;
  new MutationObserver(() => {
    const turns = messages.querySelectorAll("article.turn");
    const status = turns.length ? turns[turns.length - 1].querySelector(".status") : null;
    const text = status ? status.textContent.trim() : "";
    const seen = window.__qnx.statuses;
    if (text && seen[seen.length - 1] !== text) seen.push(text);
  }).observe(messages, {childList: true, subtree: true, characterData: true});
});
"""

DROP_SCRIPT = """([name, text]) => {
  const transfer = new DataTransfer();
  transfer.items.add(new File([text], name, {type: "text/plain"}));
  const target = document.getElementById("prompt");
  for (const type of ["dragenter", "dragover", "drop"]) {
    target.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true, dataTransfer: transfer}));
  }
}"""


@pytest.fixture
def page(browser, daphne_server):
    """A logged-in tab on a new chat, its socket open."""
    daphne_server.create_user(EMAIL, PASSWORD)
    tab = open_tab(browser, daphne_server.url, init_script=WATCH_SCRIPT, step_ms=STEP_MS,
                   viewport={"width": 1280, "height": 800})
    log_in(tab.page, EMAIL, PASSWORD)
    wait_for_socket(tab.page)
    yield tab.page
    tab.close()


def test_drop_and_pick_files_then_the_answer_cites_the_file(page, daphne_server):
    from playwright.sync_api import expect

    chips = page.locator("#attachments .chip")

    # Dropped on the conversation: a chip with the file's name, type and size.
    page.evaluate(DROP_SCRIPT, ["notes.txt", NOTES])
    expect(chips).to_have_count(1)
    expect(chips.first).to_contain_text("notes.txt")
    expect(chips.first).to_contain_text("text")
    expect(chips.first).to_contain_text("bytes")

    # Picked as well: the free plan takes one file per message, so this one is refused, saying why.
    page.set_input_files("#file-picker", files=[{"name": "extra.txt", "mimeType": "text/plain", "buffer": b"More."}])
    expect(page.locator("#attachments .attach-error")).to_contain_text("Your plan allows 1 file per message")
    expect(chips).to_have_count(1)

    # Removed, then picked: the chip follows.
    chips.first.get_by_role("button", name="Remove notes.txt").click()
    expect(chips).to_have_count(0)
    page.set_input_files(
        "#file-picker", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": NOTES.encode()}]
    )
    expect(chips).to_have_count(1)
    expect(chips.first).to_contain_text("notes.txt")

    page.fill("#prompt", "Where does the greenhouse key hang?")
    page.press("#prompt", "Enter")
    turn = page.locator("article.turn").last
    expect(turn.locator(".turn-files")).to_contain_text("notes.txt")
    expect(chips).to_have_count(0)  # the message took the file

    source = turn.locator("ol.sources li").first
    expect(source).to_contain_text("[1] notes.txt, page 1", timeout=ANSWER_MS)
    expect(source).to_contain_text("greenhouse key")
    link = source.get_by_role("link", name="notes.txt, page 1")
    href = link.get_attribute("href")
    assert re.fullmatch(r"/chat/[0-9a-f-]{36}/documents/\d+/file#page=1", href), href
    assert "Reading notes.txt…" in page.evaluate("window.__qnx.statuses")

    # The citation opens the stored file for its owner.
    stored = page.request.get(href.split("#")[0])
    assert stored.status == 200 and stored.text() == NOTES

    # Once the answer is finished, the chat lists its document, and a reload shows the same sources.
    expect(turn.locator("button.stop")).to_have_count(0, timeout=ANSWER_MS)
    expect(page.locator("#documents")).to_contain_text("notes.txt")
    expect(page.locator("#documents")).to_contain_text("1 page")
    page.reload()
    expect(page.locator("article.turn").last.locator("ol.sources li").first).to_contain_text("[1] notes.txt, page 1")
