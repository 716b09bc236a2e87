"""The seed's seven models (names, provider ids, context limits, pro flags) plus the local CPU model."""

from django.db import migrations

SEED_MODELS = [
    # name, full_name, provider, category, description, context_limit, pro
    (
        "smollm2-135m",
        "SmolLM2-135M-Instruct",
        "local",
        "Text Generation",
        "A small offline demo model running on this server's CPU",
        2048,
        False,
    ),
    (
        "Claude 3.5 Sonnet",
        "claude-3-5-sonnet-20240620",
        "anthropic",
        "Text Generation",
        "Fast and efficient text generation",
        200000,
        True,
    ),
    (
        "llama-3.3-70b-versatile",
        "llama-3.3-70b-versatile",
        "groq",
        "Text Generation",
        "Powerful open-source model via Groq",
        32768,
        False,
    ),
    (
        "gpt-3.5-turbo",
        "gpt-3.5-turbo",
        "openai",
        "Text Generation",
        "Reliable and versatile text generation",
        16385,
        False,
    ),
    (
        "gemini-1.5-flash",
        "gemini-1.5-flash",
        "gemini",
        "Text Generation",
        "Google's advanced language model",
        1000000,
        False,
    ),
    ("dall-e-3", "dall-e-3", "openai", "Image Generation", "High-quality image generation", 4000, False),
    (
        "gpt-oss-120b",
        "openai/gpt-oss-120b",
        "openrouter",
        "Text Generation",
        "OpenAI open-weight 120B model via OpenRouter",
        128000,
        False,
    ),
    (
        "grok-3-mini",
        "x-ai/grok-3-mini",
        "openrouter",
        "Text Generation",
        "xAI Grok 3 Mini via OpenRouter",
        128000,
        True,
    ),
]


def seed(apps, schema_editor):
    AIModel = apps.get_model("chat", "AIModel")
    for order, (name, full_name, provider, category, description, limit, pro) in enumerate(SEED_MODELS):
        AIModel.objects.update_or_create(
            name=name,
            defaults=dict(
                full_name=full_name,
                provider=provider,
                category=category,
                description=description,
                context_limit=limit,
                pro=pro,
                sort_order=order * 10,
            ),
        )


def unseed(apps, schema_editor):
    apps.get_model("chat", "AIModel").objects.filter(name__in=[row[0] for row in SEED_MODELS]).delete()


class Migration(migrations.Migration):
    dependencies = [("chat", "0001_initial")]
    operations = [migrations.RunPython(seed, unseed)]
