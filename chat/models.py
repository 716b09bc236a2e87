import uuid

from django.conf import settings
from django.db import models


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
    enabled = models.BooleanField(default=True)
    input_price_per_million = models.DecimalField(max_digits=12, decimal_places=4, default=0)
    output_price_per_million = models.DecimalField(max_digits=12, decimal_places=4, default=0)
    sort_order = models.PositiveIntegerField(default=100)

    class Meta:
        ordering = ["sort_order", "name"]

    def __str__(self):
        return self.name


class ChatQuerySet(models.QuerySet):
    def owned_by(self, user):
        # Unlisted chats (OpenAI-compatible calls without `store`) exist only while their turn runs: no page,
        # sidebar or API ever shows them.
        return self.filter(owner=user, unlisted=False)


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
    unlisted = models.BooleanField(default=False, help_text="Not the user's to see: deleted when its turn ends")
    summary = models.TextField(blank=True, help_text="A summary of the turns up to summary_until")
    summary_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ChatQuerySet.as_manager()

    class Meta:
        ordering = ["-updated_at"]
        indexes = [
            models.Index(fields=["owner", "-updated_at"]),
            models.Index(fields=["owner", "bookmarked", "-updated_at"]),
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
            "createdAt": self.created_at.isoformat(),
            "updatedAt": self.updated_at.isoformat(),
        }


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
