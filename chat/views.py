"""HTMX pages. Each view parses and authorises, calls one service, renders."""

from functools import wraps

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import SuspiciousOperation
from django.http import FileResponse, Http404, HttpResponse
from django.http.multipartparser import MultiPartParserError
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_GET, require_POST

from chat import assistants, library, portability, services, websearch
from chat.catalog import catalog, default_model_name
from chat.fragments import render_answer
from chat.services import ChatError, ChatNotFound
from core.ratelimit import allow, client_ip, wait_text

PUBLIC_CHAT_RATE_SCOPE = "public-chat"  # shared with the public API's endpoint


def home(request):
    return redirect("chat:new" if request.user.is_authenticated else "accounts:login")


def _page_context(request, chat=None, queries=None) -> dict:
    older_cursor = None
    if queries is None and chat is not None:
        # The newest turns of the branch shown; older ones load as the reader scrolls up (chat_turns).
        page = services.chat_history_page(chat)
        queries, older_cursor = list(page), page.next_cursor
    queries = queries or []
    _render_answers(queries)
    return {
        "older_cursor": older_cursor,
        "chats": services.chats_for_sidebar(request.user),
        "folders": library.user_folders(request.user),
        "active_chat_id": str(chat.pk) if chat else "",
        "chat": chat,
        "queries": queries,
        "documents": list(services.chat_documents(chat)) if chat else [],
        "assistant_documents": assistants.documents_for_chat(chat),
        "catalog": catalog(),
        "selected_model": chat.model if chat else default_model_name(),
        "web_search_unavailable": websearch.unavailable_reason(),
    }


def _render_answers(queries) -> None:
    for query in queries:
        # A turn still streaming shows its saved text as text: the socket's replay appends to it, then renders it.
        if query.status != query.Status.STREAMING:
            query.answer_html = render_answer(query.id, query.response, query.metadata.get("sources"))


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
    """A chat; with ?query=<query id> (a search result), the branch showing that turn, whichever version it is."""
    chat = _owned_or_404(request, chat_id)
    queries = None
    if request.GET.get("query"):
        try:
            queries = services.chat_history_showing(chat, request.GET["query"])
        except ChatError:
            queries = None  # a turn since deleted (or not of this chat): the chat as it is shown
    return render(request, "chat/page.html", _page_context(request, chat, queries))


@login_required
@require_GET
def chat_turns(request, chat_id):
    """The turns above ?before=<query id> on its branch, a page of them, oldest first, with the marker that loads
    the page above them (what scrolling up to the top of the conversation loads)."""
    chat = _owned_or_404(request, chat_id)
    if not request.GET.get("before"):
        return HttpResponse("before (the marker's cursor) is required.", status=400, content_type="text/plain")
    try:
        page = services.chat_history_page(chat, before=request.GET["before"])
    except ChatError as exc:
        return HttpResponse(exc.message, status=exc.status, content_type="text/plain; charset=utf-8")
    _render_answers(page)
    context = {"chat": chat, "queries": list(page), "older_cursor": page.next_cursor}
    return render(request, "chat/_older_turns.html", context)


@login_required
@require_GET
def search(request):
    """The sidebar's search results as the user types (a page of them; scrolling to the end loads the next)."""
    query = request.GET.get("q", "")
    if not query.strip():
        return HttpResponse("")  # nothing typed: the chat list shows again
    try:
        page = services.search_chats(request.user, query, request.GET.get("cursor"))
    except ChatError as exc:
        return render(request, "chat/_search_results.html", {"error": exc.message})
    context = {"results": page.results, "next_cursor": page.next_offset, "q": query}
    context["more_page"] = bool(request.GET.get("cursor"))
    return render(request, "chat/_search_results.html", context)


def _list_page(request, chats_of):
    """A page of a chat list, or the 400 for a malformed cursor or page size."""
    try:
        return chats_of(request.user, request.GET.get("before"), request.GET.get("limit"))
    except ChatError as exc:
        return HttpResponse(exc.message, status=exc.status, content_type="text/plain; charset=utf-8")


@login_required
@require_GET
def bookmarked(request):
    """The bookmarked chats; with ?before=<cursor>, only the next page's items (what scrolling to the end loads)."""
    chats = _list_page(request, services.bookmarked_chats)
    if isinstance(chats, HttpResponse):
        return chats
    template = "chat/_bookmarks_page.html" if request.GET.get("before") else "chat/bookmarked.html"
    return render(request, template, {"chats": chats})


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
    """The chat list (with the folders); with ?before=<cursor>, only the next page's links (what scrolling to its
    end loads); with ?folder=<id>, a folder's chats (what opening it loads); with ?tag=<tag>, that tag's chats."""
    try:
        context = library.sidebar_context(
            request.user,
            request.GET.get("before"),
            request.GET.get("active", ""),
            folder=request.GET.get("folder"),
            tag=request.GET.get("tag"),
            limit=request.GET.get("limit"),
        )
    except ChatError as exc:
        return HttpResponse(exc.message, status=exc.status, content_type="text/plain; charset=utf-8")
    page_only = request.GET.get("before") or request.GET.get("folder")
    return render(request, "chat/_sidebar_page.html" if page_only else "chat/_sidebar.html", context)


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


