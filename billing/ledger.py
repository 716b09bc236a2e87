"""The usage ledger: one row per billable action, priced from the catalog so totals reconcile with bills."""

from decimal import ROUND_HALF_UP, Decimal

from django.db.models import Count, Sum

from billing.models import UsageEntry
from billing.quota import current_month


def cost_micros(input_tokens: int, output_tokens: int, input_price, output_price) -> int:
    """Prices are per million tokens, so tokens × price is the cost in millionths of the currency."""
    cost = Decimal(input_tokens) * Decimal(input_price) + Decimal(output_tokens) * Decimal(output_price)
    return int(cost.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def record(user_id, action: str, *, chat_query_id=None, model=None, input_tokens=0, output_tokens=0, quantity=1):
    """Write one ledger row; `model` is a catalog AIModel (its prices and provider are used) or None."""
    return UsageEntry.objects.create(
        user_id=user_id,
        chat_query_id=chat_query_id,
        action=action,
        model=model.name if model else "",
        provider=model.provider if model else "",
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        quantity=quantity,
        cost_micros=cost_micros(
            input_tokens, output_tokens, model.input_price_per_million, model.output_price_per_million
        )
        if model
        else 0,
        month=current_month(),
    )


def summed(entries, *group_by: str):
    """`entries` (a UsageEntry queryset) summed per `group_by` (month first), newest month first: the one place
    the ledger is totalled, for the account page and the admin alike."""
    return (
        entries.order_by()
        .values(*group_by)
        .annotate(
            entries=Count("id"),
            input_tokens=Sum("input_tokens"),
            output_tokens=Sum("output_tokens"),
            cost_micros=Sum("cost_micros"),
        )
        .order_by(*(f"-{name}" if name == "month" else name for name in group_by))
    )


def monthly_totals(user):
    """This user's ledger summed per month and action, newest month first."""
    return summed(UsageEntry.objects.filter(user=user), "month", "action")
