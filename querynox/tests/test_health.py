import base64

import pytest
from django.test import Client

from accounts.models import ApiKey
from testsupport.http import bearer


def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.mark.django_db(transaction=True)
def test_plain_health_is_cheap_and_public():
    response = Client().get("/api/v1/health")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("who", ["anonymous", "regular user", "wrong metrics password"])
def test_deep_health_is_refused_without_staff_or_metrics_credentials(who, owner_key, settings):
    settings.METRICS_USERNAME, settings.METRICS_PASSWORD = "prom", "s3cret"
    headers = {"regular user": bearer(owner_key), "wrong metrics password": basic("prom", "nope")}.get(who, {})
    response = Client().get("/api/v1/health?deep=1", headers=headers)
    assert response.status_code == 401


@pytest.mark.django_db(transaction=True)
def test_deep_health_checks_database_storage_and_each_available_provider(scripted, owner, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    settings.METRICS_USERNAME, settings.METRICS_PASSWORD = "prom", "s3cret"

    report = Client().get("/api/v1/health?deep=1", headers=basic("prom", "s3cret")).json()

    assert report["checks"]["database"] is True and report["checks"]["storage"] is True
    assert report["checks"]["provider:scripted"] is True
    assert "provider:openai" not in report["checks"]  # no key: not configured, so not checked


@pytest.mark.django_db(transaction=True)
def test_a_failing_provider_makes_deep_health_503_for_staff(scripted, owner, monkeypatch):
    owner.is_staff = True
    owner.save()
    key = ApiKey.generate(owner, "ops")[1]

    async def unhealthy():
        return False

    monkeypatch.setattr(scripted, "health", unhealthy)
    response = Client().get("/api/v1/health?deep=1", headers=bearer(key))

    assert response.status_code == 503
    assert response.json()["checks"]["provider:scripted"] is False and response.json()["status"] == "degraded"
