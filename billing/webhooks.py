"""Polar webhooks: verify the Standard Webhooks signature over the raw body, then apply each delivery once.

`check_signature` refuses (403) a delivery whose signature does not match POLAR_WEBHOOK_SECRET, whose headers are
missing or malformed, or whose timestamp is more than five minutes away from now (the standardwebhooks default),
which also stops a captured delivery from being replayed later. Nothing is stored for a refused delivery.

`do_apply_event` inserts the delivery id (the `webhook-id` header, unique) and applies the event in one
transaction: a redelivery, or the same delivery arriving twice at once, hits the unique constraint and is
answered 200 without effect.

Handled types:
  product.created / product.updated   upsert the Product by external id (name, description, interval, archived,
                                      limits from the product's metadata when present)
  subscription.created / .active / .updated / .uncanceled
                                      status active or trialing: the user gets the subscription's product;
                                      canceled: as subscription.canceled; unpaid / incomplete_expired: removed;
                                      incomplete / past_due: unchanged
  subscription.canceled               kept until the end of the paid period when the payload says it cancels
                                      then (cancel_at_period_end and a period end in the future), else removed
  subscription.revoked                removed
A subscription event older (by the event's `timestamp`) than one already applied for the same subscription is
recorded but not applied, so a retried, late delivery cannot undo a newer state. Anything else is recorded and
answered 202. The user is the customer's external id (our user id; a Clerk user id
is accepted too, as the seed used those), or the `externalCustomerId` our checkouts put in the metadata.
"""

import datetime as dt
import json
import logging
from dataclasses import dataclass, field

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from standardwebhooks import Webhook, WebhookVerificationError

from accounts.models import User
from billing.models import Product, WebhookEvent

log = logging.getLogger(__name__)

STANDARD_SECRET_PREFIX = "whsec_"
LIMIT_FIELDS = ("chat_limit", "image_limit", "web_search_limit", "file_rag_limit", "files_per_request")
# The seed's Product metadata names, accepted as aliases.
LIMIT_ALIASES = {
    "chatGenerationLimit": "chat_limit",
    "imageGenerationLimit": "image_limit",
    "webSearchLimit": "web_search_limit",
    "fileRagLimit": "file_rag_limit",
    "fileCountLimit": "files_per_request",
}
MAX_LIMIT = 10_000_000
MAX_USER_ID = 2**63 - 1  # BigAutoField's largest value
MAX_USER_ID_DIGITS = len(str(MAX_USER_ID))


class WebhookError(Exception):
    def __init__(self, message: str, code: str, status: int):
        super().__init__(message)
        self.message, self.code, self.status = message, code, status


@dataclass(frozen=True)
class VerifiedDelivery:
    delivery_id: str
    payload: dict


@dataclass
class Outcome:
    status: int
    body: dict = field(default_factory=dict)


# --- verification ---------------------------------------------------------------------------------------------


def _webhook() -> Webhook:
    secret = settings.POLAR_WEBHOOK_SECRET
    if not secret:
        raise WebhookError(
            "Payment webhooks are not configured on this server (POLAR_WEBHOOK_SECRET is not set).",
            "payments_not_configured",
            503,
        )
    # A Standard Webhooks secret ("whsec_" + base64) is decoded by the library. Polar's secrets are plain strings
    # whose UTF-8 bytes are the HMAC key (Polar's own SDK base64-encodes them before handing them to the
    # library, which decodes them back), so those are passed as bytes.
    return Webhook(secret if secret.startswith(STANDARD_SECRET_PREFIX) else secret.encode())


def check_signature(body: bytes, headers) -> VerifiedDelivery:
    """The verified delivery, or WebhookError: 403 for a bad, missing or stale signature, 400 for a body that is
    signed but not a JSON event, 503 when no secret is configured."""
    webhook = _webhook()
    plain_headers = {str(name).lower(): str(value) for name, value in headers.items()}
    try:
        webhook.verify(body, plain_headers, json_parse=False)
    except WebhookVerificationError as exc:
        raise WebhookError(f"Invalid webhook signature: {exc}.", "invalid_signature", 403) from None
    except (ValueError, TypeError):  # a malformed signature header, or a body that is not UTF-8
        raise WebhookError("Invalid webhook signature: malformed.", "invalid_signature", 403) from None
    delivery_id = plain_headers["webhook-id"]
    if len(delivery_id) > WebhookEvent._meta.get_field("delivery_id").max_length:
        raise WebhookError("The webhook-id header is too long.", "invalid_body", 400)
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser's stack
        raise WebhookError("The webhook body is not JSON.", "invalid_body", 400) from None
    if not isinstance(payload, dict) or not isinstance(payload.get("type"), str) or not payload["type"]:
        raise WebhookError("The webhook body is not an event (no type).", "invalid_body", 400)
    if not isinstance(payload.get("data"), dict):
        raise WebhookError("The webhook event has no data object.", "invalid_body", 400)
    return VerifiedDelivery(delivery_id, payload)


