"""One JSON line per request (route pattern, status, durations, bytes) and never a secret or a message body."""

import io
import json
import logging

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.test import AsyncClient, Client
from pythonjsonlogger.json import JsonFormatter

from accounts.models import ApiKey, User
from testsupport.http import bearer, parse_sse, read_streaming, stream_turn

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "pw-Zebra-Quartz-8812"
PROMPT = "PROMPT-marmalade-telescope-4417"
ANSWER = ["ANSWER", "-vermilion", "-lighthouse"]
QUERY_SECRET = "qs-secret-5582"


@pytest.fixture
def log_output():
    """Every log record of the test, rendered as the production formatter renders it (extras included)."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    config = settings.LOGGING["formatters"]["json"]
    handler.setFormatter(JsonFormatter(config["fmt"], rename_fields=config["rename_fields"]))
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)  # debug too: nothing may leak at any level
    yield buffer
    root.removeHandler(handler)
    root.setLevel(previous)


def request_lines(text: str) -> list[dict]:
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("logger") == "querynox.request"]


async def test_a_streamed_turn_logs_its_route_and_durations_and_no_key_or_text(scripted, log_output, capfd):
    user = await sync_to_async(User.objects.create_user)("logger@example.com", PASSWORD)
    _, key = await sync_to_async(ApiKey.generate)(user, "logs")
    scripted.tokens = ANSWER
    scripted.delay = 0.05

    events = await stream_turn(AsyncClient(), key, {"prompt": PROMPT})
    query_id = events[1]["queryId"]
    follow_url = f"/api/v1/chat/queries/{query_id}/events?token={QUERY_SECRET}"
    resumed = await AsyncClient().get(follow_url, headers=bearer(key))
    parse_sse(await read_streaming(resumed))

    assert "".join(e.get("content", "") for e in events) == "".join(ANSWER)
    everything = log_output.getvalue() + "".join(capfd.readouterr())
    for secret in (key, PASSWORD, PROMPT, QUERY_SECRET, *ANSWER[1:], "".join(ANSWER)):
        assert secret not in everything
    lines = request_lines(log_output.getvalue())
    turn, follow = lines[-2], lines[-1]
    assert turn["method"] == "POST" and turn["route"] == "api/v1/chat/stream" and turn["status"] == 200
    # Streamed: the last byte comes after the three delayed tokens, well after the first one.
    assert turn["duration_ms"] >= 120
    assert 0 <= turn["ttfb_ms"] < turn["duration_ms"]
    assert turn["bytes"] > 0 and "aborted" not in turn
    assert follow["route"] == "api/v1/chat/queries/<query_id>/events" and follow["status"] == 200
    assert query_id not in json.dumps(follow)


def test_a_login_logs_the_route_and_status_but_never_the_password_or_cookies(db, log_output, capfd):
    User.objects.create_user("login@example.com", PASSWORD)
    client = Client()
    response = client.post("/accounts/login/", {"username": "login@example.com", "password": PASSWORD})
    assert response.status_code == 302
    client.post("/accounts/login/", {"username": "login@example.com", "password": PASSWORD + "-wrong"})
    session_cookie = client.cookies["sessionid"].value

    everything = log_output.getvalue() + "".join(capfd.readouterr())
    for secret in (PASSWORD, session_cookie):
        assert secret not in everything
    lines = request_lines(log_output.getvalue())
    assert [(line["method"], line["route"], line["status"]) for line in lines[-2:]] == [
        ("POST", "accounts/login/", 302),
        ("POST", "accounts/login/", 302),  # already logged in: redirect_authenticated_user
    ]
    for line in lines[-2:]:
        assert set(line) >= {"method", "route", "status", "ttfb_ms", "duration_ms", "bytes"}
        assert line["ttfb_ms"] <= line["duration_ms"]


def test_an_unmatched_path_logs_no_route(db, log_output):
    Client().get(f"/no/such/path/?key={QUERY_SECRET}")
    assert QUERY_SECRET not in log_output.getvalue()  # django.request's warning carried the query string
    line = request_lines(log_output.getvalue())[-1]
    assert line["route"] is None and line["status"] == 404
