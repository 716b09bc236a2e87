"""Token estimates on each query (prompt_tokens, response_tokens), so a turn's history is fitted to the model's
window from the rows' numbers instead of by reading and measuring every earlier turn. Existing rows are measured
here, in batches; answers still streaming stay unmeasured (their readers measure the text)."""

import math

from django.db import migrations, models

BATCH = 500
BYTES_PER_TOKEN = 3  # core.tokens.BYTES_PER_TOKEN at the time of writing: a migration keeps its own copy


def estimate(text: str) -> int:
    return math.ceil(len((text or "").encode("utf-8", "surrogatepass")) / BYTES_PER_TOKEN)


def measure_existing_queries(apps, schema_editor):
    ChatQuery = apps.get_model("chat", "ChatQuery")
    pending = []
    rows = ChatQuery.objects.order_by("pk").only("id", "prompt", "response", "status")
    for query in rows.iterator(chunk_size=BATCH):
        query.prompt_tokens = estimate(query.prompt)
        query.response_tokens = None if query.status == "streaming" else estimate(query.response)
        pending.append(query)
        if len(pending) >= BATCH:
            ChatQuery.objects.bulk_update(pending, ["prompt_tokens", "response_tokens"])
            pending = []
    if pending:
        ChatQuery.objects.bulk_update(pending, ["prompt_tokens", "response_tokens"])


class Migration(migrations.Migration):

    dependencies = [
        ("chat", "0006_chatquery_branches"),
    ]

    operations = [
        migrations.AddField(
            model_name="chatquery",
            name="prompt_tokens",
            field=models.PositiveIntegerField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name="chatquery",
            name="response_tokens",
            field=models.PositiveIntegerField(blank=True, editable=False, null=True),
        ),
        migrations.RunPython(measure_existing_queries, migrations.RunPython.noop),
    ]
