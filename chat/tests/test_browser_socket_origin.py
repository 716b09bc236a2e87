"""Cross-origin WebSocket hijacking, as the audit ran it: a person logged in to QueryNox in Chromium visits a page
served from the same host on another port; that page's script opens the chat socket (the browser attaches the
session cookie, which is not port-scoped) and sends a turn. The server must refuse the handshake, and no chat may
appear in the person's account. The same script on QueryNox's own origin opens, so the refusal is the origin's."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from testsupport.browser import log_in, wait_for
from testsupport.http import HOST, bearer, free_port

pytestmark = pytest.mark.browser

EMAIL = "origin-victim@example.com"
PASSWORD = "a long origin-test password"
STEP_MS = 30_000

# Opens the chat socket and, once it is open, asks for a turn; records what happened for the test to read.
SOCKET_SCRIPT = """
window.__socket = {opened: false, closed: false, code: null, messages: []};
const ws = new WebSocket("%(ws_url)s/ws/chat/");
ws.onopen = () => {
  window.__socket.opened = true;
  if (%(send_turn)s) ws.send(JSON.stringify({prompt: "Say hello, from another origin"}));
};
ws.onmessage = (event) => window.__socket.messages.push(event.data);
ws.onclose = (event) => { window.__socket.closed = true; window.__socket.code = event.code; };
window.__closeSocket = () => ws.close();
"""


@pytest.fixture(scope="module")
def victim(daphne_server):
    """A QueryNox user (and an API key, to look into their account afterwards)."""
    return daphne_server.create_user_with_key(EMAIL, PASSWORD)


@pytest.fixture(scope="module")
def attacker_page_url(daphne_server):
    """http://127.0.0.1:<another free port>/ serving a page whose script opens QueryNox's socket and sends a turn."""
    html = f"<!doctype html><title>another origin</title><script>{SOCKET_SCRIPT}</script>" % {
        "ws_url": daphne_server.ws_url,
        "send_turn": "true",
    }
    body = html.encode()

    class Page(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer((HOST, free_port()), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://{HOST}:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def logged_in(browser, daphne_server, victim):
    # No base URL: the tab visits another origin too.
    context = browser.new_context()
    context.set_default_timeout(STEP_MS)
    tab = context.new_page()
    log_in(tab, EMAIL, PASSWORD, base_url=daphne_server.url)
    yield tab
    context.close()


def chats_of_victim(daphne_server, victim_key) -> list:
    response = httpx.get(f"{daphne_server.url}/api/v1/chat/user", headers=bearer(victim_key), timeout=30)
    assert response.status_code == 200
    return response.json()["chats"]


def test_a_page_on_another_port_cannot_use_the_session_socket(logged_in, attacker_page_url, daphne_server, victim):
    assert attacker_page_url != f"{daphne_server.url}/" and attacker_page_url.startswith("http://127.0.0.1:")

    logged_in.goto(attacker_page_url)
    # Refused: the socket closes. Hijacked: it opens and the turn's first events arrive.
    wait_for(logged_in, "window.__socket.closed || window.__socket.messages.length > 0", timeout_ms=STEP_MS)
    outcome = logged_in.evaluate("window.__socket")

    assert outcome["opened"] is False
    assert outcome["messages"] == []
    assert outcome["code"] == 1006  # the handshake was refused (403): the browser never had a socket
    assert chats_of_victim(daphne_server, victim) == []


def test_the_same_script_on_the_sites_own_origin_opens(logged_in, daphne_server):
    # The control: the victim's session does open the socket from QueryNox's own origin, so the refusal above
    # is the origin's doing and not a broken script or server.
    logged_in.goto(f"{daphne_server.url}/accounts/")
    # As a function: Playwright calls an expression's value when it is a function (the script's last statement is).
    logged_in.evaluate("() => {" + SOCKET_SCRIPT % {"ws_url": daphne_server.ws_url, "send_turn": "false"} + "}")
    wait_for(logged_in, "window.__socket.opened", timeout_ms=STEP_MS)
    logged_in.evaluate("window.__closeSocket()")
    wait_for(logged_in, "window.__socket.closed", timeout_ms=STEP_MS)
    assert logged_in.evaluate("window.__socket.messages") == []  # logged in: no `unauthenticated` error
