from django.contrib import admin
from django.urls import include, path

from querynox.api import api
from querynox.metrics import metrics_view

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", api.urls),
    path("metrics", metrics_view, name="metrics"),
    path("accounts/", include("accounts.urls")),
    path("", include("billing.urls")),
    path("", include("chat.urls")),
]
