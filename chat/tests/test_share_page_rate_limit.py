"""The public share page /share/<id>/ is throttled like the public API that serves the same data, on the same
per-address budget (one counter for both doors), unknown ids included."""

from types import SimpleNamespace

import pytest
from django.conf import settings
from django.test import Client

from chat.models import Chat
from core import ratelimit

UNKNOWN = "6f1c1a8e-0000-4000-8000-000000000000"


@pytest.fixture
def clock(monkeypatch):
    window = settings.PUBLIC_CHAT_RATE_WINDOW
    state = SimpleNamespace(now=1_800_000_000 // window * window + 12.5)  # 12.5 s into a window
    monkeypatch.setattr(ratelimit, "time", SimpleNamespace(time=lambda: state.now))
    return state


@pytest.fixture
def shared(owner, make_chat):
    chat = make_chat(owner, [("What is 2 + 2?", "It is 4.")], title="Arithmetic")
    Chat.objects.filter(pk=chat.pk).update(shared=True)
    return chat


def page(chat_id, address="203.0.113.7"):
    return Client().get(f"/share/{chat_id}/", REMOTE_ADDR=address)


def test_the_share_page_serves_20_per_window_per_address_then_429(shared, clock):
    for _ in range(20):
        assert page(shared.pk).status_code == 200

    refused = page(shared.pk)

    assert refused.status_code == 429
    assert refused["Retry-After"] == "18"
    assert refused.content.decode() == "Too many requests; try again in 18 seconds."
    assert page(shared.pk, address="198.51.100.4").status_code == 200
    clock.now += 18
    assert page(shared.pk).status_code == 200


def test_unknown_ids_use_up_the_allowance(db, clock):
    for _ in range(20):
        assert page(UNKNOWN).status_code == 404
    assert page(UNKNOWN).status_code == 429


def test_the_page_and_the_api_share_one_budget(shared, clock):
    for _ in range(10):
        assert page(shared.pk).status_code == 200
        assert Client().get(f"/api/v1/public/chat/{shared.pk}", REMOTE_ADDR="203.0.113.7").status_code == 200
    assert page(shared.pk).status_code == 429
    assert Client().get(f"/api/v1/public/chat/{shared.pk}", REMOTE_ADDR="203.0.113.7").status_code == 429
