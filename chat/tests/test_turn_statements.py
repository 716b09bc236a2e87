"""What a turn costs the database, as properties (bench/README.md "Turn CPU" has the timings): its start is one
transaction (the quota's charge, the chat and the query), its end another (the answer and the settled charge), the
chat's name a third, none with a savepoint, and a new chat's turn executes a fixed, small number of statements.

Statements are counted on every thread (the turn's database work runs in sync threads, not the test's), leaving out
the search index's own (chat/search.py, measured by its tests) and the transaction markers (BEGIN on SQLite only)."""

import asyncio
import threading
import traceback

import pytest
from django.db.backends import utils as db_utils
from django.db.backends.base.base import BaseDatabaseWrapper
from django.test import override_settings

from billing.models import Charge, UsageEntry
from chat import generations, pipeline
from chat.models import Chat, ChatQuery
from chat.services import ChatError
from testsupport.scripted import SCRIPTED_MODEL

pytestmark = pytest.mark.django_db(transaction=True)

# A new chat's streamed turn, its name included: check_model; the quota taken (RETURNING its row) and the charge;
# the chat and the query; at its end the answer, the ledger row and the charge settled (RETURNING its query); the
# naming call's ledger row and the name.
NEW_CHAT_TURN_STATEMENTS = 10


class Recorded:
    def __init__(self):
        self.statements: list[str] = []
        self.commits = 0
        self.active = True
        self._lock = threading.Lock()

    def stop(self) -> "Recorded":
        """What the turn did, before the test reads the database itself."""
        self.active = False
        return self

    def counted(self) -> list[str]:
        return [sql for sql in self.statements if not sql.startswith(("BEGIN", "SAVEPOINT", "RELEASE SAVEPOINT"))]

    def savepoints(self) -> list[str]:
        return [sql for sql in self.statements if sql.startswith(("SAVEPOINT", "RELEASE SAVEPOINT"))]


@pytest.fixture
def recorded(monkeypatch):
    """Every statement and commit of every thread while the test runs (after its setup)."""
    record = Recorded()
    execute, commit = db_utils.CursorWrapper._execute_with_wrappers, BaseDatabaseWrapper.commit

    def recording_execute(self, sql, params, many, executor):
        if record.active and not any("chat/search.py" in frame.filename for frame in traceback.extract_stack()):
            with record._lock:
                record.statements.append(sql)
        return execute(self, sql, params, many, executor)

    def recording_commit(self):
        with record._lock:
            record.commits += record.active
        return commit(self)

    def start():
        monkeypatch.setattr(db_utils.CursorWrapper, "_execute_with_wrappers", recording_execute)
        monkeypatch.setattr(BaseDatabaseWrapper, "commit", recording_commit)
        return record

    yield start
    monkeypatch.undo()


async def whole_turn(user, payload) -> ChatQuery:
    """Start a turn as every transport does, and wait for it to end, its chat's naming included."""
    query = await generations.begin_turn(user, payload)
    await generations._running[query.id].task
    await asyncio.gather(*list(pipeline._naming_tasks))
    return query


@pytest.fixture
def fifty_tokens(scripted):
    scripted.tokens = [f"word{n} " for n in range(50)]
    # No flush while it streams (each would be a statement: the crash-safety writes, measured apart), and the
    # answering model is the one that names the chat.
    with override_settings(RESPONSE_FLUSH_SECONDS=60, CHAT_NAMING=True, UTILITY_MODELS=[SCRIPTED_MODEL]):
        yield scripted


async def test_a_new_chats_turn_is_three_transactions_and_a_fixed_number_of_statements(
    fifty_tokens, owner, recorded
):
    await whole_turn(owner, {"prompt": "This month's first turn", "model": SCRIPTED_MODEL})  # creates the month's row
    record = recorded()

    query = await whole_turn(owner, {"prompt": "Plan my weekend", "model": SCRIPTED_MODEL})
    record.stop()

    saved = await ChatQuery.objects.select_related("chat").aget(pk=query.pk)
    assert (saved.status, saved.response) == ("complete", "".join(fifty_tokens.tokens))
    assert saved.chat.name != saved.chat.title  # named
    charge = await Charge.objects.aget(chat_query_id=query.pk)
    assert charge.state == "settled" and charge.entry_id is not None
    assert await UsageEntry.objects.filter(chat_query_id=query.pk).acount() == 2  # the answer and its naming
    assert record.commits == 3, record.statements  # the start, the end, the name
    assert record.savepoints() == []
    assert len(record.counted()) <= NEW_CHAT_TURN_STATEMENTS, "\n".join(record.counted())


async def test_a_turn_in_an_existing_chat_starts_and_ends_in_one_transaction_each(scripted, owner, recorded):
    first = await whole_turn(owner, {"prompt": "First", "model": SCRIPTED_MODEL})
    record = recorded()

    query = await whole_turn(owner, {"prompt": "Second", "model": SCRIPTED_MODEL, "chatId": str(first.chat_id)})
    record.stop()

    assert (await ChatQuery.objects.aget(pk=query.pk)).parent_id == first.pk
    assert (await Charge.objects.aget(chat_query_id=query.pk)).state == "settled"
    assert record.commits == 2, record.statements  # naming is off (the scripted fixture), and it is no first turn
    assert record.savepoints() == []


async def test_a_refused_turn_leaves_no_chat_no_query_and_no_charge(scripted, owner, settings):
    settings.FREE_TIER_LIMITS = {**settings.FREE_TIER_LIMITS, "chat_limit": 1}
    await whole_turn(owner, {"prompt": "The only one", "model": SCRIPTED_MODEL})

    with pytest.raises(ChatError) as refused:
        await generations.begin_turn(owner, {"prompt": "One too many", "model": SCRIPTED_MODEL})

    assert refused.value.code == "quota_exceeded"
    assert await Chat.objects.acount() == 1
    assert await ChatQuery.objects.acount() == 1
    assert await Charge.objects.acount() == 1
