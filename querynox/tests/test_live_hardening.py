"""The hardening that only a real server shows (daphne started by querynox/server.py, as deployed):

- the log: daphne's access log used to print raw paths and query strings (`GET /share/<id>/?secret=…`); now the only
  line describing a request is the JSON `querynox.request` one with the route pattern, and Django's own 4xx warnings
  carry the route instead of the path;
- socket messages between our 1 MB limit and the server's own get the consumer's `message_too_large` error and a
  clean close (4413), where daphne's 1 MiB default used to cut the socket with no word from us."""

import json
import time
import uuid

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from testsupport.http import bearer


def request_lines(log: str) -> list[dict]:
    lines = []
    for line in log.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("logger") == "querynox.request":
                lines.append(record)
    return lines


def wait_for_log(daphne_server, needle_count: int, since: int) -> str:
    """The log written after offset `since`, once it holds `needle_count` request lines (or after 10 s)."""
    deadline = time.monotonic() + 10
    while True:
        log = daphne_server.log_path.read_text(errors="replace")[since:]
        if len(request_lines(log)) >= needle_count or time.monotonic() > deadline:
            return log
        time.sleep(0.1)


def test_the_log_holds_routes_never_raw_paths_or_query_strings(daphne_server):
    share_id, active_id, unknown_path_id = (uuid.uuid4() for _ in range(3))
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    since = len(daphne_server.log_path.read_text(errors="replace"))
    with httpx.Client(base_url=daphne_server.url, timeout=30) as client:
        assert client.get(f"/share/{share_id}/", params={"secret": secret}).status_code == 404
        assert client.get("/chat/", params={"active": str(active_id)}).status_code == 302  # to the log-in page
        assert client.get(f"/no-such-page-{unknown_path_id}/", params={"callback": secret}).status_code == 404
        assert client.post("/accounts/login/", params={"next": secret}, data={"username": "x"}).status_code == 403

    log = wait_for_log(daphne_server, 4, since)

    for raw in (str(share_id), str(active_id), str(unknown_path_id), secret, share_id.hex):
        assert raw not in log, f"{raw} is in the server's log:\n{log}"
    assert '"GET /' not in log and "GET /share" not in log  # no access-log lines at all
    routes = [(line["method"], line["route"], line["status"]) for line in request_lines(log)]
    assert ("GET", "share/<uuid:chat_id>/", 404) in routes
    assert ("GET", "chat/", 302) in routes
    assert ("GET", None, 404) in routes
    assert ("POST", "accounts/login/", 403) in routes
    # Django's own warnings are still there, with the route in place of the path.
    warnings = [json.loads(line) for line in log.splitlines() if line.startswith("{") and '"django.' in line]
    messages = {record["message"] for record in warnings}
    assert "Not Found: share/<uuid:chat_id>/" in messages
    assert "Not Found: (no route)" in messages
    assert any(message.startswith("Forbidden (CSRF") and message.endswith(": accounts/login/") for message in messages)


@pytest.mark.parametrize("size", [1_500_000, 3_000_000])
def test_a_socket_message_over_1_mb_gets_our_error_and_a_clean_close(daphne_server, size):
    key = daphne_server.create_user_with_key(f"big-frames-{size}@example.com", "a long big-frame password")
    url = daphne_server.ws_url + "/ws/chat/"
    with connect(url, additional_headers=bearer(key), open_timeout=30, max_size=None) as socket:
        socket.send(json.dumps({"prompt": "x" * size}))
        event = json.loads(socket.recv(timeout=30))
        assert (event["type"], event["code"]) == ("error", "message_too_large")
        with pytest.raises(ConnectionClosed) as closed:
            socket.recv(timeout=30)
    assert closed.value.rcvd.code == 4413  # ours (chat/consumers.py CLOSE_MESSAGE_TOO_BIG), not a server error
