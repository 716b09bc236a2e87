from django.contrib import admin

from chat.models import AIModel, Chat, ChatQuery


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
