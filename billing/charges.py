"""The one door through which chat reserves, settles and releases every billable unit, and writes the ledger.

Every unit of quota a turn takes (its generation, each new file, each web search) is a `Charge` row: taken
(`held`) before the work, then either `settled` (kept; written to the ledger when it was metered) or `released`
(given back) exactly once. The counters underneath are billing.quota's conditional UPDATEs, so a limit holds
under any concurrency; a charge moves only by a conditional UPDATE on `state='held'`, so two settlers (the
pipeline and an orphan sweeper, two sweepers, a retry) can never both charge or both give back the same units.

As in the rest of the services: `check_*` validates and raises, `do_*` mutates inside one transaction and
publishes (the `charge_closed` signal) only after it commits. Chat imports this module, never quota or ledger;
what chat needs of quota (QuotaExceeded, limits_for, is_subscriber, current_month, next_month) is re-exported here.
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db import connections, router, transaction
from django.dispatch import Signal
from django.utils import timezone

from billing import ledger, quota
from billing.models import Charge
from billing.quota import QuotaExceeded, current_month, is_subscriber, limits_for, next_month
from core import metrics

__all__ = [
    "GENERATION_KINDS",
    "Charge",
    "QuotaExceeded",
    "charge_closed",
    "check_user",
    "current_month",
    "do_assign_to_query",
    "do_record_utility_call",
    "do_release",
    "do_release_all",
    "do_reserve",
    "do_settle",
    "do_settle_turn",
    "held_charges",
    "is_subscriber",
    "limits_for",
    "next_month",
]

logger = logging.getLogger(__name__)

# The kinds that pay for an answer; their ledger action is the kind itself.
GENERATION_KINDS = ("chat", "image")

# Sent after the transaction that settled or released a charge, or recorded a utility call, commits (never for one
# rolled back), with `charge` (its new state set; None for a utility call) and `entry` (the ledger row written, or
# None): the hook for anything that follows usage.
charge_closed = Signal()


@dataclass(frozen=True)
class Metered:
    """What a settled action consumed, for its ledger row. `model` is a catalog model (name, provider, prices)."""

    model: object | None
    input_tokens: int = 0
    output_tokens: int = 0


def check_user(user_or_id):
    """The user whose quota is charged, with their product loaded (their limits come from it)."""
    if isinstance(user_or_id, get_user_model()):
        return user_or_id
    return get_user_model().objects.select_related("product").get(pk=user_or_id)


def do_reserve(user_or_id, kinds: Iterable[str], *, chat_query_id=None) -> list[Charge]:
    """Take one unit of each of `kinds` from this month's quota, as held charges (in the same order).

    All or nothing: when any is refused, those already taken are given back before QuotaExceeded is raised (and
    counted). Nothing raises inside its transaction (but a database error), so inside a caller's transaction it
    needs no savepoint: the reservation commits with the caller's rows (chat.generations: the turn's query)."""
    user = check_user(user_or_id)
    refused = None
    taken: list[Charge] = []
    with _atomic_without_savepoint():
        reservations = []
        for kind in kinds:
            try:
                reservations.append(quota.reserve(user, kind))
            except QuotaExceeded as exc:
                refused = exc
                break
        if refused is not None:
            for reservation in reservations:  # under the same row locks: as if never taken
                quota.release(reservation)
        else:
            for reservation in reservations:
                taken.append(
                    Charge.objects.create(
                        user=user,
                        period_id=reservation.period_id,
                        kind=reservation.kind,
                        amount=reservation.amount,
                        chat_query_id=chat_query_id,
                    )
                )
    if refused is not None:
        metrics.QUOTA_REFUSALS.labels(refused.kind).inc()
        raise refused
    return taken


def _atomic_without_savepoint():
    """A transaction of its own, or part of the caller's without a savepoint (two statements fewer). Only for work
    that raises nothing but database errors, which end the caller's transaction anyway."""
    return transaction.atomic(savepoint=False)


def do_assign_to_query(charges: Iterable[Charge | None], chat_query_id) -> None:
    """Note which query holds these charges (taken before its row existed), so whoever settles that query later,
    even on another instance, finds them (held_charges)."""
    # Those reserved with this query already (do_reserve's chat_query_id) need no UPDATE.
    held = [charge for charge in charges if charge is not None and charge.chat_query_id != chat_query_id]
    if held:
        Charge.objects.filter(pk__in=[charge.pk for charge in held]).update(chat_query_id=chat_query_id)
    for charge in held:
        charge.chat_query_id = chat_query_id


def _close(charge: Charge, state: str) -> bool:
    """Move a held charge to `state`; False (and nothing changed) when it is no longer held. The caller is
    inside a transaction, so what it does next commits with this or not at all."""
    closed_at = timezone.now()
    moved = Charge.objects.filter(pk=charge.pk, state=Charge.State.HELD).update(state=state, closed_at=closed_at)
    if moved:
        charge.state, charge.closed_at = state, closed_at
    return bool(moved)