# --- export and import (chat/portability.py) -------------------------------------------------------------------


def export_chat_response(chat, export_format: str) -> HttpResponse:
    """A chat as a download: "json" (every version of every turn, importable again) or "markdown" (the branch
    shown). Shared with the API (chat/api.py)."""
    if export_format == "markdown":
        body = portability.export_markdown(chat, services.chat_history(chat))
        content_type, extension = "text/markdown; charset=utf-8", "md"
    elif export_format == "json":
        body, content_type, extension = portability.export_json(chat), "application/json", "json"
    else:
        raise ChatError("format must be json or markdown.", code="invalid_field")
    response = HttpResponse(body, content_type=content_type)
    response["Content-Disposition"] = content_disposition_header(True, portability.export_filename(chat, extension))
    response["Cache-Control"] = "private, no-store"
    return response


def export_all_response(user) -> FileResponse:
    """All of the user's chats as a ZIP of JSON, built in a temporary file (bounded memory) and streamed from it."""
    archive = portability.export_zip(user)
    filename = f"querynox-chats-{timezone.now():%Y-%m-%d}.zip"
    response = FileResponse(archive, content_type="application/zip", as_attachment=True, filename=filename)
    response["Cache-Control"] = "private, no-store"
    return response


@login_required
@require_GET
def export_chat(request, chat_id):
    chat = _owned_or_404(request, chat_id)
    try:
        return export_chat_response(chat, request.GET.get("format", "json"))
    except ChatError as exc:
        return HttpResponse(exc.message, status=exc.status, content_type="text/plain; charset=utf-8")


@login_required
@require_GET
def export_all(request):
    return export_all_response(request.user)


@login_required
@require_POST
def import_chats(request):
    """The account page's import form (multipart, `file`): the chats written, or why nothing was."""
    context = {"chats": [], "error": "", "plan": None}
    status = 200
    try:
        upload = request.FILES.get("file")
        if upload is None:
            raise ChatError("Choose an export file to import.", code="invalid_field")
        context["plan"], context["chats"] = portability.import_chats(request.user, upload, (upload.name or "")[:200])
    except (MultiPartParserError, SuspiciousOperation):
        context["error"], status = "The upload was malformed; try again.", 400
    except ChatError as exc:
        context["error"], status = exc.message, exc.status
    return render(request, "chat/import.html", context, status=status)



# --- folders, tags and pins (chat/library.py) -------------------------------------------------------------------
# The sidebar's folder forms answer the whole sidebar; the chat's Organize menu answers itself. A refusal is a 4xx
# whose body is the message, HTML-escaped (it may quote the user's input); static/js/library.js shows it.


def _refused(exc: ChatError) -> HttpResponse:
    return HttpResponse(escape(exc.message), status=exc.status, content_type="text/html; charset=utf-8")


def _sidebar_response(request) -> HttpResponse:
    active = request.POST.get("active", "")
    context = library.sidebar_context(request.user, active_chat_id=active if len(active) <= 36 else "")
    response = render(request, "chat/_sidebar.html", context)
    response["HX-Trigger"] = "folders-changed"  # an open chat's Organize menu lists the folders
    return response


def folder_action(view):
    """POST-only, logged-in; someone else's folder is a 404, a refused change a 4xx with its message."""

    @login_required
    @require_POST
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        try:
            return view(request, *args, **kwargs)
        except ChatError as exc:
            return _refused(exc)

    return wrapper


@folder_action
def create_folder(request):
    library.do_create_folder(request.user, request.POST.get("name"))
    return _sidebar_response(request)


@folder_action
def rename_folder(request, folder_id):
    library.do_rename_folder(request.user, folder_id, request.POST.get("name"))
    return _sidebar_response(request)


@folder_action
def delete_folder(request, folder_id):
    library.do_delete_folder(request.user, folder_id)
    return _sidebar_response(request)


def _menu(request, chat_id, error: str = "", status: int = 200) -> HttpResponse:
    chat, folders = library.chat_menu(request.user, chat_id)
    context = {"chat": chat, "folders": folders, "error": error}
    return render(request, "chat/_chat_menu.html", context, status=status)


def menu_action(change):
    """A change made from the chat's menu (or by dragging it onto a folder): the menu again, and the sidebar told."""

    @login_required
    @require_POST
    @wraps(change)
    def wrapper(request, chat_id):
        try:
            change(request, chat_id)
        except ChatNotFound:
            raise Http404("Chat not found") from None
        except ChatError as exc:
            if exc.status == 404:
                return _refused(exc)  # someone else's (or no) folder
            return _menu(request, chat_id, exc.message, exc.status)
        response = _menu(request, chat_id)
        response["HX-Trigger"] = "chats-changed"
        return response

    return wrapper


