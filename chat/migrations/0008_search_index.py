"""Search (chat/search.py): chat_searchdocument, one row per chat title and per query, and beside it each engine's
own full-text index, which the ORM does not know:

* PostgreSQL: a `document` tsvector column on chat_searchdocument, with a GIN index;
* SQLite: the FTS5 table chat_searchtext (rowid = the document's id), and a trigger that deletes its row whenever
  the document row goes (a chat, query or user deleted: every cascade).

Existing chats are indexed here (chat.search.backfill reads and writes with plain SQL, so later model changes
cannot break this migration)."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

SQLITE_CREATE = [
    # The text is given already split and folded (chat.search.words), so unicode61 only splits on the spaces.
    "CREATE VIRTUAL TABLE chat_searchtext USING fts5(owner, title, prompt, response, "
    "tokenize = 'unicode61 remove_diacritics 0', prefix = '2 3')",
    "CREATE TRIGGER chat_searchdocument_forget AFTER DELETE ON chat_searchdocument "
    "BEGIN DELETE FROM chat_searchtext WHERE rowid = old.id; END",
]
SQLITE_DROP = ["DROP TRIGGER IF EXISTS chat_searchdocument_forget", "DROP TABLE IF EXISTS chat_searchtext"]
POSTGRESQL_CREATE = [
    "ALTER TABLE chat_searchdocument ADD COLUMN document tsvector NOT NULL DEFAULT ''::tsvector",
    "CREATE INDEX chat_search_document_gin ON chat_searchdocument USING GIN (document)",
]
POSTGRESQL_DROP = [
    "DROP INDEX IF EXISTS chat_search_document_gin",
    "ALTER TABLE chat_searchdocument DROP COLUMN IF EXISTS document",
]


def _run(schema_editor, statements_by_vendor):
    for statement in statements_by_vendor.get(schema_editor.connection.vendor, []):
        schema_editor.execute(statement)


def create_text_index(apps, schema_editor):
    _run(schema_editor, {"sqlite": SQLITE_CREATE, "postgresql": POSTGRESQL_CREATE})


def drop_text_index(apps, schema_editor):
    _run(schema_editor, {"sqlite": SQLITE_DROP, "postgresql": POSTGRESQL_DROP})


def index_existing_chats(apps, schema_editor):
    from chat.search import backfill

    backfill()


class Migration(migrations.Migration):

    dependencies = [
        ("chat", "0007_chatquery_token_counts"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="SearchDocument",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                (
                    "chat",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="+", to="chat.chat"
                    ),
                ),
                (
                    "owner",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "query",
                    models.OneToOneField(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="chat.chatquery",
                    ),
                ),
            ],
            options={
                "indexes": [models.Index(fields=["owner", "-id"], name="chat_search_owner_newest")],
                "constraints": [
                    models.UniqueConstraint(
                        condition=models.Q(("query__isnull", True)),
                        fields=("chat",),
                        name="chat_search_one_title_document",
                    )
                ],
            },
        ),
        migrations.RunPython(create_text_index, drop_text_index),
        migrations.RunPython(index_existing_chats, migrations.RunPython.noop),
    ]
