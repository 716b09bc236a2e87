"""A long chat in a real browser (headless Chromium via Playwright, under the site's real Content-Security-Policy,
against a real daphne): the page shows the newest turns, and scrolling up to the top of the conversation loads the
turns above them, a page at a time, while the turn the reader was looking at stays where it was on screen."""

import json

import pytest

from testsupport.browser import wait_for, wait_for_socket

pytestmark = pytest.mark.browser

EMAIL = "history-browser@example.com"
PASSWORD = "a long history-test password"
TURNS = 45  # the page shows 20 (chat.services.HISTORY_PAGE_SIZE): two more pages above them

_SEED = f"""
import json
from accounts.models import User
from chat import branches
from chat.models import Chat, ChatQuery
user = User.objects.get(email={EMAIL!r})
chat = Chat.objects.create(owner=user, title="A long chat", model="gpt-3.5-turbo")
previous = None
for n in range({TURNS}):
    previous = ChatQuery.objects.create(chat=chat, parent=previous, prompt=f"Question {{n}}", model=chat.model,
                                        response=f"Answer **{{n}}**.", status="complete")
branches.refresh_shown_leaf(chat.pk)
print("QNX_CHAT=" + json.dumps(str(chat.pk)))
"""


def seeded_chat(server) -> str:
    out = server.manage("shell", "-c", _SEED)
    return json.loads(next(line for line in out.splitlines() if line.startswith("QNX_CHAT="))[len("QNX_CHAT=") :])


# Whether the element with this id is (partly) within the conversation's visible area.
IN_VIEW = """(id) => {
    const box = document.getElementById(id).getBoundingClientRect();
    const view = document.getElementById("messages").getBoundingClientRect();
    return box.bottom > view.top && box.top < view.bottom;
}"""


def test_a_long_chat_shows_its_newest_turns_and_loads_older_ones_on_scrolling_up(tab, emulator_server):
    from playwright.sync_api import expect

    chat_id = seeded_chat(emulator_server)
    page = tab.page
    page.goto(f"/chat/{chat_id}/")
    wait_for_socket(page)
    turns = page.locator("#messages article.turn")
    expect(turns).to_have_count(20)
    expect(turns.first).to_contain_text("Question 25")
    expect(turns.last.locator(".answer strong")).to_have_text("44")  # rendered, and scrolled to the end
    expect(turns.last).to_be_in_viewport()

    for shown, oldest in ((40, "Question 5"), (TURNS, "Question 0")):
        first = page.evaluate("document.querySelector('#messages article.turn').id")
        page.evaluate("document.getElementById('messages').scrollTop = 0")
        expect(turns).to_have_count(shown)
        expect(turns.first).to_contain_text(oldest)
        # The turn that was at the top is still in view: the older turns grew above it, not over it.
        wait_for(page, IN_VIEW, first)
    expect(page.locator(".turns-older")).to_have_count(0)  # the first turn is shown: nothing more to load
    assert page.input_value("#parent-id") == page.evaluate(
        "[...document.querySelectorAll('#messages article.turn')].pop().id.replace('turn-', '')"
    )
