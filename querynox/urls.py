from django.contrib import admin
from django.urls import include, path

from querynox.api import api

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", api.urls),
    path("accounts/", include("accounts.urls")),
    path("", include("billing.urls")),
    path("", include("chat.urls")),
]