# --- products -------------------------------------------------------------------------------------------------


def _limit(value) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if 0 <= number <= MAX_LIMIT else None


def product_limits(metadata) -> dict:
    if not isinstance(metadata, dict):
        return {}
    limits = {}
    for key, value in metadata.items():
        name = key if key in LIMIT_FIELDS else LIMIT_ALIASES.get(key)
        if name is not None and (number := _limit(value)) is not None:
            limits[name] = number
    return limits


def upsert_product(data: dict, *, update_existing: bool = True) -> Product | None:
    product_id = data.get("id")
    if not isinstance(product_id, str) or not product_id or len(product_id) > 100:
        return None
    fields = {}
    if isinstance(data.get("name"), str) and data["name"].strip():
        fields["name"] = data["name"].strip()[:200]
    if "description" in data:
        fields["description"] = data["description"] if isinstance(data["description"], str) else ""
    if "recurring_interval" in data:
        interval = data["recurring_interval"]
        fields["recurring_interval"] = interval[:20] if isinstance(interval, str) else ""
    if isinstance(data.get("is_archived"), bool):
        fields["is_archived"] = data["is_archived"]
    fields.update(product_limits(data.get("metadata")))
    product = Product.objects.select_for_update().filter(external_id=product_id).first()
    if product is None:
        fields.setdefault("name", product_id)
        return Product.objects.create(external_id=product_id, **fields)
    if update_existing and fields:
        for name, value in fields.items():
            setattr(product, name, value)
        product.save(update_fields=[*fields, "updated_at"])
    return product


def _on_product(data: dict) -> tuple[bool, str]:
    product = upsert_product(data)
    if product is None:
        return False, "ignored: the product has no id"
    return True, f"product {product.external_id} saved"


# --- subscriptions --------------------------------------------------------------------------------------------


def _subscriber(data: dict) -> User | None:
    customer = data.get("customer") if isinstance(data.get("customer"), dict) else {}
    metadata = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
    for candidate in (
        customer.get("external_id"),
        data.get("external_customer_id"),
        metadata.get("externalCustomerId"),
        metadata.get("external_customer_id"),
    ):
        if not isinstance(candidate, str | int) or isinstance(candidate, bool) or not str(candidate).strip():
            continue
        candidate = str(candidate).strip()
        users = User.objects.select_for_update()
        # Our user ids are ASCII digits within a bigint; anything else (a Clerk id, or digits past any id we could
        # have: int() of 5,000 digits raises) is looked up as a Clerk id, which then matches nobody.
        is_user_id = candidate.isascii() and candidate.isdigit() and len(candidate) <= MAX_USER_ID_DIGITS
        by = {"pk": int(candidate)} if is_user_id and int(candidate) <= MAX_USER_ID else {"clerk_id": candidate}
        user = users.filter(**by).first()
        if user is not None:
            return user
    return None


def _subscription_product(data: dict) -> Product | None:
    embedded = data.get("product") if isinstance(data.get("product"), dict) else {}
    product_id = data.get("product_id") or embedded.get("id")
    if not isinstance(product_id, str) or not product_id:
        return None
    product = Product.objects.filter(external_id=product_id).first()
    if product is None:  # the product webhook has not arrived yet: create it from the subscription's copy
        product = upsert_product({**embedded, "id": product_id}, update_existing=False)
    return product


def _grant(user: User, product: Product | None) -> tuple[bool, str]:
    if product is None:
        return False, "ignored: the subscription names no product"
    if user.product_id != product.pk:
        user.product = product
        user.save(update_fields=["product"])
    return True, f"user {user.pk} now has {product.external_id}"


