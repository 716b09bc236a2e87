from django.contrib import admin
from django.urls import include, path

from core.metrics import metrics_view
from querynox.api import api

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", api.urls),
    path("v1/", include("chat.openai_api")),  # the OpenAI-compatible API (chat/openai_api.py)
    path("metrics", metrics_view, name="metrics"),
    path("accounts/", include("accounts.urls")),
    path("", include("billing.urls")),
    path("", include("chat.urls")),
]
