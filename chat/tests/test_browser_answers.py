"""The conversation view in a real browser (headless Chromium via Playwright) against a real daphne server whose
only provider is the provider emulator, so each answer is exactly the Markdown a test asks for, streamed word by
word: rendering (code with highlighting and a working copy button, a table, a list, KaTeX math), model output that
tries to run script (inert on the chat page, in the streamed fragments and on the public page), the keyboard, the
elapsed-time counter, themes and a phone-width layout. Screenshots of the main pages go to screenshots/."""

import re

import pytest

from testsupport.browser import (
    EMULATOR_MODEL,
    answer_growth,
    ask,
    new_chat,
    open_tab,
    screenshot,
    wait_until_finished,
)

pytestmark = pytest.mark.browser

EMAIL = "markdown-browser@example.com"
PASSWORD = "a long markdown-test password"
MODEL = EMULATOR_MODEL

CODE = "def area(r):\n    return 3.14159 * r ** 2  # <not a tag>"
MARKDOWN_REPLY = (
    "## Circle area\n\n"
    "The area is $A = \\pi r^2$, and on its own line:\n\n"
    "$$\n\\int_0^r 2 \\pi t \\, dt = \\pi r^2\n$$\n\n"
    "- **fast** to compute\n"
    "- exact for *circles*\n\n"
    "| r | area |\n|---|-----:|\n| 1 | 3.14 |\n| 2 | 12.57 |\n\n"
    f"```python\n{CODE}\n```\n\n"
    "Done."
)
XSS_REPLY = (
    "Payloads: <script>alert('script')</script> and <img src=x onerror=alert('img')> "
    "<img src=https://evil.example/pixel.png> "
    "[click](javascript:alert('link')) [CLICK](JaVaScRiPt:alert('mixed')) "
    "[data](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==) "
    "&lt;b onmouseover=alert('entity')&gt;hover&lt;/b&gt; "
    "![pixel](https://evil.example/markdown-image.png) $\\href{javascript:alert('tex')}{tex}$"
)


# --- rendering -------------------------------------------------------------------------------------------------


