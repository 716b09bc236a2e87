"""Branches: a chat's queries form a tree. Each query follows its parent's answer (a first turn has none);
queries with the same parent are versions of one turn (a regenerated answer, an edited prompt), and at each fork
the `selected` one is shown. The selected branch is the path from the chosen root down the chosen children.

Everything here reads a chat's queries in one SQL query and walks the tree in Python, so rendering a chat costs
the same number of queries whatever its length; selecting a version is one UPDATE."""

import uuid
from dataclasses import dataclass
from types import SimpleNamespace

from django.db import connection
from django.db.models import Case, Q, Value, When

from chat.models import Chat, ChatQuery
from core.tokens import MESSAGE_OVERHEAD_TOKENS

# Enough to walk the tree (history and selection), without the answers' text.
SHAPE_FIELDS = ("id", "chat_id", "parent_id", "selected", "created_at")


@dataclass(frozen=True)
class Versions:
    """Where a query stands among the versions of its turn."""

    ids: tuple[str, ...]
    index: int  # 0-based position of this query in `ids` (oldest first)

    @property
    def count(self) -> int:
        return len(self.ids)

    @property
    def position(self) -> int:
        return self.index + 1

    @property
    def previous_id(self) -> str | None:
        return self.ids[self.index - 1] if self.index > 0 else None

    @property
    def next_id(self) -> str | None:
        return self.ids[self.index + 1] if self.index + 1 < len(self.ids) else None

    def as_dict(self) -> dict:
        return {"ids": list(self.ids), "index": self.index, "count": self.count}


class Tree:
    def __init__(self, queries):
        self.queries = {query.pk: query for query in queries}
        self.children: dict = {}
        for query in sorted(self.queries.values(), key=lambda q: (q.created_at, str(q.pk))):
            self.children.setdefault(query.parent_id, []).append(query)

    def chosen_child(self, parent_id) -> ChatQuery | None:
        """The version shown after `parent_id` (None: the first turn): the selected one; should two be selected
        (two versions started at once), the newest; should none be, the newest."""
        versions = self.children.get(parent_id)
        if not versions:
            return None
        selected = [query for query in versions if query.selected]
        return (selected or versions)[-1]

    def descend(self, query: ChatQuery | None) -> list[ChatQuery]:
        """`query` and the versions shown below it, down to a leaf."""
        path = []
        while query is not None and len(path) <= len(self.queries):
            path.append(query)
            query = self.chosen_child(query.pk)
        return path

    def path_to(self, query_id) -> list[ChatQuery]:
        """The turns from the first one to `query_id`, oldest first (empty for None or an unknown id)."""
        path = []
        query = self.queries.get(query_id)
        while query is not None and len(path) <= len(self.queries):
            path.append(query)
            query = self.queries.get(query.parent_id)
        return path[::-1]

    def selected_branch(self) -> list[ChatQuery]:
        return self.descend(self.chosen_child(None))

    def branch_through(self, query_id) -> list[ChatQuery]:
        """The branch that shows `query_id`: its ancestors, it, and the versions shown below it."""
        path = self.path_to(query_id)
        return path[:-1] + self.descend(path[-1]) if path else []

    def versions_of(self, query: ChatQuery) -> Versions:
        ids = tuple(str(version.pk) for version in self.children.get(query.parent_id, [query]))
        return Versions(ids, ids.index(str(query.pk)) if str(query.pk) in ids else 0)

    def annotate(self, branch: list[ChatQuery]) -> list[ChatQuery]:
        """Set `versions` on each query of `branch` (what the "‹ 2 / 3 ›" controls and the API show)."""
        for query in branch:
            query.versions = self.versions_of(query)
        return branch


@dataclass(frozen=True)
class Shape:
    """A query's place in its tree without its text (what Tree reads): for rows not written yet (an import)."""

    pk: object
    parent_id: object
    selected: bool
    created_at: object


def leaf_of(shapes) -> object | None:
    """The id of the last query of the branch these shapes choose (None for none): what Chat.branch_leaf holds."""
    branch = Tree(shapes).selected_branch()
    return branch[-1].pk if branch else None


def chat_tree(chat_id, fields=None) -> Tree:
    """The chat's queries as a tree, in one SQL query (`fields`: only those columns, for walking)."""
    queries = ChatQuery.objects.filter(chat_id=chat_id)
    if fields:
        queries = queries.only(*fields)
    return Tree(queries)


