"""The pricing page: the free tier and every plan on sale, with Upgrade (checkout) and Manage (portal) buttons."""

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from billing import payments
from billing.models import Product

LIMIT_ROWS = [
    ("chat_limit", "Chat generations / month"),
    ("image_limit", "Image generations / month"),
    ("web_search_limit", "Web searches / month"),
    ("file_rag_limit", "File uses / month"),
    ("files_per_request", "Files per request"),
]


def _plan(name, description, limits: dict, product=None) -> dict:
    return {
        "name": name,
        "description": description,
        "product": product,
        "rows": [(label, limits[field]) for field, label in LIMIT_ROWS],
    }


def _context(request, **extra) -> dict:
    products = Product.objects.filter(is_archived=False).order_by("chat_limit", "name")
    plans = [
        _plan(p.name, p.description, {field: getattr(p, field) for field, _ in LIMIT_ROWS}, product=p) for p in products
    ]
    user = request.user
    current = user.product if user.is_authenticated and user.product_id else None
    return {
        "free": _plan("Free", "For trying QueryNox.", settings.FREE_TIER_LIMITS),
        "plans": plans,
        "current": current,
        **extra,
    }


def _checkout_notice(request) -> dict:
    """After paying, Polar sends the buyer back with ?checkout_id=…: say how the checkout stands."""
    checkout_id = request.GET.get("checkout_id", "")
    if not checkout_id or not request.user.is_authenticated:
        return {}
    try:
        status = payments.checkout_status(request.user, checkout_id)
    except payments.PaymentError as exc:
        return {"checkout_error": exc.message}
    return {"checkout": status.as_dict()}


def pricing(request):
    return render(request, "billing/pricing.html", _context(request, **_checkout_notice(request)))


def _refused(request, exc: payments.PaymentError):
    return render(request, "billing/pricing.html", _context(request, error=exc.message), status=exc.status)


@login_required
@require_POST
def checkout(request, product_id):
    try:
        success_url = payments.check_success_url(None, request.build_absolute_uri(reverse("billing:pricing")))
        url = payments.create_checkout_url(request.user, product_id, success_url)
    except payments.PaymentError as exc:
        return _refused(request, exc)
    return redirect(url)


@login_required
@require_POST
def portal(request):
    try:
        url = payments.portal_url(request.user, request.build_absolute_uri(reverse("billing:pricing")))
    except payments.PaymentError as exc:
        return _refused(request, exc)
    return redirect(url)
