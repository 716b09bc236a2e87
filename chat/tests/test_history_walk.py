"""History kept incrementally: each query carries its token estimates, and a turn reads only the newest turns of
its branch that can fit (chat.branches.history_walk), with the stored summary for what is older."""

import importlib

import pytest
from asgiref.sync import async_to_sync
from django.apps import apps

from chat.branches import history_walk
from chat.models import Chat, ChatQuery
from chat.pipeline import ResponseWriter, load_history
from core.tokens import estimate_tokens

pytestmark = pytest.mark.django_db


def test_each_saved_query_carries_its_token_estimates(owner, make_chat):
    chat = make_chat(owner, [("Où est la gare ?", "Tout droit."), ("Streaming", "", ChatQuery.Status.STREAMING)])
    done, streaming = chat.queries.order_by("created_at")

    assert done.prompt_tokens == estimate_tokens("Où est la gare ?")
    assert done.response_tokens == estimate_tokens("Tout droit.")
    assert streaming.response_tokens is None  # measured when the answer ends
    writer = ResponseWriter(streaming)
    writer.append("A finished answer.")
    async_to_sync(writer.finish)(ChatQuery.Status.COMPLETE)
    streaming.refresh_from_db()
    assert streaming.response_tokens == estimate_tokens("A finished answer.")


def test_the_migration_measures_the_queries_saved_before_it(owner, make_chat):
    chat = make_chat(owner, [("Hello there", "General Kenobi")])
    ChatQuery.objects.update(prompt_tokens=None, response_tokens=None)
    migration = importlib.import_module("chat.migrations.0007_chatquery_token_counts")

    migration.measure_existing_queries(apps, None)

    query = chat.queries.get()
    assert query.prompt_tokens == estimate_tokens("Hello there")
    assert query.response_tokens == estimate_tokens("General Kenobi")


def branch(chat) -> list[ChatQuery]:
    return list(chat.queries.order_by("created_at"))


def test_the_walk_stops_once_the_turns_read_no_longer_fit(owner, make_chat):
    chat = make_chat(owner, [(f"Q{n} " + "x" * 300, f"A{n} " + "y" * 300) for n in range(50)])
    turns = branch(chat)
    per_turn = turns[-1].prompt_tokens + turns[-1].response_tokens + 8  # the turns read all cost this

    walk = history_walk(turns[-1].pk, room=per_turn * 3)

    assert [q.pk for q in walk.turns] == [q.pk for q in turns[-4:]]  # three that fit, and the one that did not
    assert not walk.reached_first and not walk.reached_summary


def test_a_summary_on_the_branch_covers_what_is_older_and_its_turns_are_never_read(owner, make_chat):
    chat = make_chat(owner, [(f"Q{n}", f"A{n}") for n in range(6)])
    turns = branch(chat)
    Chat.objects.filter(pk=chat.pk).update(summary="Earlier: greetings.", summary_until=turns[2].created_at)
    new = chat.queries.create(prompt="Now?", model=chat.model, parent=turns[-1])

    loaded = async_to_sync(load_history)(new, turns[2].created_at, room=10_000)

    assert loaded.summary_applies and loaded.unread == ()
    assert [user["content"] for user, _ in loaded.turns] == ["Q3", "Q4", "Q5"]


def test_a_summary_made_on_another_branch_does_not_apply(owner, make_chat):
    chat = make_chat(owner, [(f"Q{n}", f"A{n}") for n in range(3)])
    first, second, third = branch(chat)
    other = chat.queries.create(prompt="Another version", response="Elsewhere", model=chat.model, parent=first)
    new = chat.queries.create(prompt="Now?", model=chat.model, parent=third)

    loaded = async_to_sync(load_history)(new, other.created_at, room=10_000)

    assert not loaded.summary_applies
    assert [user["content"] for user, _ in loaded.turns] == ["Q0", "Q1", "Q2"]


def test_what_does_not_fit_is_named_for_the_summary_without_being_read(owner, make_chat):
    chat = make_chat(owner, [(f"Q{n} " + "x" * 300, f"A{n} " + "y" * 300) for n in range(10)])
    turns = branch(chat)
    Chat.objects.filter(pk=chat.pk).update(summary="Earlier.", summary_until=turns[1].created_at)
    new = chat.queries.create(prompt="Now?", model=chat.model, parent=turns[-1])
    per_turn = turns[0].prompt_tokens + turns[0].response_tokens + 8

    loaded = async_to_sync(load_history)(new, turns[1].created_at, room=per_turn * 3)

    assert loaded.summary_applies
    assert [user["content"][:2] for user, _ in loaded.turns] == ["Q6", "Q7", "Q8", "Q9"]
    assert loaded.unread == tuple(q.pk for q in turns[2:6])  # after the summary, before what was read


def test_the_branch_a_new_prompt_follows_is_the_selected_one_read_by_index(owner, make_chat):
    from chat.branches import chat_tree, selected_path_ids

    chat = make_chat(owner, [(f"Q{n}", f"A{n}") for n in range(4)])
    first, second, third, fourth = branch(chat)
    # Versions at two forks: at the second turn one made later but not selected, at the third two selected at
    # once (the newest is shown) with a turn below the newest.
    chat.queries.create(prompt="Q1 again", response="A1'", model=chat.model, parent=first, selected=False)
    newest = chat.queries.create(prompt="Q2 again", response="A2'", model=chat.model, parent=second)
    below = chat.queries.create(prompt="Below", response="B", model=chat.model, parent=newest)

    ids = selected_path_ids(chat.pk)

    assert ids == [q.pk for q in chat_tree(chat.pk).selected_branch()]
    assert ids == [first.pk, second.pk, newest.pk, below.pk] and third.pk not in ids and fourth.pk not in ids
    assert selected_path_ids(make_chat(owner, []).pk) == []
