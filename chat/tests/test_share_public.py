"""Sharing: the toggle, the public read-only API and page, its cache and its rate limit."""

import json
from types import SimpleNamespace

import pytest
from django.conf import settings
from django.test import Client

from chat.models import Chat, ChatQuery
from core import ratelimit
from testsupport.http import ServerAsyncClient, bearer

SECRET_SYSTEM_PROMPT = "You are Zorblax; never reveal the launch codes 8842."


@pytest.fixture
def chat(owner, make_chat):
    return make_chat(
        owner,
        [("What is 2 + 2?", "It is 4."), ("And 3 + 3?", "It is 6.")],
        title="Arithmetic",
        system_prompt=SECRET_SYSTEM_PROMPT,
    )


@pytest.fixture
def shared(chat):
    Chat.objects.filter(pk=chat.pk).update(shared=True)
    chat.refresh_from_db()
    return chat


def patch_share(key, chat_id, body=None):
    kwargs = {"data": json.dumps(body), "content_type": "application/json"} if body is not None else {}
    return Client().patch(f"/api/v1/chat/{chat_id}/share", headers=bearer(key), **kwargs)


def public_api(chat_id, client=None, **extra):
    return (client or Client()).get(f"/api/v1/public/chat/{chat_id}", **extra)


# --- the toggle ----------------------------------------------------------------------------------------------


def test_an_empty_body_toggles_sharing(chat, owner_key):
    on = patch_share(owner_key, chat.pk)
    assert on.status_code == 200
    assert (on.json()["chat"]["shared"], on.json()["publicUrl"]) == (True, f"/share/{chat.pk}/")
    chat.refresh_from_db()
    assert chat.shared

    off = patch_share(owner_key, chat.pk)
    assert (off.json()["chat"]["shared"], off.json()["publicUrl"]) == (False, None)
    chat.refresh_from_db()
    assert not chat.shared


@pytest.mark.parametrize("value", [True, False])
def test_an_explicit_value_sets_sharing_and_repeating_it_changes_nothing(chat, owner_key, value):
    Chat.objects.filter(pk=chat.pk).update(shared=not value)
    for _ in range(2):
        response = patch_share(owner_key, chat.pk, {"shared": value})
        assert response.status_code == 200
        assert response.json()["chat"]["shared"] is value
        chat.refresh_from_db()
        assert chat.shared is value


@pytest.mark.parametrize("body", ['{"shared": "yes"}', '{"shared": 1}', "{not json"])
def test_a_bad_share_body_is_refused(chat, owner_key, body):
    response = Client().patch(
        f"/api/v1/chat/{chat.pk}/share", body, content_type="application/json", headers=bearer(owner_key)
    )

    assert response.status_code == 400
    assert response.json()["code"] in ("invalid_field", "invalid_body")
    chat.refresh_from_db()
    assert not chat.shared


def test_the_page_toggle_shows_the_public_link(chat, owner_client):
    html = owner_client.post(f"/chat/{chat.pk}/share/").content.decode()
    assert f'href="/share/{chat.pk}/"' in html and "Stop sharing" in html
    chat.refresh_from_db()
    assert chat.shared

    html = owner_client.post(f"/chat/{chat.pk}/share/").content.decode()
    assert f'href="/share/{chat.pk}/"' not in html
    chat.refresh_from_db()
    assert not chat.shared


# --- the public API and page ---------------------------------------------------------------------------------


def test_a_shared_chat_is_readable_logged_out(shared):
    response = public_api(shared.pk)

    assert response.status_code == 200
    body = response.json()
    assert (body["chat"]["id"], body["chat"]["title"]) == (str(shared.pk), "Arithmetic")
    assert [(q["prompt"], q["response"], q["status"]) for q in body["queries"]] == [
        ("What is 2 + 2?", "It is 4.", "complete"),
        ("And 3 + 3?", "It is 6.", "complete"),
    ]


def test_the_public_view_leaks_no_private_fields(shared):
    body = public_api(shared.pk).json()

    assert SECRET_SYSTEM_PROMPT not in json.dumps(body)
    assert "systemPrompt" not in body["chat"]
    assert all("systemPrompt" not in q and "system_prompt" not in q for q in body["queries"])
    assert not {"bookmarked", "owner", "email"} & set(body["chat"])


@pytest.mark.parametrize("chat_id", ["not-a-uuid", "6f1c1a8e-0000-4000-8000-000000000000"])
def test_unknown_public_chats_are_404(db, chat_id):
    response = public_api(chat_id)

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_an_unshared_chat_is_404(chat):
    response = public_api(chat.pk)

    assert response.status_code == 404
    assert response.json() == {"error": "Chat not found.", "code": "not_found"}


def test_the_public_page_renders_logged_out(shared):
    response = Client().get(f"/share/{shared.pk}/")

    assert response.status_code == 200
    html = response.content.decode()
    for text in ("Arithmetic", "What is 2 + 2?", "It is 4.", "And 3 + 3?", "It is 6."):
        assert text in html
    assert html.index("What is 2 + 2?") < html.index("And 3 + 3?")
    assert "Zorblax" not in html
    assert "ws-connect" not in html  # read-only: no socket, no composer
    assert 'id="composer"' not in html


def test_the_public_page_is_404_when_unshared(chat):
    assert Client().get(f"/share/{chat.pk}/").status_code == 404


# --- cache ---------------------------------------------------------------------------------------------------


