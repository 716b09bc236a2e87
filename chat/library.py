"""Folders, tags and pins: how a user files their chats (the sidebar, the chat's menu and /api/v1/chat/folders …).

Every change is the owner's alone: someone else's chat or folder is "not found" (404), never "forbidden". Filing,
tagging or pinning is not activity: a chat's place among the newest does not move (its updated_at stays)."""

import re

from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.utils import timezone

from chat.models import Chat, Folder, Tag
from chat.services import (
    ChatError,
    ChatPage,
    chat_page,
    chats_for_sidebar,
    check_encodable,
    get_owned_chat,
    parse_bool,
    parse_row_id,
)

FOLDER_NAME_CHARS = 60
MAX_FOLDERS = 200
TAG_CHARS = 30
MAX_TAGS_PER_CHAT = 20
# Letters and digits of any script, "-" and "_"; stored lower case, so "Work" and "work" are one tag.
_TAG = re.compile(r"^[\w-]+$")
UNFILED = "none"  # ?folder=none: the chats in no folder


class FolderNotFound(ChatError):
    def __init__(self):
        super().__init__("Folder not found.", code="not_found", status=404)


# --- folders ----------------------------------------------------------------------------------------------------


def check_folder_name(name) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ChatError("The folder name is empty.", code="invalid_folder_name")
    check_encodable(name, "folder name")
    name = " ".join(name.split())
    if len(name) > FOLDER_NAME_CHARS:
        raise ChatError(f"Folder names are at most {FOLDER_NAME_CHARS} characters.", code="invalid_folder_name")
    return name


def parse_folder_id(value) -> int:
    """A folder's id; what is not one is as not found as an id nobody has."""
    return parse_row_id(value, FolderNotFound)


def get_owned_folder(user, folder_id, for_update: bool = False) -> Folder:
    folders = Folder.objects.select_for_update() if for_update else Folder.objects.all()
    folder = folders.filter(owner=user, pk=parse_folder_id(folder_id)).first()
    if folder is None:
        raise FolderNotFound()
    return folder


def user_folders(user) -> list[Folder]:
    """The user's folders in sidebar order, each with `chat_count` (listed chats only), in one SQL query."""
    return list(
        Folder.objects.filter(owner=user).annotate(chat_count=Count("chats", filter=Q(chats__unlisted=False)))
    )


def folder_as_dict(folder: Folder) -> dict:
    count = getattr(folder, "chat_count", None)
    if count is None:
        count = folder.chats.filter(unlisted=False).count()
    return {**folder.as_dict(), "chats": count}


def _name_taken(user, name: str, except_id=None) -> bool:
    return Folder.objects.filter(owner=user, name__iexact=name).exclude(pk=except_id).exists()


def _taken_error(name: str) -> ChatError:
    return ChatError(f"You already have a folder named “{name}”.", code="folder_exists", status=409)


def do_create_folder(user, name) -> Folder:
    name = check_folder_name(name)
    with transaction.atomic():
        if Folder.objects.filter(owner=user).count() >= MAX_FOLDERS:
            raise ChatError(f"You can have at most {MAX_FOLDERS} folders.", code="too_many_folders", status=409)
        if _name_taken(user, name):
            raise _taken_error(name)
        last = Folder.objects.filter(owner=user).order_by("-position").values_list("position", flat=True).first()
        try:
            with transaction.atomic():  # the unique constraint settles a race between two creates
                return Folder.objects.create(owner=user, name=name, position=(last or 0) + 1)
        except IntegrityError:
            raise _taken_error(name) from None


def do_rename_folder(user, folder_id, name) -> Folder:
    name = check_folder_name(name)
    with transaction.atomic():
        folder = get_owned_folder(user, folder_id, for_update=True)
        if _name_taken(user, name, except_id=folder.pk):
            raise _taken_error(name)
        folder.name = name
        try:
            with transaction.atomic():
                folder.save(update_fields=["name"])
        except IntegrityError:
            raise _taken_error(name) from None
    return folder


def do_delete_folder(user, folder_id) -> None:
    """Delete the folder; its chats are kept, in no folder (Chat.folder is SET_NULL)."""
    with transaction.atomic():
        get_owned_folder(user, folder_id, for_update=True).delete()


def do_move_chat(user, chat_id, folder_id) -> Chat:
    """File the chat into one of the user's folders (None: into none). Someone else's folder is "not found"."""
    with transaction.atomic():
        chat = get_owned_chat(user, chat_id, for_update=True)
        folder = get_owned_folder(user, folder_id) if folder_id not in (None, "") else None
        chat.folder = folder
        Chat.objects.filter(pk=chat.pk).update(folder=folder)  # not activity: updated_at stays
    return chat


# --- tags -------------------------------------------------------------------------------------------------------


def check_tag(value) -> str:
    if not isinstance(value, str):
        raise ChatError("Each tag must be text.", code="invalid_tag")
    tag = value.strip().lstrip("#").lower()
    if not tag:
        raise ChatError("A tag is empty.", code="invalid_tag")
    if len(tag) > TAG_CHARS:
        raise ChatError(f"Tags are at most {TAG_CHARS} characters; “{tag[:TAG_CHARS]}…” is longer.", code="invalid_tag")
    check_encodable(tag, "tag")
    if not _TAG.match(tag):
        raise ChatError(
            f"“{tag}” is not a tag: use letters, digits, “-” and “_” (no spaces).", code="invalid_tag"
        )
    return tag


