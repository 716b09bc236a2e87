"""How socket clients see pipeline events: JSON frames for API clients, HTMX out-of-band fragments for the UI."""

import json
import re

from asgiref.sync import sync_to_async
from django.template.loader import render_to_string
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from chat.models import Chat
from chat.services import ChatNotFound, chat_documents, chats_for_sidebar, parse_chat_id

# [1], [W2], and groups such as [1, 3] or [1][W2]: how the grounding instructions ask models to cite.
_CITATION = re.compile(r"\[((?:W?\d{1,3})(?:\s*,\s*W?\d{1,3})*)\]")


def render_answer(query_id, text: str, sources: list[dict] | None) -> SafeString:
    """The answer as HTML: escaped text (the model's output is untrusted), with each [n] marker that names one of
    the answer's sources linked to that entry of the source list under it. Other brackets stay plain text."""
    escaped = str(escape(text or ""))
    refs = {str(source.get("ref")) for source in sources or ()}
    if not refs:
        return mark_safe(escaped)

    def link(match: re.Match) -> str:
        parts = [part.strip() for part in match.group(1).split(",")]
        if not all(part in refs for part in parts):
            return match.group(0)
        links = ", ".join(f'<a class="cite" href="#source-{query_id}-{part}">{part}</a>' for part in parts)
        return f"[{links}]"

    return mark_safe(_CITATION.sub(link, escaped))


class JsonFramer:
    async def started(self, query) -> list[str]:
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
    def __init__(self, user):
        self.user = user

    def _render(self, template: str, context: dict) -> str:
        return render_to_string(template, context)

    async def _sidebar(self, active_chat_id) -> str:
        def render():
            return self._render(
                "chat/_sidebar.html",
                {"chats": list(chats_for_sidebar(self.user)), "active_chat_id": active_chat_id, "oob": True},
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

    async def resumed(self, query_id) -> list[str]:
        # The page showed the answer as saved; the replay that follows rebuilds it exactly.
        return [f'<div id="answer-{query_id}" class="answer" hx-swap-oob="outerHTML"></div>']

    async def frames(self, query_id, event: dict) -> list[str]:
        kind = event["type"]
        if kind == "content":
            return [f'<div hx-swap-oob="beforeend:#answer-{query_id}">{escape(event["content"])}</div>']
        if kind == "status":
            return [_status(query_id, event["message"])]
        if kind == "sources":
            context = {"sources": event["sources"], "query_id": query_id, "oob": True}
            return [self._render("chat/_sources.html", context)]
        if kind == "metadata":
            chat_id = event["chatId"]
            return [
                f'<input type="hidden" id="chat-id" name="chatId" value="{escape(chat_id)}" hx-swap-oob="true">',
                f'<div id="chat-location" data-url="/chat/{escape(chat_id)}/" hx-swap-oob="true"></div>',
                await self._sidebar(chat_id),
            ]
        if kind == "complete":
            label = "Stopped." if event["status"] == "stopped" else ""
            frames = [_status(query_id, label), _controls_cleared(query_id)]
            metadata = event["query"]["metadata"]
            images = metadata.get("images")
            if images:
                frames.append(self._render("chat/_images.html", {"images": images, "query_id": query_id, "oob": True}))
            if metadata.get("sources"):
                # The streamed text again, now with its [n] markers linked to the source list.
                answer = render_answer(query_id, event["query"]["response"], metadata["sources"])
                frames.append(f'<div id="answer-{query_id}" class="answer" hx-swap-oob="outerHTML">{answer}</div>')
            if metadata.get("files") or metadata.get("sources"):
                frames.append(await self._documents(event["query"]["chatId"]))
            return frames + [await self._sidebar(event["query"]["chatId"])]
        if kind == "error":
            return [_status(query_id, event["message"], "status error"), _controls_cleared(query_id)]
        return []

    async def refusal(self, message: str, code: str) -> list[str]:
        return [f'<div id="composer-error" class="composer-error" hx-swap-oob="outerHTML">{escape(message)}</div>']
