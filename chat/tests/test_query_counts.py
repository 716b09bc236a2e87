"""Reading costs the same number of SQL queries whatever a user's number of chats or a chat's number of turns:
the chat list (API and sidebar), a chat's history (API, page, public page) and the history step of a turn.

Each test counts the queries of the same request against a small and a large instance and asserts they are equal
(and, for the lists, that the large one still answers a page)."""

import pytest
from asgiref.sync import async_to_sync
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from chat.models import Chat
from chat.pipeline import history_for
from chat.services import CHAT_PAGE_SIZE, HISTORY_PAGE_SIZE, PreparedTurn, TurnRequest, check_model, token_budget
from testsupport.http import bearer
from testsupport.scripted import SCRIPTED_MODEL

pytestmark = pytest.mark.django_db


def warm_up(*keys) -> None:
    """A key's first request also records when it was last used (once per interval): not what is counted here."""
    for key in keys:
        Client().get("/api/v1/chat/models", headers=bearer(key))
        Client().get("/api/v1/user", headers=bearer(key))


def count_queries(request) -> tuple[int, object]:
    with CaptureQueriesContext(connection) as captured:
        response = request()
    return len(captured.captured_queries), response


def make_chats(user, count: int) -> None:
    # bulk_create: 300 chats in one statement (each with its own updated_at, from auto_now).
    Chat.objects.bulk_create(Chat(owner=user, title=f"Chat {n}", model=SCRIPTED_MODEL) for n in range(count))


def turns(count: int) -> list[tuple[str, str]]:
    return [(f"Question {n}", f"Answer {n}") for n in range(count)]


def test_the_chat_list_api_costs_the_same_queries_for_3_and_300_chats(owner, other, owner_key, other_key):
    make_chats(owner, 3)
    make_chats(other, 300)
    url = "/api/v1/chat/user"
    warm_up(owner_key, other_key)

    few, small = count_queries(lambda: Client().get(url, headers=bearer(owner_key)))
    many, large = count_queries(lambda: Client().get(url, headers=bearer(other_key)))

    assert len(small.json()["chats"]) == 3 and len(large.json()["chats"]) == CHAT_PAGE_SIZE
    assert few == many
    next_page = f"{url}?before={large.json()['nextCursor']}"
    paged, _ = count_queries(lambda: Client().get(next_page, headers=bearer(other_key)))
    assert paged == many


def test_the_sidebar_costs_the_same_queries_for_3_and_300_chats(owner, other, owner_client, other_client):
    make_chats(owner, 3)
    make_chats(other, 300)
    owner_client.get("/chat/sidebar/")  # the first request of a session may set things up once

    few, small = count_queries(lambda: owner_client.get("/chat/sidebar/"))
    other_client.get("/chat/sidebar/")
    many, large = count_queries(lambda: other_client.get("/chat/sidebar/"))

    assert small.content.count(b'class="chat-link') == 3
    assert large.content.count(b'class="chat-link') == CHAT_PAGE_SIZE
    assert few == many
    few_pages, _ = count_queries(lambda: owner_client.get("/chat/"))
    many_pages, _ = count_queries(lambda: other_client.get("/chat/"))
    assert few_pages == many_pages


def test_the_bookmarked_list_costs_the_same_queries_for_3_and_300_chats(owner, other, owner_key, other_key):
    make_chats(owner, 3)
    make_chats(other, 300)
    Chat.objects.update(bookmarked=True)
    url = "/api/v1/user/bookmarked-chats"
    warm_up(owner_key, other_key)

    few, _ = count_queries(lambda: Client().get(url, headers=bearer(owner_key)))
    many, large = count_queries(lambda: Client().get(url, headers=bearer(other_key)))

    assert few == many and len(large.json()["chats"]) == CHAT_PAGE_SIZE


@pytest.fixture
def short_and_long_chats(owner, make_chat):
    return make_chat(owner, turns(3), shared=True), make_chat(owner, turns(200), shared=True)