def test_the_public_view_is_served_from_the_cache(shared):
    first = public_api(shared.pk).json()
    # Changes that bypass the services (and so their invalidation) are not seen while the copy is cached.
    Chat.objects.filter(pk=shared.pk).update(title="Changed behind the cache")
    ChatQuery.objects.filter(chat=shared).update(response="Changed answer")

    second = public_api(shared.pk).json()

    assert second == first
    assert second["chat"]["title"] == "Arithmetic"


@pytest.mark.django_db(transaction=True)
def test_unsharing_removes_the_public_view_at_once(shared, owner_key):
    assert public_api(shared.pk).status_code == 200  # now cached

    assert patch_share(owner_key, shared.pk, {"shared": False}).status_code == 200

    assert public_api(shared.pk).status_code == 404
    assert Client().get(f"/share/{shared.pk}/").status_code == 404


@pytest.mark.django_db(transaction=True)
def test_renaming_refreshes_the_public_view_at_once(shared, owner_key):
    assert public_api(shared.pk).json()["chat"]["title"] == "Arithmetic"

    Client().patch(
        f"/api/v1/chat/{shared.pk}", {"title": "Sums"}, content_type="application/json", headers=bearer(owner_key)
    )

    assert public_api(shared.pk).json()["chat"]["title"] == "Sums"


@pytest.mark.django_db(transaction=True)
async def test_a_new_turn_refreshes_the_public_view(scripted, shared, owner_key):
    client = ServerAsyncClient()
    before = (await client.get(f"/api/v1/public/chat/{shared.pk}")).json()
    assert len(before["queries"]) == 2

    turn = await client.post(
        f"/api/v1/chat/{shared.pk}",
        {"prompt": "And 4 + 4?"},
        content_type="application/json",
        headers=bearer(owner_key),
    )
    assert turn.status_code == 200

    after = (await client.get(f"/api/v1/public/chat/{shared.pk}")).json()
    assert [q["prompt"] for q in after["queries"]][-1] == "And 4 + 4?"
    assert after["queries"][-1]["response"] == "Hello, world!"


# --- rate limit ----------------------------------------------------------------------------------------------


@pytest.fixture
def clock(monkeypatch):
    """A frozen clock for the rate limiter, 12 s into a 30 s window; advance it with clock.now += seconds."""
    window = settings.PUBLIC_CHAT_RATE_WINDOW
    state = SimpleNamespace(now=1_800_000_000 // window * window + 12.5)
    monkeypatch.setattr(ratelimit, "time", SimpleNamespace(time=lambda: state.now))
    return state


def test_the_public_rate_limit_defaults_to_20_per_30_seconds():
    assert (settings.PUBLIC_CHAT_RATE_LIMIT, settings.PUBLIC_CHAT_RATE_WINDOW) == (20, 30)


def test_the_public_api_allows_20_requests_per_window_per_ip_then_429(shared, clock):
    client = Client()
    for _ in range(20):
        assert public_api(shared.pk, client, REMOTE_ADDR="203.0.113.7").status_code == 200

    refused = public_api(shared.pk, client, REMOTE_ADDR="203.0.113.7")

    assert refused.status_code == 429
    assert refused.json()["code"] == "rate_limited"
    assert refused["Retry-After"] == "18"  # seconds left in the window
    assert "18 s" in refused.json()["error"]
    # Another client address has its own allowance.
    assert public_api(shared.pk, client, REMOTE_ADDR="198.51.100.4").status_code == 200


def test_the_rate_limit_resets_with_the_next_window(shared, clock):
    for _ in range(21):
        public_api(shared.pk, REMOTE_ADDR="203.0.113.7")
    assert public_api(shared.pk, REMOTE_ADDR="203.0.113.7").status_code == 429

    clock.now += 18

    assert public_api(shared.pk, REMOTE_ADDR="203.0.113.7").status_code == 200


def test_refused_lookups_count_too(db, clock):
    # Probing for ids is limited as well: 404s use up the allowance.
    for _ in range(20):
        assert public_api("6f1c1a8e-0000-4000-8000-000000000000", REMOTE_ADDR="203.0.113.9").status_code == 404

    assert public_api("6f1c1a8e-0000-4000-8000-000000000000", REMOTE_ADDR="203.0.113.9").status_code == 429


def test_the_public_page_renders_answers_as_markdown_and_prompts_as_text(owner, make_chat):
    from testsupport.html import MARKDOWN_ANSWER, MARKDOWN_PROMPT, Elements, assert_no_live_markup

    chat = make_chat(owner, [(MARKDOWN_PROMPT, MARKDOWN_ANSWER)], title="Recipe")
    Chat.objects.filter(pk=chat.pk).update(shared=True)

    html = Client().get(f"/share/{chat.pk}/").content.decode()
    doc = Elements(html)

    assert [text for _, text in doc.find("h2")] == ["Steps"]
    assert doc.find("code", class_="language-python") and doc.find("button", class_="copy-code")
    assert doc.find("table") and doc.find(class_="math math-inline")
    ((_, answer),) = doc.find("div", class_="answer")
    assert answer.endswith("<script>alert(1)</script> <img src=x onerror=alert(1)> [x](javascript:alert(1))")
    assert_no_live_markup(doc)
    ((_, prompt),) = doc.find("div", class_="prompt")
    assert prompt == " ".join(MARKDOWN_PROMPT.split())
    assert any(attrs["src"].endswith("/katex.min.js") for attrs, _ in doc.find("script"))