def selected_branch(chat_id) -> list[ChatQuery]:
    """The turns shown for the chat, first to last, each with its `versions`."""
    tree = chat_tree(chat_id)
    return tree.annotate(tree.selected_branch())


def branch_ending_at(chat_id, query_id) -> list[ChatQuery]:
    """The turns from the first one to `query_id` (any version, selected or not), each with its `versions`."""
    tree = chat_tree(chat_id)
    return tree.annotate(tree.path_to(query_id))


def selected_leaf_id(chat_id):
    """The last query of the selected branch: what a new prompt in this chat follows (None for an empty chat)."""
    branch = chat_tree(chat_id, SHAPE_FIELDS).selected_branch()
    return branch[-1].pk if branch else None


# The deepest a history walk goes: far beyond any context window's worth of turns (a turn costs at least 8 tokens),
# so it only bounds the loop.
MAX_WALK_TURNS = 100_000
MAX_WALK_ROOM = 2**31 - 1  # "no limit" for the room, within a 32-bit integer column's sums
# What a turn costs in the window as the rows measured it: both messages with their overhead, or nothing for a turn
# without an answer (history leaves those out). An unmeasured row (null) counts nothing, so the walk only ever goes
# further than needed, never stops short; its text is measured once read.
_TURN_COST_SQL = (
    "CASE WHEN q.response_tokens IS NULL OR q.response_tokens = 0 THEN 0 "
    f"ELSE COALESCE(q.prompt_tokens, 0) + q.response_tokens + {2 * MESSAGE_OVERHEAD_TOKENS} END"
)


@dataclass(frozen=True)
class HistoryWalk:
    """The newest turns above a query, read from its parent upwards (chat/pipeline.py load_history).

    `turns` are oldest first. The walk went on while the turns read so far fitted in the room it was given, and
    ends at the first turn (`reached_first`), at the turn a summary covers up to (`reached_summary`: that turn is
    the first of `turns`), or at the first turn that no longer fitted (neither: older turns remain unread)."""

    turns: tuple[ChatQuery, ...]
    reached_first: bool
    reached_summary: bool


SHAPE_COLUMNS = (*SHAPE_FIELDS, "prompt_tokens", "response_tokens")


class WalkedRow(SimpleNamespace):
    """A walked query's columns as plain values, by attribute name (`pk` too), without a model instance: building
    ChatQuery objects cost several times the SQL of a turn's history (bench/README.md)."""


# What a turn's history reads of each turn (chat/pipeline.py _read_history).
HISTORY_COLUMNS = (*SHAPE_COLUMNS, "prompt", "response")


def history_walk(
    parent_id, room: int, summary_until=None, max_turns: int = MAX_WALK_TURNS, columns=None, as_rows: bool = False
) -> HistoryWalk:
    """The branch above a new query, from `parent_id` up, in one SQL query (a recursive CTE over parent links)
    whose reads stop once the turns read cost more than `room` tokens, or at the turn created at `summary_until`:
    what a turn's history costs is bounded by its window, never by the chat's length. `columns`: only those (by
    attribute name); `as_rows`: the turns as WalkedRow values instead of ChatQuery objects."""
    table = ChatQuery._meta.db_table
    field = ChatQuery._meta.get_field
    stop_at_summary = "AND w.created_at <> %s" if summary_until is not None else ""
    fields = [f for f in ChatQuery._meta.concrete_fields if columns is None or f.attname in columns]
    columns = ", ".join(f"q.{connection.ops.quote_name(f.column)}" for f in fields)
    sql = f"""
        WITH RECURSIVE w (id, parent_id, created_at, total, depth) AS (
            SELECT q.id, q.parent_id, q.created_at, {_TURN_COST_SQL}, 1
            FROM {table} q WHERE q.id = %s
            UNION ALL
            SELECT q.id, q.parent_id, q.created_at, w.total + {_TURN_COST_SQL}, w.depth + 1
            FROM {table} q JOIN w ON q.id = w.parent_id
            WHERE w.total <= %s AND w.depth < %s {stop_at_summary}
        )
        SELECT {columns}, w.depth AS walk_depth FROM w JOIN {table} q ON q.id = w.id ORDER BY w.depth DESC
    """
    params = [field("id").get_db_prep_value(parent_id, connection), room, max_turns]
    if summary_until is not None:
        params.append(field("created_at").get_db_prep_value(summary_until, connection))
    turns = _walked_rows(sql, params, fields) if as_rows else tuple(ChatQuery.objects.raw(sql, params))
    oldest = turns[0] if turns else None
    return HistoryWalk(
        turns,
        reached_first=oldest is None or oldest.parent_id is None,
        reached_summary=oldest is not None and summary_until is not None and oldest.created_at == summary_until,
    )


