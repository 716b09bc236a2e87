from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from accounts.forms import SignUpForm
from accounts.services import ApiKeyError, do_create_api_key, do_revoke_api_key
from billing.ledger import monthly_totals
from billing.quota import usage_meters


def signup(request):
    if request.user.is_authenticated:
        return redirect("chat:home")
    form = SignUpForm(request.POST or None)
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
