"""HTMX pages. Each view parses and authorises, calls one service, renders."""

from functools import wraps

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from chat import services
from chat.catalog import catalog, default_model_name
from chat.services import ChatError, ChatNotFound


def home(request):
    return redirect("chat:new" if request.user.is_authenticated else "accounts:login")


def _page_context(request, chat=None) -> dict:
    return {
        "chats": list(services.chats_for_sidebar(request.user)),
        "active_chat_id": str(chat.pk) if chat else "",
        "chat": chat,
        "queries": list(services.chat_history(chat)) if chat else [],
        "catalog": catalog(),
        "selected_model": chat.model if chat else default_model_name(),
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
