from django.db import migrations, models

BATCH = 500


def store_leaves(apps, schema_editor):
    """Every existing chat gets the leaf of the branch its `selected` flags choose (chat/branches.py Tree: at each
    fork the newest selected version, or the newest should none be), read by shape in one pass over the queries."""
    Chat = apps.get_model("chat", "Chat")
    ChatQuery = apps.get_model("chat", "ChatQuery")
    children: dict = {}
    rows = ChatQuery.objects.order_by("chat_id", "created_at", "id").values_list(
        "chat_id", "id", "parent_id", "selected"
    )
    for chat_id, query_id, parent_id, selected in rows.iterator(chunk_size=2000):
        children.setdefault(chat_id, {}).setdefault(parent_id, []).append((selected, query_id))
    updates = []
    for chat_id, tree in children.items():
        leaf, seen = None, 0
        versions = tree.get(None)
        while versions and seen <= len(tree) + 1:
            chosen = [query_id for selected, query_id in versions if selected] or [q for _, q in versions]
            leaf, seen = chosen[-1], seen + 1
            versions = tree.get(leaf)
        if leaf is not None:
            updates.append(Chat(pk=chat_id, branch_leaf=leaf))
        if len(updates) >= BATCH:
            Chat.objects.bulk_update(updates, ["branch_leaf"])
            updates = []
    if updates:
        Chat.objects.bulk_update(updates, ["branch_leaf"])


class Migration(migrations.Migration):
    dependencies = [("chat", "0011_assistants")]

    operations = [
        migrations.AddField(
            model_name="chat",
            name="branch_leaf",
            field=models.UUIDField(blank=True, editable=False, null=True),
        ),
        migrations.RunPython(store_leaves, migrations.RunPython.noop),
    ]
