"""Request bodies are bounded before the server buffers them, on a real server (querynox/server.py under daphne).

Peak memory is read from /proc: writing 5 to /proc/PID/clear_refs resets the process's high-water mark (VmHWM) to
what it uses now, and VmHWM after the request is the most it used meanwhile. Before the server layer bounded
bodies, a 30 MB multipart POST to an unknown path, without credentials, raised the peak by about 300 MB."""

import json
import time
import uuid
from pathlib import Path

import httpx
import pytest

from testsupport.http import bearer

pytestmark = pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")

BIG = 30 * 1024 * 1024
# Growth allowed for a refused request: the connection, the 413 and the interpreter's own noise, not the body.
PEAK_GROWTH_LIMIT = 20 * 1024 * 1024
TIMEOUT = httpx.Timeout(120, connect=10)


def multipart(prompt: str, files: list[tuple[str, bytes]]) -> tuple[str, list[bytes]]:
    """A multipart/form-data body as parts (so it can be sent whole or chunked) and its content type."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\n{prompt}\r\n'.encode()]
    for name, data in files:
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        parts += [head.encode(), data, b"\r\n"]
    parts.append(f"--{boundary}--\r\n".encode())
    return f"multipart/form-data; boundary={boundary}", parts


def chunked(parts: list[bytes], size: int = 256 * 1024):
    """The parts as a generator of pieces: httpx sends a generator with Transfer-Encoding: chunked."""
    for part in parts:
        for start in range(0, len(part), size):
            yield part[start : start + size]


def peak_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


def reset_peak(pid: int) -> int:
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return peak_bytes(pid)


def wait_for_steady_memory(server, seconds: float = 90) -> None:
    """The local model loads in the background after start-up; measuring during that would measure the model."""
    deadline = time.monotonic() + seconds
    last = server.rss_bytes()
    while time.monotonic() < deadline:
        time.sleep(1)
        now = server.rss_bytes()
        if abs(now - last) < 2 * 1024 * 1024:
            return
        last = now
    raise AssertionError("the server's memory did not settle")


@pytest.fixture(scope="module")
def server(daphne_server):
    wait_for_steady_memory(daphne_server)
    return daphne_server


@pytest.fixture(scope="module")
def api_key(server):
    return server.create_user_with_key("body-limits@example.com", "a long body-limits password")


def measured_post(server, path: str, content, content_type: str, headers: dict | None = None):
    """POST once (a small warm-up first, so first-use imports are not counted), return (response, peak growth)."""
    httpx.post(server.url + path, content=b"x", headers={"Content-Type": "text/plain"}, timeout=TIMEOUT)
    pid = server.process.pid
    baseline = reset_peak(pid)
    response = httpx.post(
        server.url + path, content=content, headers={"Content-Type": content_type, **(headers or {})}, timeout=TIMEOUT
    )
    return response, peak_bytes(pid) - baseline


@pytest.mark.parametrize("path", ["/nonexistent", "/api/v1/chat", "/chat/attachments/"])
def test_a_30_mb_multipart_post_is_refused_before_it_is_buffered(server, path):
    content_type, parts = multipart("hello", [("big.txt", b"a" * BIG)])
    body = b"".join(parts)

    response, growth = measured_post(server, path, body, content_type)

    assert response.status_code == 413
    assert response.json()["code"] == "body_too_large"
    assert "30 MB" in response.json()["error"]
    assert growth < PEAK_GROWTH_LIMIT, f"peak grew by {growth / 2**20:.0f} MB"


def test_a_chunked_body_over_the_limit_is_cut_off_with_413(server, api_key):
    content_type, parts = multipart("hello", [("big.txt", b"a" * BIG)])

    response, growth = measured_post(server, "/api/v1/chat", chunked(parts), content_type, bearer(api_key))

    assert response.status_code == 413
    assert response.json()["code"] == "body_too_large"
    assert response.json()["error"].startswith("The request body is over ")
    assert growth < PEAK_GROWTH_LIMIT, f"peak grew by {growth / 2**20:.0f} MB"


def test_an_oversized_json_body_to_any_other_path_is_refused_at_its_smaller_limit(server, api_key):
    body = json.dumps({"shared": True, "padding": "x" * (2 * 1024 * 1024)}).encode()

    response = httpx.patch(
        f"{server.url}/api/v1/chat/{uuid.uuid4()}/share",
        content=body,
        headers={"Content-Type": "application/json", **bearer(api_key)},
        timeout=TIMEOUT,
    )

    assert response.status_code == 413
    assert response.json()["code"] == "body_too_large"


@pytest.mark.local_model
def test_a_chunked_upload_within_the_limits_reaches_the_turn_whole(server, api_key):
    text = b"The secret code word of this document is PELICAN.\n" * 2000  # ~100 kB, several chunks
    content_type, parts = multipart("What is the code word?", [("notes.txt", text)])

    with httpx.stream(
        "POST",
        f"{server.url}/api/v1/chat/stream",
        content=chunked(parts, size=16 * 1024),
        headers={"Content-Type": content_type, **bearer(api_key)},
        timeout=TIMEOUT,
    ) as response:
        assert response.status_code == 200, response.read()
        chat_id = query_id = None
        for line in response.iter_lines():  # bounded by the server ending the stream, and by TIMEOUT
            if line.startswith("data: {"):
                event = json.loads(line[len("data: ") :])
                chat_id = chat_id or event.get("chatId")
                query_id = query_id or event.get("queryId")
                if chat_id and query_id:
                    break
    httpx.post(f"{server.url}/api/v1/chat/queries/{query_id}/stop", headers=bearer(api_key), timeout=TIMEOUT)

    saved = httpx.get(f"{server.url}/api/v1/chat/{chat_id}", headers=bearer(api_key), timeout=TIMEOUT).json()
    assert [query["prompt"] for query in saved["queries"]] == ["What is the code word?"]
    assert [(document["name"], document["size"]) for document in saved["documents"]] == [("notes.txt", len(text))]
