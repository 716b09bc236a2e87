"""The quota counters underneath billing.charges (the one door chat uses); nothing else touches the counters.

Reservations are single conditional UPDATEs (`used + n <= limit`), so a limit holds under any concurrency.
A reservation whose action produced nothing (the provider failed, or the user stopped before the first token)
is returned with `release`; anything that produced output stays charged.
"""

import datetime as dt
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, connections, router, transaction
from django.db.models import F

from billing.models import UsagePeriod


@dataclass(frozen=True)
class Kind:
    counter: str  # UsagePeriod field
    limit: str  # Product field and FREE_TIER key
    label: str


KINDS = {
    "chat": Kind("chats_used", "chat_limit", "chat generations"),
    "image": Kind("images_used", "image_limit", "image generations"),
    "web_search": Kind("web_searches_used", "web_search_limit", "web searches"),
    "file_rag": Kind("file_rag_used", "file_rag_limit", "file uses"),
}


class QuotaExceeded(Exception):
    def __init__(self, kind: str, used: int, limit: int, resets_on: dt.date):
        self.kind, self.used, self.limit, self.resets_on = kind, used, limit, resets_on
        super().__init__(
            f"You have used {used} of {limit} {KINDS[kind].label} this month; "
            f"the limit resets on {resets_on.isoformat()} (UTC). Upgrade on the pricing page for more."
        )


@dataclass(frozen=True)
class Reservation:
    period_id: int
    kind: str
    amount: int


def current_month(now: dt.datetime | None = None) -> dt.date:
    now = now or dt.datetime.now(dt.UTC)
    return dt.date(now.year, now.month, 1)


def next_month(month: dt.date) -> dt.date:
    return dt.date(month.year + month.month // 12, month.month % 12 + 1, 1)


def is_subscriber(user) -> bool:
    """Has an active (non-archived) product: the pro models are theirs."""
    return bool(user.product_id) and not user.product.is_archived


def limits_for(user) -> dict[str, int]:
    """The user's monthly limits: their product's, or the free tier's."""
    product = user.product if user.product_id else None
    if product is not None and not product.is_archived:
        return {name: getattr(product, kind.limit) for name, kind in KINDS.items()} | {
            "files_per_request": product.files_per_request
        }
    free = settings.FREE_TIER_LIMITS
    return {name: free[kind.limit] for name, kind in KINDS.items()} | {"files_per_request": free["files_per_request"]}


def _period(user, month: dt.date) -> UsagePeriod:
    period = UsagePeriod.objects.filter(user=user, month=month).first()
    if period is not None:
        return period
    try:
        with transaction.atomic():
            return UsagePeriod.objects.create(user=user, month=month)
    except IntegrityError:  # another request created it first
        return UsagePeriod.objects.get(user=user, month=month)


def _take(user, month: dt.date, counter: str, limit: int, amount: int) -> int | None:
    """The conditional UPDATE of this month's row, found by its unique (user, month), RETURNING its id (SQLite ≥
    3.35 and PostgreSQL): one statement where reading the row first takes two. None when nothing was taken (no
    row yet this month, or the limit is reached)."""
    connection = connections[router.db_for_write(UsagePeriod)]
    quote = connection.ops.quote_name
    column = quote(UsagePeriod._meta.get_field(counter).column)
    sql = (
        f"UPDATE {quote(UsagePeriod._meta.db_table)} SET {column} = {column} + %s "
        f"WHERE {quote(UsagePeriod._meta.get_field('user').column)} = %s "
        f"AND {quote(UsagePeriod._meta.get_field('month').column)} = %s AND {column} <= %s "
        f"RETURNING {quote(UsagePeriod._meta.pk.column)}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [amount, user.pk, connection.ops.adapt_datefield_value(month), limit - amount])
        row = cursor.fetchone()
    return None if row is None else row[0]


def reserve(user, kind: str, amount: int = 1) -> Reservation:
    """Take `amount` units of `kind` from this month's quota, or raise QuotaExceeded without changing anything."""
    spec = KINDS[kind]
    limit = limits_for(user)[kind]
    month = current_month()
    period_id = _take(user, month, spec.counter, limit, amount)
    if period_id is not None:
        return Reservation(period_id, kind, amount)
    period = _period(user, month)  # the month's first use, or a refusal: the same conditional UPDATE, by its id
    taken = UsagePeriod.objects.filter(pk=period.pk, **{f"{spec.counter}__lte": limit - amount}).update(
        **{spec.counter: F(spec.counter) + amount}
    )
    if not taken:
        used = UsagePeriod.objects.values_list(spec.counter, flat=True).get(pk=period.pk)
        raise QuotaExceeded(kind, used, limit, next_month(month))
    return Reservation(period.pk, kind, amount)


def release(reservation: Reservation) -> None:
    """Give back a reservation whose action produced nothing."""
    counter = KINDS[reservation.kind].counter
    UsagePeriod.objects.filter(pk=reservation.period_id, **{f"{counter}__gte": reservation.amount}).update(
        **{counter: F(counter) - reservation.amount}
    )


def usage_meters(user) -> list[dict]:
    """This month's use against each limit, for the account page and GET /user."""
    month = current_month()
    period = UsagePeriod.objects.filter(user=user, month=month).first()
    limits = limits_for(user)
    return [
        {
            "kind": name,
            "label": kind.label,
            "used": getattr(period, kind.counter) if period else 0,
            "limit": limits[name],
            "resetsOn": next_month(month).isoformat(),
        }
        for name, kind in KINDS.items()
    ]
