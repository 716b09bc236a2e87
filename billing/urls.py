from django.urls import path

from billing import views

app_name = "billing"

urlpatterns = [
    path("pricing/", views.pricing, name="pricing"),
    path("pricing/checkout/<str:product_id>/", views.checkout, name="checkout"),
    path("pricing/portal/", views.portal, name="portal"),
]
