"""Branches: a chat's queries form a tree. Each query follows its parent's answer (a first turn has none);
queries with the same parent are versions of one turn (a regenerated answer, an edited prompt), and at each fork
the `selected` one is shown. The selected branch is the path from the chosen root down the chosen children.

Everything here reads a chat's queries in one SQL query and walks the tree in Python, so rendering a chat costs
the same number of queries whatever its length; selecting a version is one UPDATE."""

from dataclasses import dataclass

from django.db.models import Case, Q, Value, When

from chat.models import ChatQuery

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


async def history_before(query: ChatQuery) -> list[ChatQuery]:
    """The turns the model sees before `query`: the branch from the first turn to `query`'s parent, oldest first.
    Earlier versions of the same turn, and other branches, are never part of it."""
    if query.parent_id is None:
        return []
    rows = ChatQuery.objects.filter(chat_id=query.chat_id).only(*SHAPE_FIELDS, "prompt", "response")
    tree = Tree([row async for row in rows])
    return tree.path_to(query.parent_id)


def select_path(chat_id, path_ids: list) -> None:
    """Make every query of `path_ids` (a path from a first turn down) the version shown at its fork, in one
    UPDATE; the versions chosen below the path's end stay as they were."""
    if not path_ids:
        return
    forks = Q(parent__isnull=True) | Q(parent_id__in=path_ids[:-1])
    ChatQuery.objects.filter(chat_id=chat_id).filter(forks).update(
        selected=Case(When(pk__in=path_ids, then=Value(True)), default=Value(False))
    )
