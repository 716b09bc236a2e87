"""HTMX pages. Each view parses and authorises, calls one service, renders."""

from functools import wraps

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from chat import services, websearch
from chat.catalog import catalog, default_model_name
from chat.fragments import render_answer
from chat.services import ChatError, ChatNotFound
from core.ratelimit import allow, client_ip, wait_text

PUBLIC_CHAT_RATE_SCOPE = "public-chat"  # shared with the public API's endpoint


def home(request):
    return redirect("chat:new" if request.user.is_authenticated else "accounts:login")


def _page_context(request, chat=None) -> dict:
    queries = list(services.chat_history(chat)) if chat else []
    for query in queries:
        # A turn still streaming shows its saved text as text: the socket's replay appends to it, then renders it.
        if query.status != query.Status.STREAMING:
            query.answer_html = render_answer(query.id, query.response, query.metadata.get("sources"))
    return {
        "chats": list(services.chats_for_sidebar(request.user)),
        "active_chat_id": str(chat.pk) if chat else "",
        "chat": chat,
        "queries": queries,
        "documents": list(services.chat_documents(chat)) if chat else [],
        "catalog": catalog(),
        "selected_model": chat.model if chat else default_model_name(),
        "web_search_unavailable": websearch.unavailable_reason(),
    }


def _owned_or_404(request, chat_id):
    try:
        return services.get_owned_chat(request.user, chat_id)
    except ChatNotFound:
        raise Http404("Chat not found") from None


@login_required
@require_GET
def new_chat(request):
    return render(request, "chat/page.html", _page_context(request))


@login_required
@require_GET
def chat_page(request, chat_id):
    return render(request, "chat/page.html", _page_context(request, _owned_or_404(request, chat_id)))


@login_required
@require_GET
def bookmarked(request):
    return render(request, "chat/bookmarked.html", {"chats": list(services.bookmarked_chats(request.user))})


def _chat_header(request, chat) -> HttpResponse:
    return render(request, "chat/_header.html", {"chat": chat})


def chat_action(view):
    """POST-only, logged-in; someone else's chat is a 404 and a refused change a 4xx with its message."""

    @login_required
    @require_POST
    @wraps(view)
    def wrapper(request, chat_id):
        try:
            return view(request, chat_id)
        except ChatNotFound:
            raise Http404("Chat not found") from None
        except ChatError as exc:
            return HttpResponse(exc.message, status=exc.status)

    return wrapper


@chat_action
def rename(request, chat_id):
    response = _chat_header(request, services.do_rename_chat(request.user, chat_id, request.POST.get("title")))
    response["HX-Trigger"] = "chats-changed"
    return response


@chat_action
def toggle_share(request, chat_id):
    return _chat_header(request, services.do_set_shared(request.user, chat_id))


@chat_action
def toggle_bookmark(request, chat_id):
    response = _chat_header(request, services.do_set_bookmarked(request.user, chat_id))
    response["HX-Trigger"] = "chats-changed"
    return response


@chat_action
def delete(request, chat_id):
    services.do_delete_chat(request.user, chat_id)
    response = HttpResponse(status=204)
    response["HX-Redirect"] = reverse("chat:new")
    return response


def query_action(view):
    """Logged-in; a query of someone else's (or of another chat) is a 404 "Answer not found.", and a refused change
    a 4xx with its message."""

    @login_required
    @wraps(view)
    def wrapper(request, chat_id, query_id):
        try:
            return view(request, chat_id, query_id)
        except ChatError as exc:
            return HttpResponse(exc.message, status=exc.status, content_type="text/plain; charset=utf-8")

    return wrapper


@query_action
@require_POST
def select_version(request, chat_id, query_id):
    """Show another version of a turn: the turn and the conversation below it, swapped for the version's branch."""
    hidden, shown = services.do_select_version(request.user, chat_id, query_id)
    for query in shown:
        if query.status != query.Status.STREAMING:
            query.answer_html = render_answer(query.id, query.response, query.metadata.get("sources"))
    html = "".join(render_to_string("chat/_turn.html", {"q": query}, request=request) for query in shown)
    # The version shown before replaces itself (the swap's target); the turns that followed it go.
    html += "".join(f'<div id="turn-{query.pk}" hx-swap-oob="delete"></div>' for query in hidden[1:])
    return HttpResponse(html)


