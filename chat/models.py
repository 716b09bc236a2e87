import uuid

from django.conf import settings
from django.db import models
from django.db.models.functions import Lower
from django.db.models.signals import post_delete
from django.dispatch import receiver

from core.tokens import estimate_tokens
from rag.models import Collection


class AIModel(models.Model):
    """The model catalog: a display name mapped to a provider and the provider's model id."""

    class Provider(models.TextChoices):
        LOCAL = "local", "Local (CPU)"
        OPENAI = "openai", "OpenAI"
        ANTHROPIC = "anthropic", "Anthropic"
        GROQ = "groq", "Groq"
        GEMINI = "gemini", "Google Gemini"
        OPENROUTER = "openrouter", "OpenRouter"
        OPENAI_COMPATIBLE = "openai_compatible", "OpenAI-compatible server"

    class Category(models.TextChoices):
        TEXT = "Text Generation"
        IMAGE = "Image Generation"

    name = models.CharField(max_length=100, unique=True, help_text="What users pick and what the API takes")
    full_name = models.CharField(max_length=200, help_text="The provider's model id")
    provider = models.CharField(max_length=30, choices=Provider.choices)
    category = models.CharField(max_length=30, choices=Category.choices, default=Category.TEXT)
    description = models.CharField(max_length=300, blank=True)
    context_limit = models.PositiveIntegerField(help_text="Context window in tokens")
    pro = models.BooleanField(default=False)
    vision = models.BooleanField(
        default=False, help_text="Sees images: a turn's attached images are sent to it as images, not only as OCR text"
    )
    enabled = models.BooleanField(default=True)
    input_price_per_million = models.DecimalField(max_digits=12, decimal_places=4, default=0)
    output_price_per_million = models.DecimalField(max_digits=12, decimal_places=4, default=0)
    sort_order = models.PositiveIntegerField(default=100)

    class Meta:
        ordering = ["sort_order", "name"]

    def __str__(self):
        return self.name


class Assistant(models.Model):
    """A ready-made start for chats (chat/assistants.py): a name, a system prompt, a default model, web search on or
    off, and documents every chat started from it can cite. The documents live in its rag Collection, read once and
    searched by all its chats, never copied into them. Staff publish an assistant to everyone (admin)."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assistants")
    name = models.CharField(max_length=100)
    system_prompt = models.TextField(blank=True)
    model = models.CharField(max_length=100, help_text="The catalog model its chats start with")
    web_search = models.BooleanField(default=False)
    published = models.BooleanField(default=False, help_text="Offered to every user (set by staff in admin)")
    collection = models.OneToOneField(
        "rag.Collection", null=True, blank=True, on_delete=models.SET_NULL, related_name="assistant"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]
        indexes = [
            models.Index(fields=["owner", "name"], name="chat_assistant_owner_name"),
            models.Index(fields=["published", "name"], name="chat_assistant_published_name"),
        ]

    def __str__(self):
        return self.name


class ChatQuerySet(models.QuerySet):
    def owned_by(self, user):
        # Unlisted chats (OpenAI-compatible calls without `store`) exist only while their turn runs: no page,
        # sidebar or API ever shows them.
        return self.filter(owner=user, unlisted=False)


class Folder(models.Model):
    """A user's folder of chats (chat/library.py). Deleting it keeps its chats: they go back to no folder."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_folders")
    name = models.CharField(max_length=60)
    position = models.PositiveIntegerField(default=0, help_text="Sidebar order (lowest first), then creation")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["position", "created_at", "id"]
        constraints = [
            models.UniqueConstraint("owner", Lower("name"), name="chat_folder_name_unique_per_owner"),
        ]

    def __str__(self):
        return self.name

    def as_dict(self) -> dict:
        return {"id": self.pk, "name": self.name, "position": self.position, "createdAt": self.created_at.isoformat()}


