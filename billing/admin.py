from django.contrib import admin

from billing.ledger import summed
from billing.models import Charge, Product, UsageEntry, UsagePeriod, WebhookEvent


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows that only billing's services write (the ledger, charges, received webhooks): staff read them, nobody
    edits them here."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ("name", "external_id", "chat_limit", "image_limit", "web_search_limit", "is_archived")
    list_filter = ("is_archived",)
    search_fields = ("name", "external_id")


@admin.register(UsagePeriod)
class UsagePeriodAdmin(admin.ModelAdmin):
    list_display = ("user", "month", "chats_used", "images_used", "web_searches_used", "file_rag_used")
    list_filter = ("month",)
    search_fields = ("user__email",)
    # Counters move only through billing.quota; staff read them here.
    readonly_fields = ("user", "month", "chats_used", "images_used", "web_searches_used", "file_rag_used")

    def has_add_permission(self, request):
        return False


@admin.register(UsageEntry)
class UsageEntryAdmin(ReadOnlyAdmin):
    """The ledger, read-only, with each user's monthly totals for whatever the filters select."""

    change_list_template = "admin/billing/usageentry/change_list.html"
    list_display = ("created_at", "user", "action", "model", "provider", "input_tokens", "output_tokens", "cost")
    list_filter = ("month", "action", "model", ("user", admin.RelatedOnlyFieldListFilter))
    search_fields = ("user__email", "model")
    date_hierarchy = "created_at"
    list_select_related = ("user",)

    @admin.display(description="cost (USD)", ordering="cost_micros")
    def cost(self, entry):
        return f"{entry.cost_micros / 1_000_000:.6f}"

    def changelist_view(self, request, extra_context=None):
        response = super().changelist_view(request, extra_context)
        changelist = getattr(response, "context_data", {}).get("cl")
        if changelist is not None:
            response.context_data["monthly_totals"] = [
                {**row, "cost": f"{(row['cost_micros'] or 0) / 1_000_000:.6f}"}
                for row in summed(changelist.queryset, "month", "user__email")
            ]
        return response


@admin.register(Charge)
class ChargeAdmin(ReadOnlyAdmin):
    """Quota held, settled or released per action, read-only: they move only through billing.charges."""

    list_display = ("created_at", "user", "kind", "amount", "state", "closed_at", "chat_query_id")
    list_filter = ("state", "kind")
    search_fields = ("user__email",)
    date_hierarchy = "created_at"
    list_select_related = ("user",)


@admin.register(WebhookEvent)
class WebhookEventAdmin(ReadOnlyAdmin):
    """Received payment webhooks, read-only: what arrived, when, and what it did."""

    list_display = ("received_at", "type", "delivery_id", "applied", "outcome")
    list_filter = ("type", "applied")
    search_fields = ("delivery_id", "type", "outcome")
    date_hierarchy = "received_at"
    readonly_fields = ("delivery_id", "type", "received_at", "applied", "outcome", "payload")
