"""AIModel.vision: the catalog says which models see images (chat/vision.py sends them a turn's images as images).

Set here for the catalog's vision-capable models by their provider ids; staff set it in admin for models added
later."""

from django.db import migrations, models

# Provider ids (prefixes) of the vision-capable model families, per provider. Kept here, not imported from the
# app: a migration must mean the same thing forever.
VISION_PREFIXES = {
    "openai": ("gpt-4o", "gpt-4-turbo", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4"),
    "anthropic": ("claude-3", "claude-sonnet-4", "claude-opus-4", "claude-haiku-4", "claude-4"),
    "gemini": ("gemini-1.5", "gemini-2", "gemini-3"),
}
NOT_VISION = ("o1-mini", "o1-preview", "o3-mini")  # text-only members of those families


def sees_images(provider: str, full_name: str) -> bool:
    prefixes = VISION_PREFIXES.get(provider, ())
    return full_name.startswith(prefixes) and not full_name.startswith(NOT_VISION)


def mark_vision_models(apps, schema_editor):
    AIModel = apps.get_model("chat", "AIModel")
    vision = [m.pk for m in AIModel.objects.filter(category="Text Generation") if sees_images(m.provider, m.full_name)]
    AIModel.objects.filter(pk__in=vision).update(vision=True)


class Migration(migrations.Migration):
    dependencies = [("chat", "0009_folders_tags_pins")]

    operations = [
        migrations.AddField(
            model_name="aimodel",
            name="vision",
            field=models.BooleanField(
                default=False,
                help_text="Sees images: a turn's attached images are sent to it as images, not only as OCR text",
            ),
        ),
        migrations.RunPython(mark_vision_models, migrations.RunPython.noop),
    ]
