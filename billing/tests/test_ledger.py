"""The ledger reconciles: for a scripted series of turns its sums equal the provider-reported usage, and its
costs are the catalog's prices applied to those tokens."""

import pytest
from django.db.models import Sum
from django.test import Client

from billing.ledger import cost_micros
from billing.models import UsageEntry
from chat.models import AIModel
from testsupport.http import ServerAsyncClient, bearer, parse_sse, read_streaming
from testsupport.scripted import SCRIPTED_MODEL

pytestmark = pytest.mark.django_db(transaction=True)


def test_cost_is_tokens_times_price_per_million_in_micro_units():
    assert cost_micros(1_000_000, 0, "0.50", "1.50") == 500_000
    assert cost_micros(1234, 567, "3", "15") == 1234 * 3 + 567 * 15
    assert cost_micros(1, 1, "0.0004", "0.0004") == 0  # rounds half up to whole micro-units
    assert cost_micros(3, 0, "0.5", "0") == 2


async def test_ledger_sums_match_provider_reported_usage(scripted, owner, owner_key):
    await AIModel.objects.filter(name=SCRIPTED_MODEL).aupdate(input_price_per_million=3, output_price_per_million=15)
    reported = []
    for i, tokens in enumerate([["a"], ["b", "c"], ["d", "e", "f"], ["g"] * 10]):
        scripted.tokens = tokens
        response = await ServerAsyncClient().post(
            "/api/v1/chat/stream",
            {"prompt": f"question {i} " * (i + 1)},
            content_type="application/json",
            headers=bearer(owner_key),
        )
        events = parse_sse(await read_streaming(response))
        reported.append(events[-2]["usage"])

    totals = await UsageEntry.objects.filter(user=owner).aaggregate(
        i=Sum("input_tokens"), o=Sum("output_tokens"), c=Sum("cost_micros")
    )
    assert totals["i"] == sum(u["inputTokens"] for u in reported)
    assert totals["o"] == sum(u["outputTokens"] for u in reported) == 16
    assert totals["c"] == sum(u["inputTokens"] * 3 + u["outputTokens"] * 15 for u in reported)
    entries = [e async for e in UsageEntry.objects.filter(user=owner)]
    assert {(e.model, e.provider, e.action) for e in entries} == {(SCRIPTED_MODEL, "scripted", "chat")}
    assert all(e.chat_query_id for e in entries)


def test_staff_see_the_ledger_read_only_with_monthly_totals(owner, other, admin_client):
    from billing.ledger import record

    model = AIModel.objects.get(name="gpt-3.5-turbo")
    model.input_price_per_million, model.output_price_per_million = 1, 2
    model.save()
    record(owner.pk, "chat", model=model, input_tokens=100, output_tokens=50)
    record(owner.pk, "chat", model=model, input_tokens=10, output_tokens=5)
    record(other.pk, "chat", model=model, input_tokens=1, output_tokens=1)

    page = admin_client.get("/admin/billing/usageentry/")
    html = page.content.decode()
    assert page.status_code == 200
    assert "owner@example.com" in html and "0.000220" in html  # 110×1 + 55×2 micro-USD
    filtered = admin_client.get(f"/admin/billing/usageentry/?user__id__exact={other.pk}").content.decode()
    table_start = filtered.index('id="monthly-totals"')
    totals = filtered[table_start : filtered.index("</table>", table_start)]
    assert "other@example.com" in totals and "owner@example.com" not in totals
    assert admin_client.get("/admin/billing/usageentry/add/").status_code == 403
    entry = UsageEntry.objects.first()
    response = admin_client.post(f"/admin/billing/usageentry/{entry.pk}/change/", {"input_tokens": 0})
    entry.refresh_from_db()
    assert response.status_code == 403 or entry.input_tokens != 0


def test_a_user_sees_their_own_meters(scripted, owner, owner_client, owner_key):
    Client().post("/api/v1/chat", {"prompt": "hi"}, content_type="application/json", headers=bearer(owner_key))

    page = owner_client.get("/accounts/").content.decode()
    assert "Chat generations" in page and "<td>1</td><td>200</td>" in page
    api = Client().get("/api/v1/user", headers=bearer(owner_key)).json()
    assert {"kind": "chat", "used": 1, "limit": 200} == {k: api["usage"][0][k] for k in ("kind", "used", "limit")}
