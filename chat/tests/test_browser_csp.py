"""The pages work under the Content-Security-Policy in a real Chromium: no violation is reported (no inline script or
style, nothing from elsewhere), and htmx opens the chat socket (connect-src 'self' covers ws: to this origin)."""

import pytest

pytestmark = pytest.mark.browser

EMAIL = "csp-user@example.com"
PASSWORD = "a long csp-test password"
STEP_MS = 30_000

# Installed before any page script: every policy violation the page reports, and whether htmx's socket opened.
WATCH = """
window.__csp = {violations: [], socketOpen: false};
document.addEventListener("securitypolicyviolation", (event) => {
  const where = `${event.sourceFile}:${event.lineNumber}`;
  window.__csp.violations.push(`${event.violatedDirective} ${event.blockedURI} ${where}`);
});
document.addEventListener("htmx:wsOpen", () => { window.__csp.socketOpen = true; });
"""


@pytest.fixture(scope="module")
def tab(browser, daphne_server):
    from playwright.sync_api import expect

    daphne_server.create_user(EMAIL, PASSWORD)
    context = browser.new_context(base_url=daphne_server.url)
    context.add_init_script(WATCH)
    context.set_default_timeout(STEP_MS)
    page = context.new_page()
    console = []
    page.on("console", lambda message: console.append(message.text))
    page.console_messages_seen = console
    page.goto("/accounts/login/")
    page.fill("input[name=username]", EMAIL)
    page.fill("input[name=password]", PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{daphne_server.url}/chat/")
    yield page
    context.close()


@pytest.mark.parametrize("path", ["/chat/", "/chat/bookmarked/", "/accounts/", "/pricing/"])
def test_pages_report_no_policy_violation(tab, path):
    response = tab.goto(path)
    assert "script-src 'self'" in response.headers["content-security-policy"]
    tab.wait_for_load_state("load")
    if path == "/chat/":
        tab.wait_for_function("window.__csp.socketOpen", timeout=STEP_MS)
    assert tab.evaluate("window.__csp.violations") == []
    assert [text for text in tab.console_messages_seen if "Content Security Policy" in text] == []
