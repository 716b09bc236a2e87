"""What the chat API answers (chat/api.py), as ninja schemas for /api/v1/openapi.json and response validation.

Each object lists the fields clients rely on; they are open (core.schemas.OpenSchema), so a field added to a
model's as_dict() appears beside them without breaking the schema."""

from typing import Any

from core.schemas import OpenSchema


class ChatOut(OpenSchema):
    id: str
    title: str
    chatName: str  # noqa: N815 (wire names are camelCase)
    model: str
    systemPrompt: str  # noqa: N815
    webSearch: bool  # noqa: N815
    shared: bool
    bookmarked: bool
    createdAt: str  # noqa: N815
    updatedAt: str  # noqa: N815


class QueryOut(OpenSchema):
    id: str
    chatId: str  # noqa: N815
    parentId: str | None = None  # noqa: N815 (the query it follows; none for a first turn: chat/branches.py)
    prompt: str
    model: str
    response: str
    status: str
    error: str
    metadata: dict[str, Any]
    createdAt: str  # noqa: N815
    updatedAt: str  # noqa: N815


class DocumentOut(OpenSchema):
    id: int
    chatId: str  # noqa: N815
    name: str
    kind: str
    mime: str
    size: int
    pages: int
    status: str
    error: str
    notes: list[Any]


class TurnOut(OpenSchema):
    chatQuery: QueryOut  # noqa: N815
    chat: ChatOut


class StopOut(OpenSchema):
    stopped: bool
    queryId: str  # noqa: N815


class CatalogModelOut(OpenSchema):
    name: str
    fullName: str  # noqa: N815
    provider: str
    available: bool
    unavailableReason: str | None = None  # noqa: N815


class ModelsOut(OpenSchema):
    models: list[CatalogModelOut]


class ChatsOut(OpenSchema):
    chats: list[ChatOut]


class SiblingsOut(OpenSchema):
    """The versions of one turn (regenerated answers, edited prompts), oldest first; `index` is this one's."""

    ids: list[str]
    index: int
    count: int


class BranchQueryOut(QueryOut):
    siblings: SiblingsOut


class BranchLinksOut(OpenSchema):
    """How to reach the versions not shown ({queryId} is a query's id)."""

    about: str
    branch: str
    tree: str
    select: str
    regenerate: str
    edit: str


class ChatDetailOut(OpenSchema):
    chat: ChatOut
    queries: list[BranchQueryOut]  # the branch shown (or the one ending at ?leaf=), first turn first
    branches: BranchLinksOut
    documents: list[DocumentOut]


class BranchOut(OpenSchema):
    chat: ChatOut
    queries: list[BranchQueryOut]
    branches: BranchLinksOut


class TreeQueryOut(QueryOut):
    selected: bool  # the version shown at its fork when its branch is
    shown: bool  # on the branch shown now


class TreeOut(OpenSchema):
    chat: ChatOut
    queries: list[TreeQueryOut]  # every query of the chat, oldest first


class DocumentsOut(OpenSchema):
    documents: list[DocumentOut]


class ChatOnlyOut(OpenSchema):
    chat: ChatOut


class ShareOut(OpenSchema):
    chat: ChatOut
    publicUrl: str | None  # noqa: N815


class PublicQueryOut(OpenSchema):
    prompt: str
    response: str
    model: str
    status: str
    createdAt: str  # noqa: N815


class PublicChatOut(OpenSchema):
    chat: dict[str, Any]
    queries: list[PublicQueryOut]
