from django.contrib import admin

from rag.models import Chunk, Document


class ReadOnlyAdmin(admin.ModelAdmin):
    """Documents and chunks are made by ingest only: staff may look and delete, not add or edit."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class ChunkInline(admin.TabularInline):
    model = Chunk
    fields = ("position", "page", "heading", "tokens", "text")
    readonly_fields = fields
    extra = 0
    show_change_link = True
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Document)
class DocumentAdmin(ReadOnlyAdmin):
    list_display = ("name", "chat", "collection", "kind", "pages", "status", "embedding_model", "created_at")
    list_filter = ("status", "kind", "embedding_model")
    search_fields = ("name", "sha256", "chat__id", "chat__owner__email")
    list_select_related = ("chat", "collection")
    raw_id_fields = ("chat", "collection")
    inlines = [ChunkInline]


@admin.register(Chunk)
class ChunkAdmin(ReadOnlyAdmin):
    list_display = ("document", "position", "page", "heading", "tokens")
    search_fields = ("text", "heading", "document__name")
    list_select_related = ("document",)
    raw_id_fields = ("document", "chat", "collection")
    exclude = ("embedding",)  # raw float16 bytes mean nothing on screen
