"""How socket clients see pipeline events: JSON frames for API clients, HTMX out-of-band fragments for the UI."""

import json

from asgiref.sync import sync_to_async
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from chat.branches import SHAPE_FIELDS, chat_tree
from chat.library import sidebar_context
from chat.markdown import render_markdown
from chat.models import Chat
from chat.services import (
    ChatError,
    ChatNotFound,
    chat_documents,
    get_owned_query,
    parse_chat_id,
    parse_query_id,
)


def render_answer(query_id, text: str, sources: list[dict] | None) -> SafeString:
    """The answer as HTML: its Markdown rendered and sanitised (chat/markdown.py: the model's output is
    untrusted), with each [n] marker that names one of the answer's sources linked to that entry of the source list
    under it. Other brackets stay plain text."""
    refs = [source.get("ref") for source in sources or ()]
    return mark_safe(f'<div class="markdown">{render_markdown(text or "", query_id, refs)}</div>')


def answer_element(query_id, text: str, sources: list[dict] | None) -> str:
    """The whole answer element, rendered, replacing the text that streamed into it."""
    answer = render_answer(query_id, text, sources)
    return f'<div id="answer-{escape(query_id)}" class="answer" hx-swap-oob="outerHTML">{answer}</div>'


class JsonFramer:
    temporary = False  # set by the socket for a temporary chat's turn

    async def started(self, query) -> list[str]:
        return []

    async def branched(self, query, replaced_id) -> list[str]:
        return []

    async def resumed(self, query_id) -> list[str]:
        return []

    async def frames(self, query_id, event: dict) -> list[str]:
        return [json.dumps(event)]

    async def refusal(self, message: str, code: str) -> list[str]:
        return [json.dumps({"type": "error", "message": message, "code": code})]


def _status(query_id, message: str, css: str = "status") -> str:
    return f'<div id="status-{query_id}" class="{css}" hx-swap-oob="outerHTML">{escape(message)}</div>'


def _controls_cleared(query_id) -> str:
    return f'<div id="controls-{query_id}" class="turn-controls" hx-swap-oob="outerHTML"></div>'


