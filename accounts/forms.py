from django import forms
from django.contrib.auth.forms import AuthenticationForm, UserCreationForm

from accounts.models import User


def normalize_email(value: str) -> str:
    # Accounts are keyed by the lower-cased address (as UserManager stores it), so "Ann@X.org" is "ann@x.org".
    return value.strip().lower()


class SignUpForm(UserCreationForm):
    class Meta:
        model = User
        fields = ("email",)

    def clean_email(self):
        email = normalize_email(self.cleaned_data["email"])
        if User.objects.filter(email__iexact=email).exists():
            raise forms.ValidationError("An account with this email address already exists.", code="unique")
        return email


class EmailAuthenticationForm(AuthenticationForm):
    username = forms.EmailField(label="Email", widget=forms.EmailInput(attrs={"autofocus": True}))

    def clean_username(self):
        return normalize_email(self.cleaned_data["username"])
