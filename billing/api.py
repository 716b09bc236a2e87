"""Payments API (/api/v1/payments): checkout, checkout status, customer portal, and Polar's webhook receiver."""

from django.http import JsonResponse
from django.urls import reverse
from ninja import Router

from billing import payments, webhooks
from core.schemas import OpenSchema, errors

router = Router(tags=["payments"])

# Every payments operation talks to Polar: 502 when it fails, 503 when this server has no Polar configured.
PAYMENT_ERRORS = errors(400, 401, 404, 502, 503)


class UrlOut(OpenSchema):
    url: str


class CheckoutStatusOut(OpenSchema):
    id: str | None
    status: str | None
    productId: str | None  # noqa: N815 (wire names are camelCase)


class WebhookOut(OpenSchema):
    received: bool


def default_success_url(request) -> str:
    return request.build_absolute_uri(reverse("billing:pricing"))


@router.get(
    "/checkout/{product_id}",
    response={200: UrlOut, **PAYMENT_ERRORS},
    summary="Start a checkout for a product; returns the URL to pay at",
)
def checkout(request, product_id: str, callback: str | None = None):
    success_url = payments.check_success_url(callback, default_success_url(request))
    return {"url": payments.create_checkout_url(request.auth, product_id, success_url)}


@router.get(
    "/status/{checkout_id}",
    response={200: CheckoutStatusOut, **PAYMENT_ERRORS},
    summary="The state of one of the caller's checkouts",
)
def checkout_status(request, checkout_id: str):
    return payments.checkout_status(request.auth, checkout_id).as_dict()


@router.get(
    "/portal",
    response={200: UrlOut, **PAYMENT_ERRORS},
    summary="A customer-portal session URL (manage the subscription, invoices)",
)
def portal(request, returnUrl: str | None = None):  # noqa: N803 (the wire name)
    return {"url": payments.portal_url(request.auth, returnUrl or default_success_url(request))}


@router.post(
    "/webhook",
    auth=None,
    # 202: a delivery of an event type this server does not act on (acknowledged, so Polar does not retry it).
    response={200: WebhookOut, 202: WebhookOut, **errors(400, 403, 413, 503)},
    summary="Polar's webhooks (Standard Webhooks signature required)",
)
def webhook(request):
    try:
        delivery = webhooks.check_signature(request.body, request.headers)
    except webhooks.WebhookError as exc:
        return JsonResponse({"error": exc.message, "code": exc.code}, status=exc.status)
    outcome = webhooks.do_apply_event(delivery)
    return JsonResponse(outcome.body, status=outcome.status)