def _remove(user: User, product: Product | None, why: str) -> tuple[bool, str]:
    # Only the subscription that gave the current product can take it away (an old plan's late revoke cannot).
    if user.product_id is None:
        return True, f"user {user.pk} had no product ({why})"
    if product is not None and user.product_id != product.pk:
        return True, f"user {user.pk} keeps another product ({why})"
    user.product = None
    user.save(update_fields=["product"])
    return True, f"user {user.pk} lost their product ({why})"


def _when(value) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    moment = parse_datetime(value)
    if moment is not None and timezone.is_naive(moment):
        moment = timezone.make_aware(moment, dt.UTC)
    return moment


def _on_cancel(user: User, product: Product | None, data: dict) -> tuple[bool, str]:
    now = timezone.now()
    ended = _when(data.get("ended_at"))
    period_end = _when(data.get("current_period_end")) or _when(data.get("ends_at"))
    if data.get("cancel_at_period_end") is True and not (ended and ended <= now) and (period_end and period_end > now):
        return True, f"user {user.pk} keeps their product until {period_end.isoformat()}"
    return _remove(user, product, "canceled")


def _superseded(data: dict, sent_at: dt.datetime | None, delivery_id: str) -> bool:
    """Whether a later event about the same subscription was already applied (deliveries can arrive out of order
    when Polar retries): an older state must not undo a newer one."""
    subscription_id = data.get("id")
    if sent_at is None or not isinstance(subscription_id, str) or not subscription_id:
        return False
    applied = (
        WebhookEvent.objects.filter(type__startswith="subscription.", applied=True, payload__data__id=subscription_id)
        .exclude(delivery_id=delivery_id)
        .values_list("payload__timestamp", flat=True)
    )
    return any((other := _when(stamp)) is not None and other > sent_at for stamp in applied)


def _on_subscription(event_type: str, data: dict) -> tuple[bool, str]:
    user = _subscriber(data)
    if user is None:
        return False, "ignored: no user matches the customer's external id"
    product = _subscription_product(data)
    status = data.get("status")
    if event_type == "subscription.revoked":
        return _remove(user, product, "revoked")
    if event_type == "subscription.canceled" or status == "canceled":
        return _on_cancel(user, product, data)
    if status in ("active", "trialing"):
        return _grant(user, product)
    if status in ("unpaid", "incomplete_expired"):
        return _remove(user, product, status)
    return True, f"user {user.pk} unchanged (status {status!r})"


HANDLERS = {
    "product.created": lambda event_type, data: _on_product(data),
    "product.updated": lambda event_type, data: _on_product(data),
    "subscription.created": _on_subscription,
    "subscription.active": _on_subscription,
    "subscription.updated": _on_subscription,
    "subscription.uncanceled": _on_subscription,
    "subscription.canceled": _on_subscription,
    "subscription.revoked": _on_subscription,
}


# --- application ----------------------------------------------------------------------------------------------


def do_apply_event(delivery: VerifiedDelivery) -> Outcome:
    """Record the delivery and apply its event, once. The delivery row and the effect commit together."""
    event_type = delivery.payload["type"][:100]
    handler = HANDLERS.get(event_type)
    try:
        with transaction.atomic():
            event = WebhookEvent.objects.create(
                delivery_id=delivery.delivery_id, type=event_type, payload=delivery.payload
            )
            if handler is None:
                applied, outcome = False, "ignored: unhandled event type"
            elif event_type.startswith("subscription.") and _superseded(
                delivery.payload["data"], _when(delivery.payload.get("timestamp")), delivery.delivery_id
            ):
                applied, outcome = False, "ignored: a later event about this subscription was already applied"
            else:
                applied, outcome = handler(event_type, delivery.payload["data"])
            event.applied, event.outcome = applied, outcome[:300]
            event.save(update_fields=["applied", "outcome"])
            report = {"delivery": delivery.delivery_id, "type": event_type, "applied": applied, "outcome": outcome}
            transaction.on_commit(lambda: log.info("payment webhook", extra=report))
    except IntegrityError:
        if WebhookEvent.objects.filter(delivery_id=delivery.delivery_id).exists():
            log.info("payment webhook duplicate", extra={"delivery": delivery.delivery_id, "type": event_type})
            return Outcome(200, {"received": True, "duplicate": True})
        raise
    if handler is None:
        return Outcome(202, {"received": True, "ignored": True, "type": event_type})
    return Outcome(200, {"received": True, "type": event_type, "applied": applied, "outcome": outcome})
