"""HTMX pages. Each view parses and authorises, calls one service, renders."""

from functools import wraps

from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.views.decorators.http import require_GET, require_POST

from chat import services, websearch
from chat.catalog import catalog, default_model_name
from chat.fragments import render_answer
from chat.services import ChatError, ChatNotFound


def home(request):
    return redirect("chat:new" if request.user.is_authenticated else "accounts:login")


def _page_context(request, chat=None) -> dict:
    queries = list(services.chat_history(chat)) if chat else []
    for query in queries:
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
    response["HX-Redirect"] = "/chat/"
    return response


@require_GET
def public_chat_page(request, chat_id):
    try:
        chat = services.public_chat(chat_id)
    except ChatNotFound:
        raise Http404("This chat is not shared.") from None
    return render(request, "chat/public.html", {"chat": chat, "queries": list(services.chat_history(chat))})


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
