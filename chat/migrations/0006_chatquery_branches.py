"""Branches: each query gets the query it follows (`parent`) and whether it is the version shown (`selected`).

Chats saved before branches were linear: each query follows the previous one of its chat (by created_at), and
every query is the only version of its turn, so every one is selected."""

import django.db.models.deletion
from django.db import migrations, models

BATCH = 500


def link_linear_history(apps, schema_editor):
    ChatQuery = apps.get_model("chat", "ChatQuery")
    pending = []
    previous_chat, previous_id = None, None
    rows = ChatQuery.objects.order_by("chat_id", "created_at", "id").values_list("id", "chat_id")
    for query_id, chat_id in rows.iterator(chunk_size=BATCH):
        parent_id = previous_id if chat_id == previous_chat else None
        if parent_id is not None:
            pending.append(ChatQuery(id=query_id, parent_id=parent_id, selected=True))
        previous_chat, previous_id = chat_id, query_id
        if len(pending) >= BATCH:
            ChatQuery.objects.bulk_update(pending, ["parent", "selected"])
            pending = []
    if pending:
        ChatQuery.objects.bulk_update(pending, ["parent", "selected"])


class Migration(migrations.Migration):

    dependencies = [
        ("chat", "0005_chat_unlisted"),
    ]

    operations = [
        migrations.AddField(
            model_name="chatquery",
            name="parent",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="children",
                to="chat.chatquery",
            ),
        ),
        migrations.AddField(
            model_name="chatquery",
            name="selected",
            field=models.BooleanField(default=True, help_text="The version shown among its siblings"),
        ),
        migrations.RunPython(link_linear_history, migrations.RunPython.noop),
    ]