def test_an_answer_streams_as_text_then_renders_as_markdown(tab, provider_emulator):
    from playwright.sync_api import expect

    page = tab.page
    provider_emulator.configure(reply=MARKDOWN_REPLY, tokens_per_second=25)
    new_chat(page)
    page.fill("#prompt", "What is the area of a circle?")
    page.press("#prompt", "Enter")
    expect(page.locator("article.turn")).to_have_count(1)
    turn = page.locator("article.turn").last

    # While it streams, its text grows (raw Markdown, as text) …
    grown = answer_growth(page, turn)
    assert len(grown) >= 3, grown
    assert all(later.startswith(earlier) for earlier, later in zip(grown, grown[1:], strict=False))
    assert any("## Circle" in text for text in grown), grown
    wait_until_finished(turn)

    # … then the server's rendering replaces it: heading, list, table, highlighted code, math typeset by KaTeX.
    answer = turn.locator(".answer .markdown")
    expect(answer.locator("h2")).to_have_text("Circle area")
    expect(answer.locator("li")).to_have_text(["fast to compute", "exact for circles"])
    expect(answer.locator("li strong")).to_have_text("fast")
    expect(answer.locator("table td")).to_have_text(["1", "3.14", "2", "12.57"])
    expect(answer.locator("table td").nth(1)).to_have_css("text-align", "right")
    code = answer.locator(".code-block pre code.language-python")
    expect(code).to_have_text(CODE)
    keyword = code.locator("span.k").first
    expect(keyword).to_have_text("def")
    assert keyword.evaluate("el => getComputedStyle(el).color") != code.evaluate("el => getComputedStyle(el).color")
    expect(answer.locator(".math-inline .katex")).to_have_count(1)
    expect(answer.locator(".math-display .katex-display")).to_have_count(1)
    assert "π" in answer.locator(".math-inline .katex-mathml").text_content()
    expect(answer).not_to_contain_text("$$")

    # The code block's copy button copies exactly the code.
    answer.locator("button.copy-code").click()
    expect(answer.locator("button.copy-code")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == CODE

    # Under the answer: copy the Markdown source, the model, its tokens.
    foot = turn.locator(".answer-foot")
    expect(foot.locator(".answer-model")).to_have_text(MODEL)
    expect(foot.locator(".answer-usage")).to_have_text(re.compile(r"^\d+ in · \d+ out$"))
    foot.locator("button.copy-answer").click()
    assert page.evaluate("navigator.clipboard.readText()") == MARKDOWN_REPLY

    # Reloaded, the stored answer renders the same way.
    page.reload()
    stored = page.locator("article.turn .answer .markdown")
    expect(stored.locator("h2")).to_have_text("Circle area")
    expect(stored.locator(".math-inline .katex")).to_have_count(1)
    expect(stored.locator("code.language-python span.k").first).to_have_text("def")
    screenshot(page, "chat-light")


def test_model_output_cannot_run_script_anywhere(provider_emulator, browser, emulator_server, storage_state):
    """With the Content-Security-Policy switched off in the browser, so that the sanitiser alone is tested: the
    policy would block inline handlers and foreign images by itself, hiding a sanitiser that let them through."""
    from playwright.sync_api import expect

    tab = open_tab(browser, emulator_server.url, storage_state, bypass_csp=True)
    page = tab.page
    provider_emulator.configure(reply=XSS_REPLY, tokens_per_second=40)
    new_chat(page)
    turn = ask(page, "Show me some payloads")
    wait_until_finished(turn)  # every fragment streamed in, then the rendered answer

    answer = turn.locator(".answer")
    for visible in ("<script>alert('script')</script>", "<img src=x onerror=alert('img')>",
                    "[click](javascript:alert('link'))", "[CLICK](JaVaScRiPt:alert('mixed'))",
                    "<b onmouseover=alert('entity')>hover</b>"):
        expect(answer).to_contain_text(visible)
    expect(answer.locator("script, img, iframe")).to_have_count(0)
    hrefs = answer.locator("a").evaluate_all("links => links.map(a => a.getAttribute('href'))")
    assert all(href.startswith("https://") for href in hrefs), hrefs
    answer.hover()
    page.wait_for_timeout(300)

    def assert_inert(where, watched):
        assert watched.dialogs == [], f"{where}: a dialog opened: {watched.dialogs}"
        fetched = [url for url in watched.requests if "evil.example" in url or re.search(r"/x$", url)]
        assert fetched == [], f"{where}: the payload made the browser fetch {fetched}"

    assert_inert("the streamed page", tab)

    page.reload()
    expect(page.locator("article.turn .answer").last).to_contain_text("<script>alert('script')</script>")
    page.wait_for_timeout(300)
    assert_inert("the reloaded page", tab)

    # The public page, opened logged out.
    page.locator("#chat-header").get_by_role("button", name="Share").click()
    public_path = page.locator("#public-link").get_attribute("href")
    stranger = open_tab(browser, emulator_server.url, bypass_csp=True)
    stranger.page.goto(public_path)
    expect(stranger.page.locator(".answer")).to_contain_text("<img src=x onerror=alert('img')>")
    stranger.page.locator(".answer").hover()
    stranger.page.wait_for_timeout(300)
    assert_inert("the public page", stranger)
    screenshot(stranger.page, "public")
    stranger.close()
    tab.close()


# --- keyboard and status ---------------------------------------------------------------------------------------


def test_the_keyboard_sends_adds_lines_stops_and_edits(tab, provider_emulator):
    from playwright.sync_api import expect

    page = tab.page
    provider_emulator.configure(reply=" ".join(f"word{n}" for n in range(400)), tokens_per_second=8)
    new_chat(page)

    page.focus("#prompt")
    page.keyboard.type("first line")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("second line")
    expect(page.locator("#prompt")).to_have_value("first line\nsecond line")
    expect(page.locator("article.turn")).to_have_count(0)
    page.keyboard.press("Enter")
    turn = page.locator("article.turn").last
    expect(turn.locator(".prompt")).to_have_text("first line\nsecond line")
    expect(turn.locator(".answer")).to_contain_text("word3")

    # A long wait shows how long it has been, next to the status line.
    expect(turn.locator(".elapsed")).to_be_visible(timeout=6_000)
    expect(turn.locator(".elapsed")).to_have_text(re.compile(r"^\d+ s$"))

    page.keyboard.press("Escape")
    expect(turn.locator(".status")).to_have_text("Stopped.")
    expect(turn.locator(".elapsed")).to_be_hidden()
    expect(turn.locator(".answer > .markdown")).to_have_count(1)
    assert "word399" not in turn.locator(".answer").text_content()

    # Up in the empty composer opens the last prompt's editor: the stopped turn got its edit button live.
    expect(turn.locator(".edit-prompt")).to_have_count(1)
    page.focus("#prompt")
    expect(page.locator("#prompt")).to_have_value("")
    page.keyboard.press("ArrowUp")
    expect(turn.locator(".prompt-editor textarea")).to_have_value("first line\nsecond line")


# --- themes and layout -----------------------------------------------------------------------------------------


def background(page) -> str:
    return page.evaluate("getComputedStyle(document.body).backgroundColor")


def test_the_theme_follows_the_system_and_the_toggle_is_remembered(tab, browser, emulator_server, storage_state):
    from playwright.sync_api import expect

    page = tab.page
    page.goto("/chat/")
    html = page.locator("html")
    expect(html).to_have_attribute("data-theme", "light")
    light = background(page)
    toggle = page.locator("#sidebar [data-theme-toggle]")
    expect(toggle).to_have_attribute("aria-pressed", "false")

    toggle.click()
    expect(html).to_have_attribute("data-theme", "dark")
    expect(toggle).to_have_attribute("aria-pressed", "true")
    dark = background(page)
    assert dark != light
    page.reload()
    expect(html).to_have_attribute("data-theme", "dark")  # remembered, and set before the first paint
    assert background(page) == dark
    chats = page.locator("#chat-list a.chat-link")
    if chats.count():
        chats.first.click()
        page.wait_for_load_state()
    screenshot(page, "chat-dark")

    for path, name in (("/accounts/", "account"), ("/pricing/", "pricing")):
        page.goto(path)
        expect(html).to_have_attribute("data-theme", "dark")
        screenshot(page, f"{name}-dark")
    page.locator("[data-theme-toggle]").click()
    for path, name in (("/accounts/", "account"), ("/pricing/", "pricing")):
        page.goto(path)
        expect(html).to_have_attribute("data-theme", "light")
        screenshot(page, name)

    # A system that prefers dark gets dark with no choice stored.
    context = browser.new_context(base_url=emulator_server.url, storage_state=storage_state, color_scheme="dark")
    fresh = context.new_page()
    fresh.goto("/chat/")
    expect(fresh.locator("html")).to_have_attribute("data-theme", "dark")
    context.close()


def test_at_phone_width_the_sidebar_collapses_and_the_composer_fits(browser, emulator_server, storage_state):
    from playwright.sync_api import expect

    watched = open_tab(browser, emulator_server.url, storage_state, viewport={"width": 390, "height": 844})
    page = watched.page
    page.goto("/chat/")

    sidebar = page.locator("#sidebar")
    toggle = page.get_by_role("button", name="Chats")
    expect(toggle).to_be_visible()
    expect(toggle).to_have_attribute("aria-expanded", "false")
    expect(sidebar).to_be_hidden()
    composer = page.locator("#composer").bounding_box()
    prompt = page.locator("#prompt").bounding_box()
    assert composer["width"] >= 300 and prompt["width"] >= 250, (composer, prompt)
    assert composer["x"] >= 0 and composer["x"] + composer["width"] <= 390
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing sticks out sideways
    screenshot(page, "phone")

    # Keyboard only: the toggle opens the sidebar, focus moves into it, Escape closes it again.
    toggle.focus()
    page.keyboard.press("Enter")
    expect(toggle).to_have_attribute("aria-expanded", "true")
    expect(sidebar).to_be_visible()
    assert page.evaluate("document.activeElement.closest('#sidebar') !== null")
    page.wait_for_timeout(400)  # the slide-in, for the picture
    screenshot(page, "phone-sidebar")
    page.keyboard.press("Escape")
    expect(toggle).to_have_attribute("aria-expanded", "false")
    expect(sidebar).to_be_hidden()
    assert page.evaluate("document.activeElement.id") == "sidebar-toggle"
    watched.close()


def test_focus_is_visible_on_the_controls(tab):
    page = tab.page
    page.goto("/chat/")
    page.focus("#prompt")
    page.keyboard.press("Shift+Tab")  # keyboard focus: :focus-visible applies
    for _ in range(40):
        if page.evaluate("document.activeElement.id") == "send":
            break
        page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "send"
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"