@login_required
@require_GET
def chat_menu(request, chat_id):
    try:
        return _menu(request, chat_id)
    except ChatNotFound:
        raise Http404("Chat not found") from None


@menu_action
def move_chat(request, chat_id):
    library.do_move_chat(request.user, chat_id, request.POST.get("folder") or None)


@menu_action
def set_tags(request, chat_id):
    library.do_set_tags(request.user, chat_id, request.POST.get("tags", ""))


@menu_action
def toggle_pin(request, chat_id):
    library.do_set_pinned(request.user, chat_id)


# --- assistants (chat/assistants.py) ----------------------------------------------------------------------------
# Plain forms (no script needed): each POST redirects to the page it changed, or re-renders it with the refusal and
# its 4xx. Someone else's unpublished assistant is a 404; a published one is shown read-only, and changing it a 403.


def _assistant_form(request) -> dict:
    return {
        "name": request.POST.get("name", ""),
        "systemPrompt": request.POST.get("system_prompt", ""),
        "model": request.POST.get("model") or None,
        "webSearch": request.POST.get("web_search") in ("on", "true", "1"),
    }


def _assistants_page(request, error: str = "", form: dict | None = None, status: int = 200) -> HttpResponse:
    context = {
        "assistants": list(assistants.visible_assistants(request.user)),
        "catalog": catalog(),
        "selected_model": (form or {}).get("model") or default_model_name(),
        "form": form or {},
        "error": error,
    }
    return render(request, "chat/assistants.html", context, status=status)


def _assistant_page(request, assistant, error: str = "", status: int = 200) -> HttpResponse:
    documents = assistants.assistant_documents(assistant)
    context = {
        "assistant": assistant,
        "mine": assistant.owner_id == request.user.pk,
        "documents": documents,
        "reading": any(document.status == "processing" for document in documents),
        "catalog": catalog(),
        "max_documents": assistants.MAX_DOCUMENTS,
        "error": error,
    }
    return render(request, "chat/assistant.html", context, status=status)


def _visible_assistant_or_404(request, assistant_id):
    try:
        return assistants.get_visible_assistant(request.user, assistant_id)
    except ChatError:
        raise Http404("Assistant not found") from None


@login_required
def assistants_page(request):
    """GET: the user's assistants and the published ones, and a form for a new one. POST: save that form."""
    if request.method == "GET":
        return _assistants_page(request)
    if request.method != "POST":
        return HttpResponse(status=405, headers={"Allow": "GET, POST"})
    form = _assistant_form(request)
    try:
        assistant = assistants.do_create_assistant(request.user, form)
    except ChatError as exc:
        return _assistants_page(request, exc.message, form, exc.status)
    return redirect("chat:assistant", assistant.pk)


@login_required
def assistant_page(request, assistant_id):
    """GET: the assistant (editable by its owner, read-only for others when published). POST: save its fields."""
    assistant = _visible_assistant_or_404(request, assistant_id)
    if request.method == "GET":
        return _assistant_page(request, assistant)
    if request.method != "POST":
        return HttpResponse(status=405, headers={"Allow": "GET, POST"})
    try:
        assistant = assistants.do_update_assistant(request.user, assistant_id, _assistant_form(request))
    except ChatError as exc:
        return _assistant_page(request, assistant, exc.message, exc.status)
    return redirect("chat:assistant", assistant.pk)


@login_required
@require_POST
def delete_assistant(request, assistant_id):
    assistant = _visible_assistant_or_404(request, assistant_id)
    try:
        assistants.do_delete_assistant(request.user, assistant_id)
    except ChatError as exc:
        return _assistant_page(request, assistant, exc.message, exc.status)
    return redirect("chat:assistants")


@login_required
@require_POST
def delete_assistant_document(request, assistant_id, document_id):
    assistant = _visible_assistant_or_404(request, assistant_id)
    try:
        assistants.do_delete_document(request.user, assistant_id, document_id)
    except ChatError as exc:
        return _assistant_page(request, assistant, exc.message, exc.status)
    return redirect("chat:assistant", assistant.pk)


@login_required
@require_POST
def add_assistant_documents(request, assistant_id):
    """Take the uploaded files into the assistant; they are read in the background (the page shows each file's
    status, and follows it while any is being read)."""
    assistant = _visible_assistant_or_404(request, assistant_id)
    try:
        files = [(file.name, file.read()) for file in request.FILES.getlist("files")]
        assistants.do_add_documents(request.user, assistant_id, files)
    except (MultiPartParserError, SuspiciousOperation):
        return _assistant_page(request, assistant, "The upload was malformed; try again.", 400)
    except ChatError as exc:
        return _assistant_page(request, assistant, exc.message, exc.status)
    return redirect("chat:assistant", assistant.pk)


@login_required
@require_POST
def start_assistant_chat(request, assistant_id):
    try:
        chat = assistants.do_start_chat(request.user, assistant_id)
    except ChatError:
        raise Http404("Assistant not found") from None
    return redirect("chat:chat", chat.pk)
