"""Models listed by a self-hosted OpenAI-compatible server are offered in the catalog and can answer."""

import pytest
from django.test import Client

from chat.models import AIModel
from testsupport.http import bearer

pytestmark = pytest.mark.django_db(transaction=True)


def test_listed_models_appear_in_the_catalog_as_available(emulator, settings):
    emulator.configure(models=["llama3.2:3b", "qwen2.5:7b"])
    settings.OPENAI_COMPATIBLE_MODELS_CACHE_SECONDS = 0

    models = {m["name"]: m for m in Client().get("/api/v1/chat/models").json()["models"]}

    for name in ("llama3.2:3b", "qwen2.5:7b"):
        assert models[name]["provider"] == "openai_compatible" and models[name]["available"] is True
    assert AIModel.objects.get(name="qwen2.5:7b").context_limit == settings.OPENAI_COMPATIBLE_CONTEXT


def test_a_listed_model_answers_a_turn_before_anyone_opened_the_catalog(emulator, owner_key, settings):
    emulator.configure(models=["mistral:7b"], reply="Bonjour from the self-hosted server")
    settings.OPENAI_COMPATIBLE_MODELS_CACHE_SECONDS = 0

    response = Client().post(
        "/api/v1/chat",
        {"prompt": "hi", "model": "mistral:7b"},
        content_type="application/json",
        headers=bearer(owner_key),
    )

    assert response.status_code == 201, response.content
    assert response.json()["chatQuery"]["response"] == "Bonjour from the self-hosted server"
    assert response.json()["chatQuery"]["metadata"]["provider"] == "openai_compatible"


def test_a_server_that_cannot_be_reached_adds_nothing(settings, db):
    settings.OPENAI_COMPATIBLE_BASE_URL = "http://127.0.0.1:9/v1"
    settings.OPENAI_COMPATIBLE_MODELS_CACHE_SECONDS = 0
    before = AIModel.objects.count()
    assert Client().get("/api/v1/chat/models").status_code == 200
    assert AIModel.objects.count() == before