class Tag(models.Model):
    """One of a user's tags, normalised (lower case: chat/library.py check_tags); chats carry many."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_tags")
    name = models.CharField(max_length=30)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["owner", "name"], name="chat_tag_unique_per_owner")]

    def __str__(self):
        return self.name


class Chat(models.Model):
    """A conversation. `title` is the user's: from the first prompt, or what they renamed it to; `name` is the
    short name generated for it (chat/assist.py; the title until one is). Pages show `display_name`."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chats")
    title = models.CharField(max_length=200, default="New Chat")
    name = models.CharField(max_length=200, blank=True, help_text="A short generated name")
    model = models.CharField(max_length=100)
    system_prompt = models.TextField(blank=True)
    web_search = models.BooleanField(default=False)
    shared = models.BooleanField(default=False)
    bookmarked = models.BooleanField(default=False)
    unlisted = models.BooleanField(
        default=False,
        help_text="Never listed: deleted when its turn ends (API store=false) or when its tab closes (temporary chat)",
    )
    folder = models.ForeignKey(Folder, null=True, blank=True, on_delete=models.SET_NULL, related_name="chats")
    # The assistant it was started from (chat/assistants.py): its turns also search the assistant's documents.
    assistant = models.ForeignKey(
        "Assistant", null=True, blank=True, on_delete=models.SET_NULL, related_name="chats"
    )
    tags = models.ManyToManyField(Tag, blank=True, related_name="chats")
    pinned = models.BooleanField(default=False, help_text="Listed before the other chats")
    pinned_at = models.DateTimeField(null=True, blank=True)
    summary = models.TextField(blank=True, help_text="A summary of the turns up to summary_until")
    summary_until = models.DateTimeField(null=True, blank=True)
    # The last query of the branch shown (chat/branches.py shown_leaf_id), kept by every path that adds or selects
    # a version, so that a new prompt and the history page find the branch without walking the chat from its first
    # turn. A plain id, not a foreign key: a stale or missing one only sends the reader back to that walk.
    branch_leaf = models.UUIDField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ChatQuerySet.as_manager()

    class Meta:
        ordering = ["-updated_at"]
        indexes = [
            models.Index(fields=["owner", "-updated_at"]),
            models.Index(fields=["owner", "bookmarked", "-updated_at"]),
            models.Index(fields=["owner", "-pinned", "-updated_at"], name="chat_owner_pinned_recent"),
            models.Index(fields=["folder", "-pinned", "-updated_at"], name="chat_folder_pinned_recent"),
        ]

    def __str__(self):
        return self.title

    @property
    def display_name(self) -> str:
        return self.title or self.name or "New Chat"

    def as_dict(self) -> dict:
        return {
            "id": str(self.id),
            "title": self.title,
            "chatName": self.name,
            "model": self.model,
            "systemPrompt": self.system_prompt,
            "webSearch": self.web_search,
            "shared": self.shared,
            "bookmarked": self.bookmarked,
            "folderId": self.folder_id,
            "assistantId": self.assistant_id,
            "tags": self.tag_names,
            "pinned": self.pinned,
            "createdAt": self.created_at.isoformat(),
            "updatedAt": self.updated_at.isoformat(),
        }

    @property
    def tag_names(self) -> list[str]:
        """The chat's tags, sorted: as a list page read them (chat/services.py chat_page, one query for the page's
        names, without a related manager per chat), as prefetched, or else read now."""
        names = self.__dict__.get("listed_tag_names")
        return names if names is not None else sorted(tag.name for tag in self.tags.all())


