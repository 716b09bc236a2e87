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
    folderId: int | None = None  # noqa: N815 (the folder it is filed in; null: none)
    assistantId: int | None = None  # noqa: N815 (the assistant it was started from; null: none)
    tags: list[str] = []  # sorted, lower case
    pinned: bool = False  # listed before the other chats
    createdAt: str  # noqa: N815
    updatedAt: str  # noqa: N815


class FolderOut(OpenSchema):
    id: int
    name: str
    position: int  # sidebar order, lowest first
    createdAt: str  # noqa: N815
    chats: int  # how many chats it holds


class FoldersOut(OpenSchema):
    folders: list[FolderOut]  # in sidebar order


class FolderOnlyOut(OpenSchema):
    folder: FolderOut


class TagOut(OpenSchema):
    name: str
    chats: int  # how many chats carry it


class TagsOut(OpenSchema):
    tags: list[TagOut]  # by name


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
    vision: bool = False  # the model sees images (attached images are sent to it as images, besides their OCR)
    available: bool
    unavailableReason: str | None = None  # noqa: N815


class ModelsOut(OpenSchema):
    models: list[CatalogModelOut]


class ChatsOut(OpenSchema):
    chats: list[ChatOut]  # one page, newest activity first
    # The next page: pass it back as ?before=; null on the last page.
    nextCursor: str | None = None  # noqa: N815


class SearchResultOut(OpenSchema):
    """One chat matching a search, at its best-matching turn (GET /api/v1/chat/search)."""

    chatId: str  # noqa: N815
    title: str
    titleHtml: str  # noqa: N815 (the title, HTML-escaped, the matching words in <mark>)
    queryId: str | None = None  # noqa: N815 (the matching turn; null when only the title matched)
    matchedIn: str  # noqa: N815 ("title", "prompt" or "response")
    snippet: str | None = None  # a few words around the first match, plain text
    snippetHtml: str | None = None  # noqa: N815 (the same, HTML-escaped, the matching words in <mark>)
    url: str  # the chat's page, opened at the matching turn
    bookmarked: bool
    updatedAt: str  # noqa: N815


class SearchOut(OpenSchema):
    query: str
    results: list[SearchResultOut]  # best match first; newest first among equals
    nextCursor: str | None = None  # noqa: N815 (pass as `cursor` for the next page; null: no more)


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
    # The newest turns of the branch shown (or of the one ending at ?leaf=), oldest first, a page at a time
    queries: list[BranchQueryOut]
    nextCursor: str | None = None  # noqa: N815 (?before= this for the turns above the page; null: it starts at the first)
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


class ImportOut(OpenSchema):
    """What an import wrote: the chats (owned by the caller, new ids) and how many turns they hold."""

    format: str  # "querynox" or "chatgpt": what the file was read as
    chats: list[ChatOut]
    queries: int  # turns written, every version of every turn


class ExportChatInfoOut(OpenSchema):
    id: str
    title: str
    chatName: str  # noqa: N815
    model: str
    systemPrompt: str  # noqa: N815
    webSearch: bool  # noqa: N815
    createdAt: str  # noqa: N815
    updatedAt: str  # noqa: N815


class ExportQueryOut(OpenSchema):
    id: str
    parentId: str | None = None  # noqa: N815 (the query it follows; none for a first turn)
    selected: bool  # the version shown at its fork
    prompt: str
    response: str
    model: str
    systemPrompt: str  # noqa: N815
    webSearch: bool  # noqa: N815
    status: str
    error: str
    metadata: dict[str, Any]
    createdAt: str  # noqa: N815
    updatedAt: str  # noqa: N815


class ChatExportOut(OpenSchema):
    """A chat as QueryNox's JSON export (chat/portability.py), which POST /api/v1/chat/import reads back."""

    format: str  # "querynox.chat"
    version: int
    exportedAt: str  # noqa: N815
    chat: ExportChatInfoOut
    queries: list[ExportQueryOut]  # every version of every turn, oldest first


class AssistantDocumentOut(OpenSchema):
    id: int
    name: str
    kind: str
    mime: str
    size: int
    pages: int
    status: str  # processing | ready | failed
    error: str  # why a failed file could not be used
    notes: list[Any]
    createdAt: str  # noqa: N815


class AssistantOut(OpenSchema):
    id: int
    name: str
    systemPrompt: str  # noqa: N815
    model: str
    webSearch: bool  # noqa: N815
    published: bool  # offered to every user (staff set it in admin)
    mine: bool  # the caller's own (only its owner may change it)
    createdAt: str  # noqa: N815
    updatedAt: str  # noqa: N815
    documents: list[AssistantDocumentOut] = []  # the documents its chats can cite


class AssistantsOut(OpenSchema):
    assistants: list[AssistantOut]  # the caller's, then the published ones, by name


class AssistantOnlyOut(OpenSchema):
    assistant: AssistantOut


class AssistantDocumentsOut(OpenSchema):
    assistant: AssistantOut
    documents: list[AssistantDocumentOut]  # the files of this request, in order
