"""Which models exist and which can answer now."""

from dataclasses import dataclass

from django.conf import settings

from chat.models import AIModel
from chat.providers import unavailable_reason
from chat.providers.openai_provider import openai_compatible_models

LOCAL_MODEL_NOTE = "A small offline demo model running on this server's CPU: fast, private, and often wrong."


@dataclass(frozen=True)
class CatalogEntry:
    model: AIModel
    unavailable_reason: str | None

    @property
    def available(self) -> bool:
        return self.unavailable_reason is None

    def as_dict(self) -> dict:
        m = self.model
        return {
            "name": m.name,
            "fullName": m.full_name,
            "provider": m.provider,
            "category": m.category,
            "description": LOCAL_MODEL_NOTE if m.provider == AIModel.Provider.LOCAL else m.description,
            "limit": m.context_limit,
            "pro": m.pro,
            "vision": m.vision,  # sees images: a turn's images reach it as images (chat/vision.py), not only OCR
            "available": self.available,
            "unavailableReason": self.unavailable_reason,
        }


def sync_self_hosted_models() -> None:
    """Offer every model a self-hosted OpenAI-compatible server lists, as a catalog row staff can then edit or
    disable. Rows are only ever added here (a name the catalog already has is left alone)."""
    listed = openai_compatible_models()
    if not listed:
        return
    known = set(AIModel.objects.filter(name__in=listed).values_list("name", flat=True))
    for model_id in listed:
        if model_id not in known:
            AIModel.objects.get_or_create(
                name=model_id,
                defaults={
                    "full_name": model_id,
                    "provider": AIModel.Provider.OPENAI_COMPATIBLE,
                    "context_limit": settings.OPENAI_COMPATIBLE_CONTEXT,
                    "description": "Served by your self-hosted OpenAI-compatible server",
                    "sort_order": 500,
                },
            )


def catalog() -> list[CatalogEntry]:
    """Every enabled model with its availability, in display order."""
    sync_self_hosted_models()
    reasons: dict[str, str | None] = {}
    entries = []
    for model in AIModel.objects.filter(enabled=True):
        if model.provider not in reasons:
            reasons[model.provider] = unavailable_reason(model.provider)
        entries.append(CatalogEntry(model, reasons[model.provider]))
    return entries


def default_model_name() -> str:
    """The configured default when it can answer, else the first model that can."""
    entries = catalog()
    for entry in entries:
        if entry.model.name == settings.DEFAULT_MODEL and entry.available:
            return entry.model.name
    for entry in entries:
        if entry.available and entry.model.category == AIModel.Category.TEXT:
            return entry.model.name
    return settings.DEFAULT_MODEL
