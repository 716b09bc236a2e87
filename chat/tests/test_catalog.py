"""The model catalog: what the data migration seeds, what GET /chat/models reports, and the admin."""

import pytest
from django.test import Client, override_settings

from accounts.models import ApiKey, User
from chat.models import AIModel

# name: (provider, category, context limit, pro) — the seed's seven models plus the local CPU model.
SEEDED = {
    "Claude 3.5 Sonnet": ("anthropic", "Text Generation", 200_000, True),
    "llama-3.3-70b-versatile": ("groq", "Text Generation", 32_768, False),
    "gpt-3.5-turbo": ("openai", "Text Generation", 16_385, False),
    "gemini-1.5-flash": ("gemini", "Text Generation", 1_000_000, False),
    "dall-e-3": ("openai", "Image Generation", 4_000, False),
    "gpt-oss-120b": ("openrouter", "Text Generation", 128_000, False),
    "grok-3-mini": ("openrouter", "Text Generation", 128_000, True),
    "smollm2-135m": ("local", "Text Generation", 2_048, False),
}
KEY_FOR_PROVIDER = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "CLAUDE_API_KEY",
    "groq": "GROQ_API_KEY",
    "gemini": "GEMINI_API_KEY",
    "openrouter": "OPENROUTER_API_KEY",
}


def models_by_name(client=None) -> dict[str, dict]:
    response = (client or Client()).get("/api/v1/chat/models")
    assert response.status_code == 200
    return {m["name"]: m for m in response.json()["models"]}


def test_the_migration_seeds_the_catalog(db):
    seeded = {m.name: (m.provider, m.category, m.context_limit, m.pro) for m in AIModel.objects.all()}

    assert seeded == SEEDED
    assert AIModel.objects.filter(enabled=True).count() == len(SEEDED)
    assert all(m.full_name for m in AIModel.objects.all())


def test_the_local_model_comes_first(db):
    assert AIModel.objects.first().name == "smollm2-135m"


def test_models_lists_every_enabled_model_without_credentials(db):
    models = models_by_name()

    assert set(models) == set(SEEDED)
    for name, (provider, category, limit, pro) in SEEDED.items():
        entry = models[name]
        assert (entry["provider"], entry["category"], entry["limit"], entry["pro"]) == (provider, category, limit, pro)
        assert entry["fullName"]
        assert entry["description"]


def test_the_local_model_is_available_and_cloud_models_say_which_key_is_missing(db):
    models = models_by_name()

    assert (models["smollm2-135m"]["available"], models["smollm2-135m"]["unavailableReason"]) == (True, None)
    for name, (provider, *_) in SEEDED.items():
        if provider == "local":
            continue
        assert models[name]["available"] is False
        assert models[name]["unavailableReason"] == f"{KEY_FOR_PROVIDER[provider]} is not set"


def test_a_key_changes_the_reason_for_that_providers_models_only(db):
    with override_settings(OPENAI_API_KEY="sk-test"):
        models = models_by_name()

    for name in ("gpt-3.5-turbo", "dall-e-3"):
        assert models[name]["unavailableReason"] is None
        assert models[name]["available"] is True
    assert models["gemini-1.5-flash"]["unavailableReason"] == "GEMINI_API_KEY is not set"
    assert models["smollm2-135m"]["available"] is True


def test_a_disabled_model_leaves_the_catalog(db):
    AIModel.objects.filter(name="grok-3-mini").update(enabled=False)

    assert "grok-3-mini" not in models_by_name()


def test_the_catalog_follows_sort_order(db):
    AIModel.objects.filter(name="gpt-oss-120b").update(sort_order=0)
    AIModel.objects.filter(name="smollm2-135m").update(sort_order=5)

    assert list(models_by_name())[:2] == ["gpt-oss-120b", "smollm2-135m"]


# --- admin ---------------------------------------------------------------------------------------------------


@pytest.fixture
def admin_client(owner, make_chat):
    chat = make_chat(owner, [("Admin-visible question", "Admin-visible answer")])
    ApiKey.generate(owner, "laptop")
    admin = User.objects.create_superuser("admin@example.com", "admin password 123")
    client = Client()
    client.force_login(admin)
    client.chat = chat
    return client


@pytest.mark.parametrize(
    "path,shows",
    [
        ("/admin/chat/aimodel/", "smollm2-135m"),
        ("/admin/chat/chat/", "Admin-visible question"),
        ("/admin/chat/chatquery/", "Admin-visible question"),
        ("/admin/accounts/user/", "owner@example.com"),
        ("/admin/accounts/apikey/", "laptop"),
    ],
)
def test_admin_changelists_load_for_a_superuser(admin_client, path, shows):
    response = admin_client.get(path)

    assert response.status_code == 200
    assert shows in response.content.decode()


def test_admin_change_pages_load(admin_client):
    chat = admin_client.chat
    for path in (
        f"/admin/chat/chat/{chat.pk}/change/",
        f"/admin/chat/chatquery/{chat.queries.get().pk}/change/",
        f"/admin/chat/aimodel/{AIModel.objects.get(name='gpt-3.5-turbo').pk}/change/",
        f"/admin/accounts/user/{chat.owner_id}/change/",
        "/admin/accounts/user/add/",
    ):
        assert admin_client.get(path).status_code == 200, path


def test_admin_is_closed_to_ordinary_users(owner_client):
    response = owner_client.get("/admin/chat/aimodel/")

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")
