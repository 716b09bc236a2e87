from django.contrib import admin

from chat.models import AIModel, Assistant, Chat, ChatQuery


@admin.register(AIModel)
class AIModelAdmin(admin.ModelAdmin):
    list_display = ("name", "provider", "full_name", "category", "context_limit", "pro", "enabled", "sort_order")
    list_editable = ("pro", "enabled", "context_limit", "sort_order")
    list_filter = ("provider", "category", "pro", "enabled")
    search_fields = ("name", "full_name")


class ChatQueryInline(admin.TabularInline):
    model = ChatQuery
    fields = ("created_at", "model", "status", "prompt", "response")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True


@admin.register(Chat)
class ChatAdmin(admin.ModelAdmin):
    list_display = ("title", "owner", "model", "shared", "bookmarked", "updated_at")
    list_filter = ("shared", "bookmarked", "model")
    search_fields = ("title", "owner__email")
    raw_id_fields = ("owner",)
    inlines = [ChatQueryInline]


@admin.register(ChatQuery)
class ChatQueryAdmin(admin.ModelAdmin):
    list_display = ("chat", "model", "status", "created_at")
    list_filter = ("status", "model")
    search_fields = ("chat__title", "chat__owner__email")
    raw_id_fields = ("chat",)
    readonly_fields = ("created_at", "updated_at")


@admin.register(Assistant)
class AssistantAdmin(admin.ModelAdmin):
    """Staff publish an assistant to every user (or take it back): the `published` column, or the actions."""

    list_display = ("name", "owner", "model", "web_search", "published", "updated_at")
    list_editable = ("published",)
    list_filter = ("published", "web_search", "model")
    search_fields = ("name", "owner__email")
    raw_id_fields = ("owner",)
    readonly_fields = ("collection", "created_at", "updated_at")
    actions = ("publish", "unpublish")

    @admin.action(description="Publish to everyone")
    def publish(self, request, queryset):
        self.message_user(request, f"Published {queryset.update(published=True)} assistant(s).")

    @admin.action(description="Unpublish")
    def unpublish(self, request, queryset):
        self.message_user(request, f"Unpublished {queryset.update(published=False)} assistant(s).")