@query_action
@require_GET
def edit_prompt(request, chat_id, query_id):
    """The inline editor for a turn's prompt (Save & send goes over the socket)."""
    query = services.get_chat_query(request.user, chat_id, query_id)
    return render(request, "chat/_prompt_editor.html", {"q": query})


@query_action
@require_GET
def prompt_block(request, chat_id, query_id):
    """The prompt as shown, with its controls (what Cancel puts back)."""
    query = services.query_on_branch(request.user, chat_id, query_id)
    return render(request, "chat/_prompt_block.html", {"q": query})


@require_GET
def public_chat_page(request, chat_id):
    # The public API's budget and counter (chat/api.py get_public_chat), counted before the id is looked up, so
    # neither door serves more, and guessing ids costs the same as reading.
    allowed, retry_after = allow(
        PUBLIC_CHAT_RATE_SCOPE, client_ip(request), settings.PUBLIC_CHAT_RATE_LIMIT, settings.PUBLIC_CHAT_RATE_WINDOW
    )
    if not allowed:
        response = HttpResponse(
            f"Too many requests; try again in {wait_text(retry_after)}.", status=429, content_type="text/plain"
        )
        response["Retry-After"] = str(retry_after)
        return response
    try:
        chat = services.public_chat(chat_id)
    except ChatNotFound:
        raise Http404("This chat is not shared.") from None
    queries = list(services.chat_history(chat))
    for query in queries:
        # No source list on the public page (the files are the owner's), so no [n] links either.
        query.answer_html = render_answer(query.id, query.response, None)
    return render(request, "chat/public.html", {"chat": chat, "queries": queries})


@login_required
@require_GET
def sidebar(request):
    active = request.GET.get("active", "")
    return render(
        request,
        "chat/_sidebar.html",
        {"chats": list(services.chats_for_sidebar(request.user)), "active_chat_id": active},
    )


def document_file_response(document) -> FileResponse:
    """The original file, shown in the browser where it can be (a PDF opens at #page=N), never run as a page."""
    try:
        handle = document.file.open("rb")
    except (ValueError, FileNotFoundError, OSError):
        raise ChatError("The file is no longer stored.", code="not_found", status=404) from None
    # Text is served as plain text whatever it holds, so an uploaded file can never act as HTML of this site.
    mime = "text/plain; charset=utf-8" if document.kind in ("text", "markdown") else document.mime
    response = FileResponse(handle, content_type=mime, as_attachment=False, filename=document.name)
    if document.kind != "pdf":  # Chrome's PDF viewer does not run in a sandboxed document
        response["Content-Security-Policy"] = "sandbox"
    response["Cache-Control"] = "private, max-age=3600"
    return response


@login_required
@require_GET
def document_file(request, chat_id, document_id):
    try:
        document = services.get_owned_document(request.user, chat_id, document_id)
        return document_file_response(document)
    except ChatError:
        raise Http404("File not found") from None


def _attachments_response(request, attachments, error: str = "", status: int = 200) -> HttpResponse:
    html = render_to_string("chat/_attachments.html", {"attachments": attachments, "error": error}, request=request)
    return HttpResponse(html, status=status)


@login_required
@require_POST
def attach(request):
    """Stage files picked or dropped in the composer: checked at once, kept until the message is sent."""
    attachment_ids = request.POST.getlist("attachments")
    new_files = [(file.name, file.read()) for file in request.FILES.getlist("files")]
    try:
        attachments = services.do_stage_attachments(request.user, attachment_ids, new_files)
    except ChatError as exc:
        # The files already staged stay, and the refusal is shown with them.
        try:
            kept = services.do_stage_attachments(request.user, attachment_ids, [])
        except ChatError:
            kept = []
        return _attachments_response(request, kept, exc.message, exc.status)
    return _attachments_response(request, attachments)


@login_required
@require_POST
def detach(request, attachment_id):
    services.do_discard_attachments(request.user, [attachment_id])
    return HttpResponse("")
