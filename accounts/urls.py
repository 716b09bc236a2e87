from django.contrib.auth import views as auth_views  # logout
from django.urls import path

from accounts import views
from accounts.forms import EmailAuthenticationForm

app_name = "accounts"

urlpatterns = [
    path("signup/", views.signup, name="signup"),
    path(
        "login/",
        views.ThrottledLoginView.as_view(
            template_name="accounts/login.html",
            authentication_form=EmailAuthenticationForm,
            redirect_authenticated_user=True,
        ),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", views.account, name="account"),
    path("keys/", views.create_key, name="create_key"),
    path("keys/<int:key_id>/revoke/", views.revoke_key, name="revoke_key"),
]