class ChatQuery(models.Model):
    class Status(models.TextChoices):
        STREAMING = "streaming"
        COMPLETE = "complete"
        STOPPED = "stopped"
        ERROR = "error"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    chat = models.ForeignKey(Chat, on_delete=models.CASCADE, related_name="queries")
    # Branches (chat/branches.py): a query follows its parent's answer (null for a first turn); siblings are the
    # versions of one turn (regenerated or edited), and `selected` marks the one shown among them.
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="children")
    selected = models.BooleanField(default=True, help_text="The version shown among its siblings")
    prompt = models.TextField()
    model = models.CharField(max_length=100)
    system_prompt = models.TextField(blank=True)
    web_search = models.BooleanField(default=False)
    response = models.TextField(blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.STREAMING)
    error = models.TextField(blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    # Token estimates (core.tokens.estimate_tokens) of prompt and response, kept on the row so that a turn's history
    # is fitted to the window without reading and measuring every earlier turn (chat/branches.py history_walk).
    # Null: not measured (the response while it streams); readers then measure the text themselves.
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True, editable=False)
    response_tokens = models.PositiveIntegerField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at"]
        verbose_name_plural = "chat queries"
        indexes = [
            models.Index(fields=["chat", "created_at"]),
            models.Index(fields=["status", "updated_at"]),
        ]

    def __str__(self):
        return self.prompt[:60]

    def save(self, *args, **kwargs):
        # Every save measures what it writes; queryset updates of `response` set response_tokens themselves
        # (ResponseWriter.finish), and a streaming answer stays unmeasured until it ends.
        update_fields = kwargs.get("update_fields")
        written = set(update_fields) if update_fields is not None else None
        unloaded = self.get_deferred_fields()
        measured = set()
        if (written is None or "prompt" in written) and "prompt" not in unloaded:
            self.prompt_tokens = estimate_tokens(self.prompt)
            measured.add("prompt_tokens")
        if (written is None or written & {"response", "status"}) and not unloaded & {"response", "status"}:
            self.response_tokens = None if self.is_streaming else estimate_tokens(self.response)
            measured.add("response_tokens")
        if written is not None:
            kwargs["update_fields"] = written | measured
        super().save(*args, **kwargs)

    @property
    def is_streaming(self) -> bool:
        return self.status == self.Status.STREAMING

    def as_dict(self) -> dict:
        return {
            "id": str(self.id),
            "chatId": str(self.chat_id),
            "parentId": str(self.parent_id) if self.parent_id else None,
            "prompt": self.prompt,
            "model": self.model,
            "systemPrompt": self.system_prompt,
            "webSearch": self.web_search,
            "response": self.response,
            "status": self.status,
            "error": self.error,
            # Keys starting with "_" are for the server only, never sent to clients.
            "metadata": {key: value for key, value in self.metadata.items() if not key.startswith("_")},
            "createdAt": self.created_at.isoformat(),
            "updatedAt": self.updated_at.isoformat(),
        }


class SearchDocument(models.Model):
    """One entry of the search index (chat/search.py, its only writer): a chat's title and name (`query` null), or
    one query's prompt and answer. The words themselves live beside it, per engine, unknown to the ORM (migration
    0008): a `document` tsvector column of this table on PostgreSQL, the FTS5 table chat_searchtext (rowid = id)
    on SQLite. Deleting a chat, a query or a user deletes their documents (and so their words) with them."""

    id = models.BigAutoField(primary_key=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False)
    chat = models.ForeignKey(Chat, on_delete=models.CASCADE, related_name="+")
    query = models.OneToOneField(ChatQuery, null=True, blank=True, on_delete=models.CASCADE, related_name="+")

    class Meta:
        indexes = [models.Index(fields=["owner", "-id"], name="chat_search_owner_newest")]
        constraints = [
            models.UniqueConstraint(
                fields=["chat"], condition=models.Q(query__isnull=True), name="chat_search_one_title_document"
            )
        ]

    def __str__(self):
        return f"search document {self.pk}"


@receiver(post_delete, sender=Assistant)
def _delete_assistant_documents(sender, instance: Assistant, **kwargs):
    """An assistant takes its documents along (the collection's rows, chunks and stored files), however it is
    deleted (its page, the API, admin, or its owner's account)."""
    if instance.collection_id:
        Collection.objects.filter(pk=instance.collection_id).delete()