def test_a_chats_history_through_the_api_costs_the_same_queries_for_3_and_200_turns(short_and_long_chats, owner_key):
    short, long = short_and_long_chats
    warm_up(owner_key)

    few, small = count_queries(lambda: Client().get(f"/api/v1/chat/{short.pk}", headers=bearer(owner_key)))
    many, large = count_queries(lambda: Client().get(f"/api/v1/chat/{long.pk}", headers=bearer(owner_key)))

    assert (len(small.json()["queries"]), len(large.json()["queries"])) == (3, HISTORY_PAGE_SIZE)
    assert few == many
    # Older turns (?before=): the cursor names where the page ends, so no leaf is looked up; the same for both.
    last_of_short = str(short.queries.order_by("created_at").last().pk)
    few_older, _ = count_queries(
        lambda: Client().get(f"/api/v1/chat/{short.pk}?before={last_of_short}", headers=bearer(owner_key))
    )
    older = f"/api/v1/chat/{long.pk}?before={large.json()['nextCursor']}&limit=200"
    many_older, rest = count_queries(lambda: Client().get(older, headers=bearer(owner_key)))
    assert len(rest.json()["queries"]) == 200 - HISTORY_PAGE_SIZE and rest.json()["nextCursor"] is None
    assert few_older == many_older


def test_a_chats_history_page_costs_the_same_queries_at_turn_3_and_after_200_turns_of_the_product(
    owner, owner_key, make_chat, scripted
):
    """With the branch's end stored on the chat (Chat.branch_leaf, as every turn leaves it) the count is the same
    again, and the page is the newest turns."""
    from chat import branches

    short, long = make_chat(owner, turns(3)), make_chat(owner, turns(200))
    for chat in (short, long):
        branches.refresh_shown_leaf(chat.pk)
    warm_up(owner_key)

    few, _ = count_queries(lambda: Client().get(f"/api/v1/chat/{short.pk}?limit=2", headers=bearer(owner_key)))
    with CaptureQueriesContext(connection) as captured:
        large = Client().get(f"/api/v1/chat/{long.pk}?limit=2", headers=bearer(owner_key))

    assert [q["prompt"] for q in large.json()["queries"]] == ["Question 198", "Question 199"]
    assert few == len(captured.captured_queries)


def test_a_chat_page_costs_the_same_queries_for_3_and_200_turns(short_and_long_chats, owner_client):
    short, long = short_and_long_chats
    owner_client.get(f"/chat/{short.pk}/")

    few, small = count_queries(lambda: owner_client.get(f"/chat/{short.pk}/"))
    many, large = count_queries(lambda: owner_client.get(f"/chat/{long.pk}/"))

    assert b"Answer 2" in small.content and b"Answer 199" in large.content
    assert few == many


def test_the_public_page_and_api_cost_the_same_queries_for_3_and_200_turns(short_and_long_chats):
    short, long = short_and_long_chats

    few, small = count_queries(lambda: Client().get(f"/share/{short.pk}/"))
    many, large = count_queries(lambda: Client().get(f"/share/{long.pk}/"))
    assert (small.status_code, large.status_code) == (200, 200) and b"Answer 199" in large.content
    assert few == many

    few, small = count_queries(lambda: Client().get(f"/api/v1/public/chat/{short.pk}"))
    many, large = count_queries(lambda: Client().get(f"/api/v1/public/chat/{long.pk}"))
    assert len(large.json()["queries"]) == 200
    assert few == many


def history_step_queries(chat) -> tuple[int, object]:
    """The pipeline's history step for a new prompt after the chat's last turn."""
    last = chat.queries.order_by("created_at").last()
    query = chat.queries.create(prompt="And now?", model=SCRIPTED_MODEL, parent=last)
    query.chat = chat
    model = check_model(SCRIPTED_MODEL)
    _, max_tokens, budget = token_budget(model)
    turn = PreparedTurn(TurnRequest("And now?"), model, chat, max_tokens, budget)
    return count_queries(lambda: async_to_sync(history_for)(query, turn))


def test_the_history_step_of_a_turn_costs_the_same_queries_at_turn_3_and_turn_200(owner, make_chat, scripted):
    # Short turns: all 199 fit the window, so every one is read and sent.
    few, short = history_step_queries(make_chat(owner, [(f"Q{n}", f"A{n}") for n in range(2)]))
    many, long = history_step_queries(make_chat(owner, [(f"Q{n}", f"A{n}") for n in range(199)]))

    assert len(short.turns) == 2 and len(long.turns) == 199
    assert few == many == 1


def test_the_history_step_of_a_chat_longer_than_its_window_reads_only_what_can_fit(owner, make_chat, scripted):
    """A long chat whose turns no longer fit: still one query for the turns that may be sent, one more (without
    any text) to learn what is left for a summary."""
    words = "word " * 300  # about 500 tokens a turn: a handful fit the scripted model's window
    queries, history = history_step_queries(make_chat(owner, [(f"Q{n} {words}", f"A{n} {words}") for n in range(199)]))

    assert queries == 2
    assert 0 < len(history.turns) < 30 and len(history.unread) == 199 - len(history.turns)
    assert history.turns[-1][1]["content"].startswith("A198")