def _walked_rows(sql: str, params: list, fields: list) -> tuple[WalkedRow, ...]:
    """The walk's rows converted as the ORM would (the backend's converters, then the field's own: UUIDs, aware
    datetimes, JSON), each a WalkedRow."""
    table = ChatQuery._meta.db_table
    converters = []
    for field in fields:
        column = field.get_col(table)
        converts = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
        converters.append((field.attname, column, converts))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    walked = []
    for row in rows:
        values = {}
        for value, (name, column, converts) in zip(row, converters, strict=False):  # the last column: walk_depth
            for convert in converts:
                value = convert(value, column, connection)
            values[name] = value
        walked.append(WalkedRow(pk=values.get("id"), **values))
    return tuple(walked)


def path_shape(query_id, summary_until=None, max_turns: int = MAX_WALK_TURNS) -> HistoryWalk:
    """The turns from `query_id` up to the turn created at `summary_until` (or to the first turn), oldest first,
    without their text (ids, parents, creation times, token counts; WalkedRow values), in one query: for the turn
    whose history did not fit its window, to learn whether the summary applies and which turns it would cover."""
    return history_walk(query_id, MAX_WALK_ROOM, summary_until, max_turns, columns=SHAPE_COLUMNS, as_rows=True)


def selected_path_ids(chat_id, max_turns: int = MAX_WALK_TURNS) -> list[uuid.UUID]:
    """The ids of the selected branch, first turn first (Tree.selected_branch's choice at each fork: the selected
    version, the newest should two be, the newest should none be), in one query that walks down the chosen child
    of each turn by index, without loading the chat's queries: what a new prompt follows."""
    table = ChatQuery._meta.db_table
    chosen = "ORDER BY c.selected DESC, c.created_at DESC, c.id DESC LIMIT 1"
    sql = f"""
        WITH RECURSIVE d (id, depth) AS (
            SELECT (SELECT c.id FROM {table} c WHERE c.chat_id = %s AND c.parent_id IS NULL {chosen}), 1
            UNION ALL
            SELECT (SELECT c.id FROM {table} c WHERE c.parent_id = d.id {chosen}), d.depth + 1
            FROM d WHERE d.id IS NOT NULL AND d.depth < %s
        )
        SELECT id FROM d WHERE id IS NOT NULL ORDER BY depth
    """
    chat_field = ChatQuery._meta.get_field("chat")
    with connection.cursor() as cursor:
        cursor.execute(sql, [chat_field.get_db_prep_value(chat_id, connection), max_turns])
        rows = cursor.fetchall()
    return [_as_uuid(value) for (value,) in rows]


def shown_leaf_id(chat_id, max_turns: int = MAX_WALK_TURNS) -> uuid.UUID | None:
    """The last query of the branch shown (what a new prompt follows; None for an empty chat), in one query that
    does not grow with the chat: it starts from the leaf stored on the chat (Chat.branch_leaf, kept by every path
    that adds or selects a version) and goes down the chosen child of each turn below it, which is no step at all
    unless turns were added below it by other means (a test's or a seed's rows). With no stored leaf, or one no
    longer in the chat, it starts from the chosen first turn: the whole walk (selected_path_ids), once."""
    table = ChatQuery._meta.db_table
    chat_table = Chat._meta.db_table
    chosen = "ORDER BY c.selected DESC, c.created_at DESC, c.id DESC LIMIT 1"
    sql = f"""
        WITH RECURSIVE d (id, depth) AS (
            SELECT COALESCE(
                (SELECT q.id FROM {table} q JOIN {chat_table} ch ON ch.branch_leaf = q.id
                 WHERE ch.id = %s AND q.chat_id = ch.id),
                (SELECT c.id FROM {table} c WHERE c.chat_id = %s AND c.parent_id IS NULL {chosen})
            ), 1
            UNION ALL
            SELECT (SELECT c.id FROM {table} c WHERE c.parent_id = d.id {chosen}), d.depth + 1
            FROM d WHERE d.id IS NOT NULL AND d.depth < %s
        )
        SELECT id FROM d WHERE id IS NOT NULL ORDER BY depth DESC LIMIT 1
    """
    chat_value = ChatQuery._meta.get_field("chat").get_db_prep_value(chat_id, connection)
    with connection.cursor() as cursor:
        cursor.execute(sql, [chat_value, chat_value, max_turns])
        row = cursor.fetchone()
    return _as_uuid(row[0]) if row is not None else None


