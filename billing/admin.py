from django.contrib import admin

from billing.models import Product


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ("name", "external_id", "chat_limit", "image_limit", "web_search_limit", "is_archived")
    list_filter = ("is_archived",)
    search_fields = ("name", "external_id")
