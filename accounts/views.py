import hashlib

from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.forms.utils import ErrorDict
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from accounts.forms import SignUpForm, normalize_email
from accounts.services import ApiKeyError, do_create_api_key, do_revoke_api_key
from billing.ledger import monthly_totals
from billing.quota import usage_meters
from core.ratelimit import allow, client_ip, exceeded, wait_text


def _refused(form, message: str):
    """The bound form with `message` as its only error, without validating it (a throttled log-in must not even
    check the password)."""
    form.cleaned_data = {}
    form._errors = ErrorDict()
    form.add_error(None, message)
    return form


def _too_many(response, retry_after: int):
    response.status_code = 429
    response["Retry-After"] = str(retry_after)
    return response


def _account_key(email: str) -> str:
    # Cache keys name accounts by a hash, so addresses do not sit in Redis.
    return hashlib.sha256(normalize_email(email).encode("utf-8", "surrogatepass")).hexdigest()[:32]


class ThrottledLoginView(auth_views.LoginView):
    """Django's log-in, throttled per client address (every attempt counts) and per account (only failures count,
    in a window of minutes: a stranger guessing passwords can hold an account for one window at most, and its owner
    logs in normally as soon as it ends)."""

    def post(self, request, *args, **kwargs):
        window = settings.LOGIN_RATE_WINDOW
        allowed, retry_after = allow("login-address", client_ip(request), settings.LOGIN_ADDRESS_RATE_LIMIT, window)
        if not allowed:
            return self._throttled(
                f"Too many log-in attempts from your address; try again in {wait_text(retry_after)}.", retry_after
            )
        account = _account_key(request.POST.get("username", ""))
        blocked, retry_after = exceeded("login-account", account, settings.LOGIN_ACCOUNT_FAILURE_LIMIT, window)
        if blocked:
            return self._throttled(
                f"Too many failed log-ins for this account; try again in {wait_text(retry_after)}.", retry_after
            )
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form):
        allow(
            "login-account",
            _account_key(self.request.POST.get("username", "")),
            settings.LOGIN_ACCOUNT_FAILURE_LIMIT,
            settings.LOGIN_RATE_WINDOW,
        )
        return super().form_invalid(form)

    def _throttled(self, message: str, retry_after: int):
        form = _refused(self.get_form(), message)
        return _too_many(self.render_to_response(self.get_context_data(form=form)), retry_after)


def signup(request):
    if request.user.is_authenticated:
        return redirect("chat:home")
    form = SignUpForm(request.POST or None)
    if request.method == "POST":
        allowed, retry_after = allow(
            "signup-address", client_ip(request), settings.SIGNUP_RATE_LIMIT, settings.SIGNUP_RATE_WINDOW
        )
        if not allowed:
            form = _refused(form, f"Too many sign-ups from your address; try again in {wait_text(retry_after)}.")
            return _too_many(render(request, "accounts/signup.html", {"form": form}), retry_after)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect("chat:new")
    return render(request, "accounts/signup.html", {"form": form}, status=400 if form.errors else 200)


def _keys_context(request, **extra) -> dict:
    return {"keys": request.user.api_keys.all(), **extra}


@login_required
def account(request):
    context = _keys_context(
        request, meters=usage_meters(request.user), totals=list(monthly_totals(request.user)[:24])
    )
    return render(request, "accounts/account.html", context)


@login_required
@require_POST
def create_key(request):
    allowed, retry_after = allow(
        "api-key-create", str(request.user.pk), settings.API_KEY_RATE_LIMIT, settings.API_KEY_RATE_WINDOW
    )
    if not allowed:
        message = f"You have created many keys in a short time; try again in {wait_text(retry_after)}."
        return _too_many(render(request, "accounts/_keys.html", _keys_context(request, key_error=message)), retry_after)
    try:
        key, raw = do_create_api_key(request.user, request.POST.get("name", ""))
    except ApiKeyError as exc:
        return render(request, "accounts/_keys.html", _keys_context(request, key_error=str(exc)), status=400)
    # The raw key is shown this once; only its hash is stored.
    return render(request, "accounts/_keys.html", _keys_context(request, new_key=raw, new_key_name=key.name))


@login_required
@require_POST
def revoke_key(request, key_id):
    if not do_revoke_api_key(request.user, key_id):
        raise Http404("Key not found")
    return render(request, "accounts/_keys.html", _keys_context(request))