def _publish_on_commit(charge: Charge, entry=None) -> None:
    def publish():
        logger.debug("charge %s", charge.state, extra={"charge_id": charge.pk, "kind": charge.kind})
        charge_closed.send(sender=Charge, charge=charge, entry=entry)

    transaction.on_commit(publish)


def do_settle(charge: Charge, metered: Metered | None = None) -> bool:
    """Keep a held charge, and write its ledger row when `metered` says what it consumed (web searches and file
    uses are kept without one). Idempotent: False when the charge was already settled or released."""
    with _atomic_without_savepoint():
        if metered is None:
            if not _close(charge, Charge.State.SETTLED):
                return False
            _publish_on_commit(charge)
            return True
        # Two statements: the ledger row, then the one conditional UPDATE that settles the charge and links the row
        # (RETURNING the query the charge is stored with). A charge no longer held takes its row out again; a
        # query stored otherwise than on this copy of the charge (assigned through another copy, or set null as its
        # chat was deleted) is what the row keeps.
        entry = ledger.record(
            charge.user_id,
            charge.kind,
            chat_query_id=charge.chat_query_id,
            model=metered.model,
            input_tokens=metered.input_tokens,
            output_tokens=metered.output_tokens,
        )
        closed_at = timezone.now()
        settled, stored_query_id = _settle_returning_query(charge, entry, closed_at)
        if not settled:
            entry.delete()
            return False
        if stored_query_id != charge.chat_query_id:
            type(entry).objects.filter(pk=entry.pk).update(chat_query_id=stored_query_id)
            entry.chat_query_id = stored_query_id
        charge.state, charge.closed_at, charge.chat_query_id, charge.entry = (
            Charge.State.SETTLED,
            closed_at,
            stored_query_id,
            entry,
        )
        _publish_on_commit(charge, entry)
    return True


def _settle_returning_query(charge: Charge, entry, closed_at) -> tuple[bool, object]:
    """UPDATE … WHERE state='held' RETURNING chat_query_id (SQLite ≥ 3.35 and PostgreSQL): (whether it settled,
    the query stored on the charge). The ORM's update() cannot return a column, and a SELECT would be one more
    statement per settled turn."""
    connection = connections[router.db_for_write(Charge)]
    field = Charge._meta.get_field
    quote = connection.ops.quote_name
    sql = (
        f"UPDATE {quote(Charge._meta.db_table)} SET {quote(field('state').column)} = %s, "
        f"{quote(field('closed_at').column)} = %s, {quote(field('entry').column)} = %s "
        f"WHERE {quote(field('id').column)} = %s AND {quote(field('state').column)} = %s "
        f"RETURNING {quote(field('chat_query').column)}"
    )
    params = [
        Charge.State.SETTLED,
        connection.ops.adapt_datetimefield_value(closed_at),
        entry.pk,
        charge.pk,
        Charge.State.HELD,
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return False, None
    stored = row[0]
    return True, (None if stored is None else field("chat_query").target_field.to_python(stored))


def do_release(charge: Charge | None) -> bool:
    """Give a held charge's units back to the user's quota. Idempotent: False (a no-op) when it was already
    settled or released, so "release whatever is left" is always safe."""
    if charge is None:
        return False
    with _atomic_without_savepoint():
        if not _close(charge, Charge.State.RELEASED):
            return False
        quota.release(quota.Reservation(charge.period_id, charge.kind, charge.amount))
        _publish_on_commit(charge)
    return True


def do_release_all(charges: Iterable[Charge | None]) -> int:
    """Release each still-held charge; returns how many were given back."""
    return sum(do_release(charge) for charge in charges)


def do_settle_turn(charge: Charge, *, produced: bool, model, input_tokens: int, output_tokens: int) -> bool:
    """Settle a turn's generation charge, exactly once, by the one rule: charged (and in the ledger with these
    tokens) when the turn produced anything, given back when it produced nothing (the provider failed, or the
    user stopped before the first token). The pipeline passes the provider's usage; an orphan's settler passes
    estimated tokens. False when the charge had already been settled or released by someone else."""
    if not produced:
        return do_release(charge)
    return do_settle(charge, Metered(model, input_tokens, output_tokens))


def held_charges(chat_query_id, kinds: Iterable[str] | None = None) -> list[Charge]:
    """The query's charges still held: what a turn whose instance died never settled."""
    held = Charge.objects.filter(chat_query_id=chat_query_id, state=Charge.State.HELD)
    if kinds is not None:
        held = held.filter(kind__in=list(kinds))
    return list(held)


def do_record_utility_call(user_id, chat_query_id, model, input_tokens: int, output_tokens: int):
    """A utility model's call around a turn (a summary, a chat name, a web search query): no quota, but the
    provider bills its tokens, so the ledger shows them. Inside a caller's transaction (the chat's new name), no
    savepoint."""
    with _atomic_without_savepoint():
        entry = ledger.record(
            user_id,
            "utility",
            chat_query_id=chat_query_id,
            model=model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
        )
        transaction.on_commit(lambda: charge_closed.send(sender=Charge, charge=None, entry=entry))
    return entry
