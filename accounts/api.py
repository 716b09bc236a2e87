from ninja import Router

from billing.quota import usage_meters
from chat.services import bookmarked_chats

router = Router(tags=["user"])


@router.get("", summary="The caller's account")
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


@router.get("/bookmarked-chats", summary="The caller's bookmarked chats, newest first")
def get_bookmarked_chats(request):
    return {"chats": [chat.as_dict() for chat in bookmarked_chats(request.auth)]}