def annotate_versions(chat_id, turns: list[ChatQuery]) -> list[ChatQuery]:
    """Set `versions` on each of `turns` (Tree.versions_of's answer) from their siblings' ids only, in one query:
    what a page of a chat's history needs, whatever the chat's length. (Plain SQL: the ORM's query building cost
    more than the query.)"""
    if not turns:
        return turns
    table = ChatQuery._meta.db_table
    id_field, chat_field = ChatQuery._meta.pk, ChatQuery._meta.get_field("chat")
    parents = list({turn.parent_id for turn in turns} - {None})
    forks = [f"c.parent_id IN ({', '.join(['%s'] * len(parents))})"] if parents else []
    if any(turn.parent_id is None for turn in turns):
        forks.append("c.parent_id IS NULL")
    sql = f"SELECT c.id, c.parent_id FROM {table} c WHERE c.chat_id = %s AND ({' OR '.join(forks)}) "
    sql += "ORDER BY c.created_at, c.id"
    params = [chat_field.get_db_prep_value(chat_id, connection)]
    params += [id_field.get_db_prep_value(parent, connection) for parent in parents]
    siblings: dict = {}
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for query_id, parent_id in cursor.fetchall():
            siblings.setdefault(_as_uuid(parent_id), []).append(str(_as_uuid(query_id)))
    for turn in turns:
        ids = tuple(siblings.get(turn.parent_id) or [str(turn.pk)])
        turn.versions = Versions(ids, ids.index(str(turn.pk)) if str(turn.pk) in ids else 0)
    return turns


def _as_uuid(value) -> uuid.UUID | None:
    return value if value is None or isinstance(value, uuid.UUID) else uuid.UUID(value)


def store_shown_leaf(chat_id, leaf_id) -> None:
    """Record the last query of the branch shown on the chat (its activity time is left alone)."""
    Chat.objects.filter(pk=chat_id).update(branch_leaf=leaf_id)


def refresh_shown_leaf(chat_id) -> uuid.UUID | None:
    """Store the leaf of the branch the `selected` flags choose, walked from the first turn (not from the stored
    leaf): for rows whose flags were written by other means than this module (a migration, a test's rows)."""
    path = selected_path_ids(chat_id)
    leaf = path[-1] if path else None
    store_shown_leaf(chat_id, leaf)
    return leaf


def ancestor_ids(query_id) -> list[uuid.UUID]:
    """The ids of the turns from the first one down to `query_id`, in one query (empty for None)."""
    if query_id is None:
        return []
    return [q.pk for q in history_walk(query_id, MAX_WALK_ROOM, columns=("id", "parent_id")).turns]


def select_path(chat_id, path_ids: list) -> None:
    """Make every query of `path_ids` (a path from a first turn down) the version shown at its fork, in one
    UPDATE; the versions chosen below the path's end stay as they were."""
    if not path_ids:
        return
    forks = Q(parent__isnull=True) | Q(parent_id__in=path_ids[:-1])
    # Only the rows whose flag changes are written: a new prompt at the end of the branch shown changes none above
    # it, and rewriting them all would make every turn's cost (and every row trigger's) grow with the chat.
    changes = Q(pk__in=path_ids, selected=False) | (~Q(pk__in=path_ids) & Q(selected=True))
    ChatQuery.objects.filter(chat_id=chat_id).filter(forks).filter(changes).update(
        selected=Case(When(pk__in=path_ids, then=Value(True)), default=Value(False))
    )