class HtmxFramer:
    temporary = False  # a temporary chat's turn: the address bar stays on /chat/ (the chat has no page)

    def __init__(self, user):
        self.user = user
        # What streamed so far, per turn: an `error` event carries no text, yet the answer is then rendered too.
        self._streamed: dict[str, list[str]] = {}
        self._sources: dict[str, list[dict]] = {}
        self._models: dict[str, str] = {}

    def _render(self, template: str, context: dict) -> str:
        return render_to_string(template, context)

    async def _sidebar(self, active_chat_id) -> str:
        def render():
            return self._render(
                "chat/_sidebar.html",
                {**sidebar_context(self.user, active_chat_id=active_chat_id), "oob": True},
            )

        return await sync_to_async(render)()

    async def _documents(self, chat_id) -> str:
        def render():
            try:
                chat = Chat.objects.filter(pk=parse_chat_id(chat_id), owner=self.user).first()
            except ChatNotFound:
                chat = None
            documents = list(chat_documents(chat)) if chat else []
            return self._render("chat/_documents.html", {"documents": documents, "chat": chat, "oob": True})

        return await sync_to_async(render)()

    async def started(self, query) -> list[str]:
        turn = self._render("chat/_turn.html", {"q": query, "live": True})
        # A first turn sent from /chat/ has no header yet: rename, share, bookmark and delete appear with the chat.
        header = self._render("chat/_header.html", {"chat": query.chat, "oob": True})
        return [
            f'<div id="messages" hx-swap-oob="beforeend">{turn}</div>',
            header,
            '<div id="empty-state" hx-swap-oob="outerHTML"></div>',
            '<div id="composer-error" class="composer-error" hx-swap-oob="outerHTML"></div>',
            # The staged files went with the message.
            self._render("chat/_attachments.html", {"attachments": [], "oob": True}),
        ]

    async def branched(self, query, replaced_id) -> list[str]:
        """A regenerate or edit started: the new version takes the place of the one shown (`replaced_id`), and the
        turns that followed that one go (they stay reachable with the ‹ › controls)."""

        def render():
            tree = chat_tree(query.chat_id)
            replaced = tree.queries.get(parse_query_id(replaced_id))
            gone = [q.pk for q in tree.descend(replaced)] if replaced else []
            new = tree.annotate([tree.queries[query.pk]])[0]
            turn = self._render("chat/_turn.html", {"q": new, "live": True})
            anchor = f"#turn-{replaced_id}" if replaced else "#messages"
            where = "afterend" if replaced else "beforeend"
            return [
                f'<div hx-swap-oob="{where}:{anchor}">{turn}</div>',
                *(f'<div id="turn-{query_id}" hx-swap-oob="delete"></div>' for query_id in gone),
            ]

        return [
            *await sync_to_async(render)(),
            '<div id="composer-error" class="composer-error" hx-swap-oob="outerHTML"></div>',
        ]

    async def resumed(self, query_id) -> list[str]:
        # The page showed the answer as saved; the replay that follows rebuilds it exactly.
        self._streamed.pop(str(query_id), None)
        return [f'<div id="answer-{query_id}" class="answer" hx-swap-oob="outerHTML"></div>']

    async def frames(self, query_id, event: dict) -> list[str]:
        kind = event["type"]
        if kind == "content":
            self._streamed.setdefault(str(query_id), []).append(event["content"])
            return [f'<div hx-swap-oob="beforeend:#answer-{query_id}">{escape(event["content"])}</div>']
        if kind == "status":
            return [_status(query_id, event["message"])]
        if kind == "sources":
            self._sources[str(query_id)] = event["sources"]
            context = {"sources": event["sources"], "query_id": query_id, "oob": True}
            return [self._render("chat/_sources.html", context)]
        if kind == "metadata":
            chat_id = event["chatId"]
            self._models[str(query_id)] = event.get("model") or ""
            chat_url = "" if self.temporary else reverse("chat:chat", args=[chat_id])
            return [
                f'<input type="hidden" id="chat-id" name="chatId" value="{escape(chat_id)}" hx-swap-oob="true">',
                f'<div id="chat-location" data-url="{escape(chat_url)}" hx-swap-oob="true"></div>',
                await self._sidebar(chat_id),
            ]
        if kind == "complete":
            label = "Stopped." if event["status"] == "stopped" else ""
            frames = [_status(query_id, label), _controls_cleared(query_id)]
            metadata = event["query"]["metadata"]
            images = metadata.get("images")
            if images:
                frames.append(self._render("chat/_images.html", {"images": images, "query_id": query_id, "oob": True}))
            # The streamed text again, now rendered as Markdown, with its [n] markers linked to the source list.
            frames.append(answer_element(query_id, event["query"]["response"], metadata.get("sources")))
            frames.append(self._answer_foot(query_id, event["query"]))
            frames.extend(await self._prompt_block(query_id))
            if metadata.get("files") or metadata.get("sources"):
                frames.append(await self._documents(event["query"]["chatId"]))
            return frames + [await self._sidebar(event["query"]["chatId"])]
        if kind == "error":
            frames = [_status(query_id, event["message"], "status error"), _controls_cleared(query_id)]
            streamed = "".join(self._streamed.get(str(query_id), ()))
            if streamed:
                # The partial answer is kept (and saved): shown rendered, like a finished one.
                frames.append(answer_element(query_id, streamed, self._sources.get(str(query_id))))
                query = {"response": streamed, "status": "error", "model": self._models.get(str(query_id), "")}
                frames.append(self._answer_foot(query_id, query))
            return frames + await self._prompt_block(query_id)
        return []

    async def _prompt_block(self, query_id) -> list[str]:
        """The prompt with the controls of an ended turn: its edit button, and ‹ n / m › once it has versions (a
        turn added live was rendered while streaming, without them)."""

        def render():
            try:
                query = get_owned_query(self.user, query_id)
            except ChatError:
                return []  # the chat was deleted meanwhile: nothing left to update
            query.versions = chat_tree(query.chat_id, SHAPE_FIELDS).versions_of(query)
            return [self._render("chat/_prompt_block.html", {"q": query, "oob": True})]

        return await sync_to_async(render)()

    def _answer_foot(self, query_id, query: dict) -> str:
        return self._render("chat/_answer_foot.html", {"q": query, "query_id": query_id, "oob": True})

    async def refusal(self, message: str, code: str) -> list[str]:
        return [f'<div id="composer-error" class="composer-error" hx-swap-oob="outerHTML">{escape(message)}</div>']