def check_tags(values) -> list[str]:
    """A chat's tags: a list of tag names (or, from the web form, one text of names separated by commas or
    spaces), normalised, each once, at most MAX_TAGS_PER_CHAT."""
    if isinstance(values, str):
        values = [part for part in re.split(r"[,\s]+", values) if part]
    if not isinstance(values, list | tuple):
        raise ChatError("tags must be a list of tag names.", code="invalid_tag")
    if len(values) > MAX_TAGS_PER_CHAT * 4:  # refused before each is checked: the list is bounded
        raise ChatError(f"A chat has at most {MAX_TAGS_PER_CHAT} tags.", code="too_many_tags")
    tags = list(dict.fromkeys(check_tag(value) for value in values))
    if len(tags) > MAX_TAGS_PER_CHAT:
        raise ChatError(f"A chat has at most {MAX_TAGS_PER_CHAT} tags; this is {len(tags)}.", code="too_many_tags")
    return tags


def do_set_tags(user, chat_id, values) -> Chat:
    """Replace the chat's tags; tags no chat of the user carries any more are forgotten."""
    names = check_tags(values)
    with transaction.atomic():
        chat = get_owned_chat(user, chat_id, for_update=True)
        existing = {tag.name: tag for tag in Tag.objects.filter(owner=user, name__in=names)}
        missing = [Tag(owner=user, name=name) for name in names if name not in existing]
        if missing:
            Tag.objects.bulk_create(missing, ignore_conflicts=True)
            existing = {tag.name: tag for tag in Tag.objects.filter(owner=user, name__in=names)}
        chat.tags.set([existing[name] for name in names])
        Tag.objects.filter(owner=user, chats__isnull=True).delete()
    return Chat.objects.prefetch_related("tags").get(pk=chat.pk)


def user_tags(user) -> list[dict]:
    """The user's tags with how many listed chats carry each, by name, in one SQL query."""
    tags = Tag.objects.filter(owner=user).annotate(chat_count=Count("chats", filter=Q(chats__unlisted=False)))
    return [{"name": tag.name, "chats": tag.chat_count} for tag in tags if tag.chat_count]


# --- pins -------------------------------------------------------------------------------------------------------


def do_set_pinned(user, chat_id, pinned: bool | None = None) -> Chat:
    """Pin (or, with None, toggle) the chat: pinned chats come first in the sidebar and the API's list."""
    with transaction.atomic():
        chat = get_owned_chat(user, chat_id, for_update=True)
        chat.pinned = (not chat.pinned) if pinned is None else bool(pinned)
        chat.pinned_at = timezone.now() if chat.pinned else None
        Chat.objects.filter(pk=chat.pk).update(pinned=chat.pinned, pinned_at=chat.pinned_at)
    return chat


# --- lists ------------------------------------------------------------------------------------------------------


def parse_pinned_filter(value) -> bool | None:
    """No value: no filter (where parse_bool would read "false")."""
    return None if value in (None, "") else parse_bool(value, "pinned")


def list_chats(user, before=None, limit=None, folder=None, tag=None, pinned=None) -> ChatPage:
    """A page of the user's chats, pinned first, then newest activity first (GET /api/v1/chat/user): all of them,
    or those of one folder (`folder`: its id, or "none" for the chats in no folder), with one tag, or
    (`pinned`) only the pinned or unpinned ones. One query for the page and one for its tags, whatever the
    numbers of chats, folders and tags."""
    chats = Chat.objects.owned_by(user)
    if folder not in (None, ""):
        if folder == UNFILED:
            chats = chats.filter(folder__isnull=True)
        else:
            chats = chats.filter(folder=get_owned_folder(user, folder))
    if tag not in (None, ""):
        chats = chats.filter(tags__owner=user, tags__name=check_tag(tag))
    pinned = parse_pinned_filter(pinned)
    if pinned is not None:
        chats = chats.filter(pinned=pinned)
    return chat_page(chats, before, limit, pinned_first=True)


def sidebar_context(user, before=None, active_chat_id: str = "", folder=None, tag=None, limit=None) -> dict:
    """What the sidebar shows: with `tag`, that tag's chats; with `folder`, that folder's chats (what opening it
    loads); otherwise the folders and the main list (chats_for_sidebar). A constant number of SQL queries."""
    context = {"active_chat_id": active_chat_id, "tag": "", "folder": None, "folders": []}
    if tag not in (None, ""):
        context["tag"] = check_tag(tag)
        context["chats"] = list_chats(user, before, limit, tag=context["tag"])
    elif folder not in (None, ""):
        context["folder"] = get_owned_folder(user, folder)
        in_folder = Chat.objects.owned_by(user).filter(folder=context["folder"])
        context["chats"] = chat_page(in_folder, before, limit, pinned_first=True)
    else:
        context["chats"] = chats_for_sidebar(user, before, limit)
        if before in (None, ""):
            context["folders"] = user_folders(user)
    return context


def chat_menu(user, chat_id) -> tuple[Chat, list[Folder]]:
    """The chat (with its tags) and the folders its menu can move it to."""
    chat = get_owned_chat(user, chat_id)
    chat = Chat.objects.select_related("folder").prefetch_related("tags").get(pk=chat.pk)
    return chat, list(Folder.objects.filter(owner=user).only("id", "name", "position", "created_at"))
