"""A limit can never be exceeded: 100 concurrent reservations against one remaining unit, exactly one wins."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection, connections

from billing import quota
from billing.models import UsagePeriod

pytestmark = pytest.mark.django_db(transaction=True)

CONTENDERS = 100


def test_exactly_one_of_100_concurrent_reservations_gets_the_last_unit(owner, settings):
    settings.FREE_TIER_LIMITS = {**settings.FREE_TIER_LIMITS, "chat_limit": 5}
    period = UsagePeriod.objects.create(user=owner, month=quota.current_month(), chats_used=4)
    start = threading.Barrier(CONTENDERS)

    def contend(_):
        try:
            start.wait()
            quota.reserve(owner, "chat")
            return "reserved"
        except quota.QuotaExceeded:
            return "refused"
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=CONTENDERS) as pool:
        outcomes = list(pool.map(contend, range(CONTENDERS)))

    assert outcomes.count("reserved") == 1, outcomes
    assert outcomes.count("refused") == CONTENDERS - 1
    period.refresh_from_db()
    assert period.chats_used == 5
    assert UsagePeriod.objects.filter(user=owner).count() == 1
    print(f"{connection.vendor}: {outcomes.count('reserved')} reserved, {outcomes.count('refused')} refused")


def test_concurrent_first_use_of_a_month_creates_one_row_and_counts_every_unit(owner, settings):
    settings.FREE_TIER_LIMITS = {**settings.FREE_TIER_LIMITS, "chat_limit": 1000}
    start = threading.Barrier(20)

    def contend(_):
        try:
            start.wait()
            quota.reserve(owner, "chat")
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=20) as pool:
        list(pool.map(contend, range(20)))

    assert list(UsagePeriod.objects.filter(user=owner).values_list("chats_used", flat=True)) == [20]
