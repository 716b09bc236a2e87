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
