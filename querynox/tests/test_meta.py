"""Meta endpoints: health, help and the interactive API documentation."""

import pytest
from django.test import Client

CHAT_PATHS = {
    "/api/v1/chat": {"post"},
    "/api/v1/chat/stream": {"post"},
    "/api/v1/chat/models": {"get"},
    "/api/v1/chat/user": {"get"},
    "/api/v1/chat/{chat_id}": {"get", "post", "patch", "delete"},
    "/api/v1/chat/{chat_id}/stream": {"post"},
    "/api/v1/chat/{chat_id}/share": {"patch"},
    "/api/v1/chat/{chat_id}/bookmark": {"patch"},
    "/api/v1/chat/queries/{query_id}/events": {"get"},
    "/api/v1/chat/queries/{query_id}/stop": {"post"},
    "/api/v1/user": {"get"},
    "/api/v1/user/bookmarked-chats": {"get"},
    "/api/v1/public/chat/{chat_id}": {"get"},
    "/api/v1/health": {"get"},
    "/api/v1/help": {"get"},
}


def test_health_answers_ok(db):
    response = Client().get("/api/v1/health")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_help_points_to_the_docs(db):
    body = Client().get("/api/v1/help").json()

    assert body["docs"] == "http://testserver/api/v1/docs"
    assert body["openapi"] == "http://testserver/api/v1/openapi.json"
    assert "/api/v1/docs" in body["message"]


def test_the_docs_page_loads_and_uses_the_openapi_schema(db):
    response = Client().get("/api/v1/docs")

    assert response.status_code == 200
    html = response.content.decode()
    assert "/api/v1/openapi.json" in html
    assert "https://" not in html and "cdn" not in html.lower()  # swagger-ui is served from /static/


@pytest.fixture
def schema(db):
    response = Client().get("/api/v1/openapi.json")
    assert response.status_code == 200
    return response.json()


def test_the_schema_lists_every_endpoint(schema):
    listed = {path: set(operations) for path, operations in schema["paths"].items()}

    for path, methods in CHAT_PATHS.items():
        assert path in listed, path
        assert methods <= listed[path], path


def test_the_schema_documents_bearer_auth_on_private_endpoints_only(schema):
    schemes = schema["components"]["securitySchemes"]
    assert any(s.get("scheme") == "bearer" for s in schemes.values())

    def secured(path, method):
        return bool(schema["paths"][path][method].get("security"))

    assert secured("/api/v1/chat", "post")
    assert secured("/api/v1/user", "get")
    assert not secured("/api/v1/health", "get")
    assert not secured("/api/v1/chat/models", "get")
    assert not secured("/api/v1/public/chat/{chat_id}", "get")


def test_unknown_api_paths_are_404(db):
    assert Client().get("/api/v1/no-such-thing").status_code == 404
