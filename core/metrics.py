"""QueryNox's own Prometheus metrics (django-prometheus adds HTTP, database and cache ones), and /metrics.

Every metric lives in prometheus_client's default registry, per process: each daphne instance is one scrape target.
Call sites elsewhere are one line each; the helpers here keep the label logic out of the pipeline."""

import base64
import hmac

from django.conf import settings
from django.http import HttpResponse, HttpResponseNotFound
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest

TIME_TO_FIRST_TOKEN = Histogram(
    "querynox_time_to_first_token_seconds",
    "From the start of a turn to the first streamed token.",
    ["model", "provider"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 30, 60),
)
TOKENS_STREAMED = Counter(
    "querynox_tokens_streamed_total",
    "Answer tokens streamed (the provider's output-token count, else the number of streamed chunks).",
    ["model", "provider"],
)
TURNS = Counter("querynox_turns_total", "Finished turns by outcome (complete, stopped, error).", ["outcome"])
PROVIDER_ERRORS = Counter(
    "querynox_provider_errors_total", "Provider failures (including those a fallback recovered).", ["provider"]
)
FALLBACKS = Counter(
    "querynox_fallbacks_total", "Turns handed to the next fallback model, by the provider that failed.", ["provider"]
)
QUOTA_REFUSALS = Counter("querynox_quota_refusals_total", "Requests refused at the monthly quota.", ["kind"])
OPEN_WEBSOCKETS = Gauge("querynox_websockets_open", "Chat WebSockets open now.")
GENERATION_QUEUE = Gauge("querynox_generation_queue_length", "Turns waiting for a local-model slot.")


def record_turn(model, outcome: str, time_to_first_token: float | None, usage, chunks: int) -> None:
    """Called once per turn, from the pipeline's finally block."""
    TURNS.labels(str(outcome)).inc()
    if time_to_first_token is not None:
        TIME_TO_FIRST_TOKEN.labels(model.name, model.provider).observe(time_to_first_token)
    tokens = usage.output_tokens if usage is not None and usage.output_tokens else chunks
    if tokens:
        TOKENS_STREAMED.labels(model.name, model.provider).inc(tokens)


def record_fallback(provider: str) -> None:
    PROVIDER_ERRORS.labels(provider).inc()
    FALLBACKS.labels(provider).inc()


def metrics_credentials_match(authorization: str) -> bool:
    username, password = settings.METRICS_USERNAME, settings.METRICS_PASSWORD
    if not (username and password) or not authorization.lower().startswith("basic "):
        return False
    try:
        given = base64.b64decode(authorization[6:].strip()).decode()
    except (ValueError, UnicodeDecodeError):
        return False
    given_user, _, given_password = given.partition(":")
    return hmac.compare_digest(given_user, username) & hmac.compare_digest(given_password, password)


def metrics_view(request):
    """Prometheus text format, behind HTTP basic auth (METRICS_USERNAME / METRICS_PASSWORD).

    With no credentials configured the endpoint does not exist (404); otherwise a missing or wrong
    Authorization header gets 401 with a Basic challenge."""
    if not (settings.METRICS_USERNAME and settings.METRICS_PASSWORD):
        return HttpResponseNotFound("Not found", content_type="text/plain")
    if not metrics_credentials_match(request.headers.get("Authorization", "")):
        response = HttpResponse("Authentication required", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Basic realm="QueryNox metrics", charset="UTF-8"'
        return response
    response = HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
    response["Cache-Control"] = "no-store"
    return response
