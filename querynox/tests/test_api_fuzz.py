"""Schema-driven fuzzing of /api/v1 against a real server: every operation of /api/v1/openapi.json, with generated
(valid and invalid) parameters and bodies, sent without credentials, with an API key, and with an API key and the
ids of a real chat, query and document of that key's owner.

No answer may be a 5xx, except 503 from the payments endpoints on a server without Polar configured, and every
answer must match the schema: a declared status code, the declared content type, and a body the declared schema
accepts. The run is bounded (hypothesis examples per operation, no shrinking) to a couple of minutes in CI.

The turns run on the real local model, cut to a few tokens (ANSWER_MAX_TOKENS) so each generated turn is cheap; the
turn-starting operations get fewer examples than the rest."""

import json
import re
import time
import uuid
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from testsupport.live import LiveServer

pytestmark = [pytest.mark.fuzz, pytest.mark.local_model]

# The operations that start a turn: each valid example runs the model.
TURN_PATHS = r"^/api/v1/chat(/\{chat_id\}(/queries/\{query_id\}/(regenerate|edit))?)?(/stream)?$"
# Examples per operation (each sent up to three ways); the turn-starting ones run the model for each valid one.
EXAMPLES = 30
TURN_EXAMPLES = 6
CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance]
REQUEST_TIMEOUT = 60
FUZZ_SETTINGS = {
    "deadline": None,
    "derandomize": True,  # the same cases on every run: a CI failure reproduces locally
    "database": None,  # nothing written into the work tree
    "phases": [Phase.explicit, Phase.generate],  # no shrinking: it could take longer than the whole budget
    "suppress_health_check": list(HealthCheck),
}

STATS = Counter()
SERVER_ERRORS: list[str] = []


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    server = LiveServer(
        tmp_path_factory.mktemp("fuzz-server"),
        extra_env={
            "LOCAL_MODEL_THREADS": "1",
            "ANSWER_MAX_TOKENS": "16",
            "CHAT_NAMING": "false",
            # The fuzzer reads shared chats far faster than any person: a 429 is a right answer, but not a useful one.
            "PUBLIC_CHAT_RATE_LIMIT": "100000",
            "FREE_CHAT_LIMIT": "100000",
        },
    ).start()
    yield server
    server.stop()
    print(f"\nAPI fuzz: {dict(STATS)}; 5xx outside payments' 503: {len(SERVER_ERRORS)}")


@pytest.fixture(scope="module")
def fuzz_key(fuzz_server):
    return fuzz_server.create_user_with_key("fuzz@example.com", "a long fuzzing password")


@pytest.fixture(scope="module")
def real_ids(fuzz_server, fuzz_key):
    """A chat with one answered turn and one document, so generated requests also reach the owner's data."""
    import httpx

    files = {"files": ("notes.txt", b"Fuzzing notes.\n", "text/plain")}
    response = httpx.post(
        fuzz_server.url + "/api/v1/chat",
        data={"prompt": "Say hello."},
        files=files,
        headers={"Authorization": f"Bearer {fuzz_key}"},
        timeout=REQUEST_TIMEOUT,
    )
    assert response.status_code == 201, response.text
    chat_id = response.json()["chat"]["id"]
    detail = httpx.get(
        f"{fuzz_server.url}/api/v1/chat/{chat_id}", headers={"Authorization": f"Bearer {fuzz_key}"}, timeout=30
    ).json()
    shared = httpx.patch(
        f"{fuzz_server.url}/api/v1/chat/{chat_id}/share",
        json={"shared": True},
        headers={"Authorization": f"Bearer {fuzz_key}"},
        timeout=30,
    )
    assert shared.status_code == 200, shared.text
    return {
        "chat_id": chat_id,
        "query_id": response.json()["chatQuery"]["id"],
        "document_id": str(detail["documents"][0]["id"]),
    }


@pytest.fixture(scope="module")
def live_schema(fuzz_server):
    return schemathesis.openapi.from_url(fuzz_server.url + "/api/v1/openapi.json")


def operation_labels() -> list[str]:
    """The operations, known at collection time from the same code the server runs (one test per operation)."""
    from querynox.api import api

    schema = schemathesis.openapi.from_dict(json.loads(json.dumps(api.get_openapi_schema())))
    return [result.ok().label for result in schema.get_all_operations()]


def send_and_check(case, fuzz_server, headers, label):
    """Send one case, count it, and fail on a 5xx (payments' 503 excepted) or an answer the schema contradicts."""
    started = time.monotonic()
    response = case.call(base_url=fuzz_server.url, headers=headers, timeout=REQUEST_TIMEOUT)
    STATS["cases"] += 1
    STATS[f"{response.status_code // 100}xx"] += 1
    STATS["seconds"] = STATS["seconds"] + round(time.monotonic() - started, 3)
    if response.status_code >= 500:
        code = _json(response).get("code")
        if not (response.status_code == 503 and code == "payments_not_configured"):
            SERVER_ERRORS.append(f"{label} {case.method} {case.formatted_path} -> {response.status_code} {code}")
            raise AssertionError(f"{label}: {case.method} {case.formatted_path} answered {response.status_code}: "
                                 f"{response.text[:500]}\nreproduce: {case.as_curl_command(headers)}")
    case.validate_response(response, checks=CHECKS, headers=headers)


def _json(response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def with_real_ids(case, ids) -> None:
    for name in ("chat_id", "query_id", "document_id"):
        if case.path_parameters and name in case.path_parameters:
            case.path_parameters[name] = ids[name]


def check_all_ways(case, fuzz_server, fuzz_key, real_ids):
    send_and_check(case, fuzz_server, {}, "anonymous")
    send_and_check(case, fuzz_server, {"Authorization": f"Bearer {fuzz_key}"}, "with a key")
    if case.path_parameters and {"chat_id", "query_id", "document_id"} & set(case.path_parameters):
        with_real_ids(case, real_ids)
        send_and_check(case, fuzz_server, {"Authorization": f"Bearer {fuzz_key}"}, "with a key and real ids")


@pytest.mark.parametrize("label", operation_labels())
def test_the_operation_answers_within_its_schema(label, live_schema, fuzz_server, fuzz_key, real_ids):
    operation = live_schema.find_operation_by_label(label)
    assert operation is not None, f"{label} is not in the live server's schema"
    examples = TURN_EXAMPLES if re.match(TURN_PATHS, operation.path) else EXAMPLES
    cases = operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(GenerationMode.NEGATIVE)

    @settings(max_examples=examples, **FUZZ_SETTINGS)
    @given(case=cases)
    def fuzz(case):
        check_all_ways(case, fuzz_server, fuzz_key, real_ids)

    fuzz()


def test_an_unknown_id_is_a_404_in_the_error_shape(fuzz_server, fuzz_key):
    import httpx

    response = httpx.get(
        f"{fuzz_server.url}/api/v1/chat/{uuid.uuid4()}", headers={"Authorization": f"Bearer {fuzz_key}"}, timeout=30
    )

    assert response.status_code == 404
    assert set(response.json()) >= {"error", "code"}
