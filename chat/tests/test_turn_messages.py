"""The pipeline's history step and message building (chat.pipeline.history_for, TurnMessages): a stored chat's
turns, or the conversation a client sent instead of them; the client's is sent whole, the stored one shortened."""

import pytest
from asgiref.sync import sync_to_async

from chat.grounding import Grounding
from chat.pipeline import History, TurnMessages, history_for
from chat.services import PreparedTurn, TurnRequest, check_model, token_budget
from core.tokens import estimate_message_tokens
from testsupport.scripted import SCRIPTED_MODEL

pytestmark = pytest.mark.django_db(transaction=True)


def prepared(prompt: str, conversation=None) -> PreparedTurn:
    model = check_model(SCRIPTED_MODEL)
    _, max_tokens, budget = token_budget(model)
    return PreparedTurn(TurnRequest(prompt, conversation=conversation), model, None, max_tokens, budget)


@sync_to_async
def last_query_of(make_chat, owner, turns):
    chat = make_chat(owner, turns)
    query = chat.queries.order_by("created_at").last()
    query.chat = chat
    return query


async def test_a_stored_chat_answers_from_its_own_turns(owner, make_chat, scripted):
    query = await last_query_of(make_chat, owner, [("Who wrote Dune?", "Frank Herbert."), ("When?", "")])

    history = await history_for(query, await sync_to_async(prepared)("When?"))

    assert [m["content"] for turn in history.turns for m in turn] == ["Who wrote Dune?", "Frank Herbert."]
    assert history.fixed == () and history.chat is not None
    assert history.messages() == [
        {"role": "user", "content": "Who wrote Dune?"},
        {"role": "assistant", "content": "Frank Herbert."},
    ]


async def test_a_client_conversation_replaces_the_stored_history(owner, make_chat, scripted):
    query = await last_query_of(make_chat, owner, [("Stored question", "Stored answer"), ("Next", "")])
    conversation = ({"role": "user", "content": "Client question"}, {"role": "assistant", "content": "Client answer"})

    history = await history_for(query, await sync_to_async(prepared)("Next", conversation))

    assert history.turns == () and history.summary == "" and history.chat is None
    assert history.messages() == list(conversation)
    assert "Stored" not in str(history.head())


def test_a_client_conversation_is_sent_whole_while_stored_turns_leave_the_window():
    long = "words " * 60
    conversation = tuple(
        {"role": role, "content": f"{role} {n} {long}"} for n in range(3) for role in ("user", "assistant")
    )
    stored = tuple(
        ({"role": "user", "content": f"q{n} {long}"}, {"role": "assistant", "content": f"a{n} {long}"})
        for n in range(6)
    )
    current = {"role": "user", "content": "Now?"}

    client = TurnMessages((), Grounding("c"), History(fixed=conversation), current)
    chat = TurnMessages((), Grounding("c"), History(stored), current)
    budget = sum(map(estimate_message_tokens, [*conversation, current]))

    messages, dropped = client.for_budget(budget)
    assert (messages, dropped) == ([*conversation, current], 0)
    messages, dropped = chat.for_budget(budget)
    assert 0 < dropped < 6 and messages[-1] == current
    assert messages[-2]["content"].startswith("a5")  # the newest turns stay

