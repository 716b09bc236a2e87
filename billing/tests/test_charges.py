"""billing.charges, the one door for quota and the ledger: a charge is settled or released exactly once, however
many settlers race for it, and only what committed is published."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext

from billing import charges
from billing.models import Charge, UsageEntry, UsagePeriod
from chat.models import AIModel, Chat, ChatQuery

pytestmark = pytest.mark.django_db(transaction=True)

RACERS = 12


@pytest.fixture
def priced_model():
    model = AIModel.objects.get(name="gpt-3.5-turbo")
    model.input_price_per_million, model.output_price_per_million = 2, 10
    model.save()
    return model


@pytest.fixture
def published():
    seen = []

    def receiver(sender, charge, entry, **kwargs):
        seen.append((charge.state if charge else None, entry.action if entry else None))

    charges.charge_closed.connect(receiver)
    yield seen
    charges.charge_closed.disconnect(receiver)


def used(user, counter="chats_used") -> int:
    return UsagePeriod.objects.values_list(counter, flat=True).get(user=user)


def race(function) -> list:
    """`function(racer)` from RACERS threads (racer 0, 1, …) released at once, each with its own connection."""
    start = threading.Barrier(RACERS)

    def one(racer):
        try:
            start.wait()
            return function(racer)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=RACERS) as pool:
        return list(pool.map(one, range(RACERS)))


def test_settling_is_idempotent_and_writes_one_ledger_row(owner, priced_model, published):
    (charge,) = charges.do_reserve(owner, ["chat"])

    assert charges.do_settle_turn(charge, produced=True, model=priced_model, input_tokens=100, output_tokens=20)
    assert not charges.do_settle_turn(charge, produced=True, model=priced_model, input_tokens=100, output_tokens=20)

    entry = UsageEntry.objects.get()
    assert (entry.action, entry.input_tokens, entry.output_tokens, entry.cost_micros) == ("chat", 100, 20, 400)
    charge.refresh_from_db()
    assert (charge.state, charge.entry_id) == ("settled", entry.pk) and charge.closed_at is not None
    assert used(owner) == 1
    assert published == [("settled", "chat")]


def test_releasing_after_settling_changes_nothing(owner, priced_model):
    (charge,) = charges.do_reserve(owner, ["chat"])
    charges.do_settle_turn(charge, produced=True, model=priced_model, input_tokens=1, output_tokens=1)

    assert charges.do_release(charge) is False
    assert charges.do_release_all([charge, None]) == 0

    charge.refresh_from_db()
    assert charge.state == "settled"
    assert used(owner) == 1
    assert UsageEntry.objects.count() == 1


def test_a_turn_that_produced_nothing_gives_its_unit_back_once(owner, priced_model, published):
    (charge,) = charges.do_reserve(owner, ["chat"])

    assert charges.do_settle_turn(charge, produced=False, model=priced_model, input_tokens=0, output_tokens=0)
    assert not charges.do_settle_turn(charge, produced=True, model=priced_model, input_tokens=5, output_tokens=5)
    assert not charges.do_release(charge)

    assert used(owner) == 0
    assert not UsageEntry.objects.exists()
    assert Charge.objects.get().state == "released"
    assert published == [("released", None)]


def test_concurrent_settlers_charge_once(owner, priced_model):
    (charge,) = charges.do_reserve(owner, ["chat"])

    def settle(_):
        copy = Charge.objects.get(pk=charge.pk)  # each settler has its own copy, as separate instances would
        return charges.do_settle_turn(copy, produced=True, model=priced_model, input_tokens=10, output_tokens=10)

    outcomes = race(settle)

    assert outcomes.count(True) == 1, outcomes
    assert UsageEntry.objects.count() == 1
    assert used(owner) == 1


def test_concurrent_releasers_give_back_once(owner):
    kept, raced = charges.do_reserve(owner, ["chat", "chat"])
    assert used(owner) == 2

    outcomes = race(lambda _: charges.do_release(Charge.objects.get(pk=raced.pk)))

    assert outcomes.count(True) == 1, outcomes
    assert used(owner) == 1  # a second release would have taken back `kept`'s unit too
    assert Charge.objects.get(pk=kept.pk).state == "held"


def test_a_settler_and_a_releaser_racing_never_both_win(owner, priced_model):
    (charge,) = charges.do_reserve(owner, ["chat"])

    def settle_or_release(racer):
        copy = Charge.objects.get(pk=charge.pk)
        if racer % 2:
            return "settled" if charges.do_settle_turn(
                copy, produced=True, model=priced_model, input_tokens=1, output_tokens=1
            ) else None
        return "released" if charges.do_release(copy) else None

    outcomes = [outcome for outcome in race(settle_or_release) if outcome]

    assert len(outcomes) == 1, outcomes
    charge.refresh_from_db()
    assert charge.state == outcomes[0]
    if charge.state == "settled":
        assert (used(owner), UsageEntry.objects.count()) == (1, 1)
    else:
        assert (used(owner), UsageEntry.objects.count()) == (0, 0)


def test_reserving_is_all_or_nothing_and_counts_the_refusal(owner, settings):
    from core import metrics

    settings.FREE_TIER_LIMITS = {**settings.FREE_TIER_LIMITS, "file_rag_limit": 1}
    charges.do_reserve(owner, ["file_rag"])
    refused = metrics.QUOTA_REFUSALS.labels("file_rag")._value.get()

    with pytest.raises(charges.QuotaExceeded) as raised:
        charges.do_reserve(owner.pk, ["chat", "file_rag"])

    assert raised.value.kind == "file_rag"
    assert used(owner) == 0  # the chat unit taken first went back with the transaction
    assert Charge.objects.count() == 1
    assert metrics.QUOTA_REFUSALS.labels("file_rag")._value.get() == refused + 1


def test_an_orphan_finds_its_held_charges_and_settles_them_by_the_same_rule(owner, priced_model):
    chat = Chat.objects.create(owner=owner, title="t", model=priced_model.name)
    query = ChatQuery.objects.create(chat=chat, prompt="p", model=priced_model.name)
    generation, file_use = charges.do_reserve(owner, ["chat", "file_rag"])
    charges.do_assign_to_query([generation, file_use, None], query.pk)
    charges.do_settle(file_use)

    (held,) = charges.held_charges(query.pk, charges.GENERATION_KINDS)
    assert held.pk == generation.pk
    assert charges.held_charges(query.pk) == [held]  # the settled file use is no longer held

    # The orphan passes estimated tokens; the pipeline, settling the same charge meanwhile, loses nothing.
    assert charges.do_settle_turn(held, produced=True, model=priced_model, input_tokens=3, output_tokens=7)
    assert not charges.do_settle_turn(generation, produced=True, model=priced_model, input_tokens=9, output_tokens=9)

    entry = UsageEntry.objects.get()
    assert (entry.chat_query_id, entry.input_tokens, entry.output_tokens) == (query.pk, 3, 7)
    assert charges.held_charges(query.pk) == []


def test_a_utility_call_is_in_the_ledger_without_touching_the_quota(owner, priced_model, published):
    entry = charges.do_record_utility_call(owner.pk, None, priced_model, 1000, 100)

    assert (entry.action, entry.model, entry.provider) == ("utility", "gpt-3.5-turbo", priced_model.provider)
    assert entry.cost_micros == 1000 * 2 + 100 * 10
    assert not UsagePeriod.objects.filter(user=owner).exists()
    assert published == [(None, "utility")]


def test_nothing_is_published_for_a_settlement_that_rolled_back(owner, priced_model, published):
    (charge,) = charges.do_reserve(owner, ["chat"])

    with pytest.raises(RuntimeError), transaction.atomic():
        charges.do_settle_turn(charge, produced=True, model=priced_model, input_tokens=1, output_tokens=1)
        raise RuntimeError("the caller's transaction failed")

    assert published == []
    assert Charge.objects.get().state == "held"
    assert not UsageEntry.objects.exists()


def test_staff_see_charges_read_only(owner, admin_client):
    charges.do_reserve(owner, ["chat"])

    page = admin_client.get("/admin/billing/charge/")

    assert page.status_code == 200 and "owner@example.com" in page.content.decode()
    assert admin_client.get("/admin/billing/charge/add/").status_code == 403
    charge = Charge.objects.get()
    admin_client.post(f"/admin/billing/charge/{charge.pk}/change/", {"state": "released"})
    assert Charge.objects.get().state == "held"


def test_a_settlement_ledgers_the_query_stored_on_the_charge_whatever_its_copy_says(owner, priced_model):
    chat = Chat.objects.create(owner=owner, title="t", model=priced_model.name)
    query = ChatQuery.objects.create(chat=chat, prompt="p", model=priced_model.name)
    (charge,) = charges.do_reserve(owner, ["chat"])  # this copy was taken before the query existed
    charges.do_assign_to_query([Charge.objects.get(pk=charge.pk)], query.pk)  # assigned through another copy

    assert charges.do_settle_turn(charge, produced=True, model=priced_model, input_tokens=1, output_tokens=2)

    entry = UsageEntry.objects.get()
    assert entry.chat_query_id == query.pk
    assert (charge.chat_query_id, charge.entry) == (query.pk, entry)
    assert Charge.objects.values_list("state", "entry_id").get(pk=charge.pk) == ("settled", entry.pk)


def test_a_charge_whose_chat_was_deleted_mid_turn_is_ledgered_without_its_query(owner, priced_model):
    chat = Chat.objects.create(owner=owner, title="t", model=priced_model.name)
    query = ChatQuery.objects.create(chat=chat, prompt="p", model=priced_model.name)
    (charge,) = charges.do_reserve(owner, ["chat"], chat_query_id=query.pk)
    chat.delete()  # the charge stays, its query set null; this copy still names it

    assert charges.do_settle_turn(charge, produced=True, model=priced_model, input_tokens=1, output_tokens=2)

    assert UsageEntry.objects.get().chat_query_id is None
    assert charge.chat_query_id is None


def test_reserving_and_settling_a_turn_take_two_statements_each(owner, priced_model):
    charges.do_reserve(owner, ["chat"])  # the month's first use creates its row

    with CaptureQueriesContext(connection) as reserving:
        (charge,) = charges.do_reserve(owner, ["chat"])
    with CaptureQueriesContext(connection) as settling:
        charges.do_settle_turn(charge, produced=True, model=priced_model, input_tokens=1, output_tokens=2)

    def statements(captured):  # the transaction's own BEGIN and COMMIT left out (SQLite logs them, PostgreSQL not)
        sql = [query["sql"] for query in captured.captured_queries]
        return [line for line in sql if line != "COMMIT" and not line.startswith("BEGIN")]

    assert len(statements(reserving)) == 2, statements(reserving)  # the counter (RETURNING its row), the charge
    assert len(statements(settling)) == 2, statements(settling)  # the ledger row, the charge (RETURNING its query)
    assert used(owner) == 2 and UsageEntry.objects.count() == 1
