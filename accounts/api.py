from ninja import Router

from billing.quota import usage_meters
from chat.schemas import ChatsOut
from chat.services import bookmarked_chats
from core.schemas import OpenSchema, errors


class UsageOut(OpenSchema):
    kind: str
    label: str
    used: int
    limit: int | None
    resetsOn: str  # noqa: N815 (wire names are camelCase)


class UserOut(OpenSchema):
    id: int
    email: str
    clerkId: str | None  # noqa: N815
    product: str | None
    createdAt: str  # noqa: N815
    usage: list[UsageOut]


router = Router(tags=["user"])


@router.get("", response={200: UserOut, **errors(401)}, summary="The caller's account")
def get_user(request):
    user = request.auth
    return {
        "id": user.pk,
        "email": user.email,
        "clerkId": user.clerk_id,
        "product": user.product.name if user.product_id else None,
        "createdAt": user.date_joined.isoformat(),
        "usage": usage_meters(user),
    }


@router.get(
    "/bookmarked-chats",
    response={200: ChatsOut, **errors(400, 401)},
    summary="The caller's bookmarked chats, newest first, a page at a time (?before=<nextCursor>&limit=1..200)",
)
def get_bookmarked_chats(request, before: str | None = None, limit: str | None = None):
    page = bookmarked_chats(request.auth, before, limit)
    return {"chats": [chat.as_dict() for chat in page], "nextCursor": page.next_cursor}
