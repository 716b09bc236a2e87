"""Payments: checkout, checkout status and the customer portal, through Polar (billing/polar.py).

Our user id is the Polar customer's external id, and every checkout carries it (as `external_customer_id` and
in its metadata), so the webhooks that follow can find the user (billing/webhooks.py). A checkout belongs to the
user whose id it carries: anyone else asking about it gets a 404, as if it did not exist.
"""

from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

from accounts.services import CLERK_PLACEHOLDER_DOMAIN
from billing.models import Product
from billing.polar import PolarClient, PolarError, PolarNotConfigured, PolarNotFound, polar_client

CHECKOUT_ID_PLACEHOLDER = "{CHECKOUT_ID}"


class PaymentError(Exception):
    """A payment request we refuse or could not complete; `status` is the HTTP status, `code` a stable name."""

    def __init__(self, message: str, code: str = "bad_request", status: int = 400):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


def _client() -> PolarClient:
    try:
        return polar_client()
    except PolarNotConfigured as exc:
        raise PaymentError(str(exc), "payments_not_configured", 503) from None


def _provider_failed(exc: PolarError | str) -> PaymentError:
    message = exc.message if isinstance(exc, PolarError) else exc
    return PaymentError(f"Payment provider error: {message} Please try again later.", "payment_provider_error", 502)


def _is_web_url(url) -> bool:
    if not isinstance(url, str):
        return False
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def external_id(user) -> str:
    return str(user.pk)


def has_real_email(user) -> bool:
    return not user.email.endswith("@" + CLERK_PLACEHOLDER_DOMAIN)


# --- checks ---------------------------------------------------------------------------------------------------


def check_checkout_product(product_id: str) -> Product:
    """A product on sale (known from the product webhooks or the admin, and not archived), else 404."""
    product = Product.objects.filter(external_id=product_id, is_archived=False).first()
    if product is None:
        raise PaymentError("Unknown product.", "unknown_product", 404)
    return product


def check_success_url(url: str | None, default: str) -> str:
    """Where Polar sends the buyer afterwards, with `checkout_id={CHECKOUT_ID}` for the status check."""
    url = (url or "").strip() or settings.POLAR_SUCCESS_URL or default
    if not _is_web_url(url) or len(url) > 2000:
        raise PaymentError("callback must be an http(s) URL.", "invalid_field", 400)
    if CHECKOUT_ID_PLACEHOLDER not in url:
        url += ("&" if "?" in url else "?") + f"checkout_id={CHECKOUT_ID_PLACEHOLDER}"
    return url


# --- the Polar customer ---------------------------------------------------------------------------------------


def _find_or_create_customer(client: PolarClient, user, *, create: bool = True) -> dict | None:
    """The user's Polar customer (external id = our user id). Users with only a placeholder email are not created
    here: Polar needs a deliverable address, which the checkout then asks for."""
    customer = client.get_customer_by_external_id(external_id(user))
    if customer is not None or not create or not has_real_email(user):
        return customer
    name = user.get_full_name() or None
    try:
        return client.create_customer(email=user.email, external_id=external_id(user), name=name)
    except PolarError as exc:
        if exc.status in (409, 422):  # a concurrent request created it first (or the email is in use)
            customer = client.get_customer_by_external_id(external_id(user))
            if customer is not None:
                return customer
        raise


# --- the three operations -------------------------------------------------------------------------------------


def create_checkout_url(user, product_id: str, success_url: str) -> str:
    """A Polar checkout for this product and user; returns the URL to send the buyer to."""
    check_checkout_product(product_id)
    client = _client()
    try:
        customer = _find_or_create_customer(client, user)
        checkout = client.create_checkout(
            product_id=product_id,
            success_url=success_url,
            external_customer_id=external_id(user),
            customer_id=(customer or {}).get("id"),
            customer_email=user.email if has_real_email(user) else None,
            metadata={"externalCustomerId": external_id(user)},
        )
    except PolarError as exc:
        raise _provider_failed(exc) from None
    if not _is_web_url(checkout["url"]):
        raise _provider_failed("the checkout URL is not a web address.")
    return checkout["url"]


@dataclass(frozen=True)
class CheckoutStatus:
    checkout: dict
    product: Product | None

    def as_dict(self) -> dict:
        checkout = self.checkout
        product = checkout.get("product") if isinstance(checkout.get("product"), dict) else {}
        return {
            "id": checkout.get("id"),
            "status": checkout.get("status"),
            "productId": checkout.get("product_id") or product.get("id"),
            "product": {
                "id": product.get("id"),
                "name": product.get("name"),
                "description": product.get("description"),
                "recurringInterval": product.get("recurring_interval"),
                "isArchived": product.get("is_archived"),
            }
            if product
            else None,
            "customerId": checkout.get("customer_id"),
            "createdAt": checkout.get("created_at"),
            "expiresAt": checkout.get("expires_at"),
            "succeeded": checkout.get("status") == "succeeded",
        }


def _belongs_to(checkout: dict, user) -> bool:
    metadata = checkout.get("metadata") if isinstance(checkout.get("metadata"), dict) else {}
    return external_id(user) in (str(checkout.get("external_customer_id")), str(metadata.get("externalCustomerId")))


def checkout_status(user, checkout_id: str) -> CheckoutStatus:
    """The state of one of the user's checkouts. Someone else's checkout is "not found"."""
    if not checkout_id or len(checkout_id) > 100:
        raise PaymentError("Checkout not found.", "not_found", 404)
    client = _client()
    try:
        checkout = client.get_checkout(checkout_id)
    except PolarNotFound:
        raise PaymentError("Checkout not found.", "not_found", 404) from None
    except PolarError as exc:
        raise _provider_failed(exc) from None
    if not _belongs_to(checkout, user):
        raise PaymentError("Checkout not found.", "not_found", 404)
    product_id = checkout.get("product_id") or (checkout.get("product") or {}).get("id")
    return CheckoutStatus(checkout, Product.objects.filter(external_id=product_id).first() if product_id else None)


def portal_url(user, return_url: str | None = None) -> str:
    """A customer-portal session URL (manage or cancel the subscription, invoices, payment method)."""
    client = _client()
    try:
        customer = _find_or_create_customer(client, user)
        if customer is None:
            raise PaymentError(
                "You have no billing account yet: buy a plan on the pricing page first.", "no_billing_account", 404
            )
        session = client.create_customer_session(
            customer_id=customer["id"], return_url=return_url if _is_web_url(return_url) else None
        )
    except PolarError as exc:
        raise _provider_failed(exc) from None
    except (KeyError, TypeError):
        raise _provider_failed("unexpected customer record.") from None
    if not _is_web_url(session["customer_portal_url"]):
        raise _provider_failed("the portal URL is not a web address.")
    return session["customer_portal_url"]
