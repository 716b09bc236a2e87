from django.conf import settings
from django.db import models


class Product(models.Model):
    """A subscription tier; limits are per calendar month (the billing issue adds usage and webhooks)."""

    external_id = models.CharField(max_length=100, unique=True, help_text="The payment provider's product id")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    chat_limit = models.PositiveIntegerField(default=200)
    image_limit = models.PositiveIntegerField(default=8)
    web_search_limit = models.PositiveIntegerField(default=10)
    file_rag_limit = models.PositiveIntegerField(default=10)
    files_per_request = models.PositiveIntegerField(default=1)
    recurring_interval = models.CharField(max_length=20, blank=True)
    is_archived = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        return self.name


class UsagePeriod(models.Model):
    """One row per user per calendar month (UTC). Counters only move through billing.quota, by conditional
    UPDATEs, so concurrent requests can never push one past its limit and a new month simply starts a new row."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="usage_periods")
    month = models.DateField(help_text="The first day of the month (UTC)")
    chats_used = models.PositiveIntegerField(default=0)
    images_used = models.PositiveIntegerField(default=0)
    web_searches_used = models.PositiveIntegerField(default=0)
    file_rag_used = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "month"], name="one_usage_period_per_user_month")]
        ordering = ["-month"]

    def __str__(self):
        return f"{self.user} {self.month:%Y-%m}"


class UsageEntry(models.Model):
    """The usage ledger: one row per billable action, with the cost from the catalog's prices."""

    class Action(models.TextChoices):
        CHAT = "chat", "Chat turn"
        IMAGE = "image", "Image"
        WEB_SEARCH = "web_search", "Web search"
        FILE_RAG = "file_rag", "File RAG"
        OCR_PAGE = "ocr_page", "OCR page"
        UTILITY = "utility", "Summary or chat name"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="usage_entries")
    chat_query = models.ForeignKey("chat.ChatQuery", null=True, blank=True, on_delete=models.SET_NULL)
    action = models.CharField(max_length=20, choices=Action.choices)
    model = models.CharField(max_length=100, blank=True)
    provider = models.CharField(max_length=30, blank=True)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    quantity = models.PositiveIntegerField(default=1)
    cost_micros = models.BigIntegerField(default=0, help_text="Cost in millionths of the price currency (USD)")
    month = models.DateField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "usage entries"
        indexes = [
            models.Index(fields=["user", "month"]),
            models.Index(fields=["model", "month"]),
        ]

    def __str__(self):
        return f"{self.action} {self.model} {self.cost_micros}µ"


class WebhookEvent(models.Model):
    """One received payment-provider webhook delivery. The unique delivery id (the `webhook-id` header) is inserted
    in the same transaction as the event's effect, so a redelivered or concurrently duplicated event is applied
    at most once (billing/webhooks.py)."""

    delivery_id = models.CharField(max_length=255, unique=True)
    type = models.CharField(max_length=100)
    received_at = models.DateTimeField(auto_now_add=True)
    payload = models.JSONField()
    applied = models.BooleanField(default=False, help_text="Handled by a handler (unhandled types are only recorded)")
    outcome = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-received_at"]
        indexes = [models.Index(fields=["type", "received_at"])]

    def __str__(self):
        return f"{self.type} {self.delivery_id}"


class Charge(models.Model):
    """One reservation of quota units for a billable action, from the moment they are taken until the action is
    settled (kept, and written to the ledger when it was metered) or released (given back). Only billing.charges
    moves a charge, by conditional UPDATEs on `state='held'`, so two settlers can never both charge or both give
    back the same units."""

    class State(models.TextChoices):
        HELD = "held"
        SETTLED = "settled"
        RELEASED = "released"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="charges")
    period = models.ForeignKey(UsagePeriod, on_delete=models.CASCADE, related_name="charges")
    kind = models.CharField(max_length=20, help_text="The quota counted: chat, image, web_search or file_rag")
    amount = models.PositiveIntegerField(default=1)
    # By string reference: billing never imports chat. Null until the turn's query row exists (the quota is taken
    # before it is created), and after the chat is deleted (the charge stays, as the ledger does).
    chat_query = models.ForeignKey(
        "chat.ChatQuery", null=True, blank=True, on_delete=models.SET_NULL, related_name="charges"
    )
    state = models.CharField(max_length=10, choices=State.choices, default=State.HELD)
    entry = models.OneToOneField(
        UsageEntry, null=True, blank=True, on_delete=models.SET_NULL, help_text="The ledger row written on settling"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    closed_at = models.DateTimeField(null=True, blank=True, help_text="When it was settled or released")

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(fields=["chat_query", "state"]),
            models.Index(fields=["state", "created_at"]),
        ]

    def __str__(self):
        return f"{self.kind}×{self.amount} {self.state}"
