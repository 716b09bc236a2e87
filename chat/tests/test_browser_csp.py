"""The pages work under the Content-Security-Policy in a real Chromium: no violation is reported (no inline script or
style, nothing from elsewhere), and htmx opens the chat socket (connect-src 'self' covers ws: to this origin)."""

import pytest

from testsupport.browser import log_in, open_tab, wait_for

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
    daphne_server.create_user(EMAIL, PASSWORD)
    tab = open_tab(browser, daphne_server.url, init_script=WATCH, step_ms=STEP_MS)
    page = tab.page
    console = []
    page.on("console", lambda message: console.append(message.text))
    page.console_messages_seen = console
    log_in(page, EMAIL, PASSWORD)
    yield page
    tab.close()


@pytest.mark.parametrize("path", ["/chat/", "/chat/bookmarked/", "/accounts/", "/pricing/"])
def test_pages_report_no_policy_violation(tab, path):
    response = tab.goto(path)
    assert "script-src 'self'" in response.headers["content-security-policy"]
    tab.wait_for_load_state("load")
    if path == "/chat/":
        wait_for(tab, "window.__csp.socketOpen", timeout_ms=STEP_MS)
    assert tab.evaluate("window.__csp.violations") == []
    assert [text for text in tab.console_messages_seen if "Content Security Policy" in text] == []
