"""Clerk session tokens: RS256 JWTs verified against a JWKS (served here on loopback) or a PEM key; a valid token
for a new Clerk user creates that user once; anything else is a 401."""

import base64
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from asgiref.sync import async_to_sync
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.db import connection
from django.test import Client
from jwt.algorithms import RSAAlgorithm

from accounts.auth import BearerWebSocketMiddleware
from accounts.clerk import jwks_cache
from accounts.models import User
from testsupport.http import bearer

ISSUER = "https://example-instance.clerk.accounts.dev"
ORIGIN = "https://app.example.com"


def new_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(private_key) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def jwk(private_key, kid: str) -> dict:
    return {**RSAAlgorithm.to_jwk(private_key.public_key(), as_dict=True), "kid": kid, "use": "sig", "alg": "RS256"}


@pytest.fixture(scope="module")
def keys():
    return {"current": new_key(), "next": new_key(), "attacker": new_key()}


class JwksServer:
    """A JWKS endpoint on 127.0.0.1 whose key list the test controls; counts the fetches."""

    def __init__(self):
        self.document = {"keys": []}
        self.fetches = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                server.fetches += 1
                body = json.dumps(server.document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def jwks_server():
    server = JwksServer()
    yield server
    server.stop()


@pytest.fixture
def clerk(jwks_server, keys, settings):
    """Clerk configured against the loopback JWKS, which publishes the "current" key as kid-1."""
    jwks_server.document = {"keys": [jwk(keys["current"], "kid-1")]}
    jwks_server.fetches = 0
    jwks_cache.reset()
    settings.CLERK_JWKS_URL = jwks_server.url
    settings.CLERK_JWT_KEY = ""
    settings.CLERK_ISSUER = ISSUER
    settings.CLERK_AUTHORIZED_PARTIES = [ORIGIN]
    settings.CLERK_LEEWAY_SECONDS = 5
    settings.CLERK_JWKS_CACHE_SECONDS = 3600
    settings.CLERK_JWKS_MIN_REFETCH_SECONDS = 0
    yield jwks_server
    jwks_cache.reset()


def claims(**changes) -> dict:
    now = int(time.time())
    base = {
        "sub": "user_2abcDEF",
        "iss": ISSUER,
        "azp": ORIGIN,
        "iat": now - 10,
        "nbf": now - 10,
        "exp": now + 60,
        "sid": "sess_123",
        "email": "ada@example.com",
    }
    base.update(changes)
    return {name: value for name, value in base.items() if value is not None}


def token(private_key, kid="kid-1", **changes) -> str:
    return jwt.encode(claims(**changes), private_key, algorithm="RS256", headers={"kid": kid})


def whoami(raw_token):
    return Client().get("/api/v1/user", headers=bearer(raw_token))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(header: dict, payload: dict, signature: bytes = b"") -> str:
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}.{b64url(signature)}"


# --- accepted -------------------------------------------------------------------------------------------------


def test_a_valid_token_authenticates_and_creates_the_user(db, clerk, keys):
    response = whoami(token(keys["current"]))

    assert response.status_code == 200
    body = response.json()
    assert (body["clerkId"], body["email"]) == ("user_2abcDEF", "ada@example.com")
    user = User.objects.get(clerk_id="user_2abcDEF")
    assert not user.has_usable_password()


def test_the_next_request_finds_the_same_user(db, clerk, keys):
    first = whoami(token(keys["current"])).json()
    second = whoami(token(keys["current"], email="changed@example.com")).json()

    assert first["id"] == second["id"]
    assert User.objects.filter(clerk_id="user_2abcDEF").count() == 1


def test_a_token_without_an_email_claim_gets_a_placeholder_address(db, clerk, keys):
    response = whoami(token(keys["current"], sub="user_NoMail", email=None))

    assert response.status_code == 200
    assert response.json()["email"] == "user_nomail@clerk.invalid"


def test_an_email_that_belongs_to_another_account_is_not_linked(db, clerk, keys, owner):
    response = whoami(token(keys["current"], sub="user_Claims_Owner", email=owner.email))

    assert response.status_code == 200
    assert response.json()["id"] != owner.pk
    assert response.json()["email"].endswith("@clerk.invalid")
    owner.refresh_from_db()
    assert owner.clerk_id is None


def test_the_jwks_is_fetched_once_and_cached(db, clerk, keys):
    for _ in range(3):
        assert whoami(token(keys["current"])).status_code == 200

    assert clerk.fetches == 1


def test_exp_within_the_leeway_is_accepted(db, clerk, keys):
    assert whoami(token(keys["current"], exp=int(time.time()) - 2)).status_code == 200


def test_a_pem_key_verifies_without_any_jwks_fetch(db, clerk, keys, settings):
    settings.CLERK_JWT_KEY = public_pem(keys["current"])

    assert whoami(token(keys["current"], kid="not-in-any-jwks")).status_code == 200
    assert whoami(token(keys["attacker"])).status_code == 401
    assert clerk.fetches == 0


def test_without_issuer_and_party_settings_those_claims_are_not_checked(db, clerk, keys, settings):
    settings.CLERK_ISSUER = ""
    settings.CLERK_AUTHORIZED_PARTIES = []

    assert whoami(token(keys["current"], iss="https://elsewhere.example", azp=None)).status_code == 200


# --- refused --------------------------------------------------------------------------------------------------


def now_plus(seconds: int) -> int:
    return int(time.time()) + seconds


REFUSED = {
    "expired": lambda k: token(k["current"], exp=now_plus(-60)),
    "not yet valid": lambda k: token(k["current"], nbf=now_plus(60)),
    "no exp": lambda k: token(k["current"], exp=None),
    "no sub": lambda k: token(k["current"], sub=None),
    "wrong key, known kid": lambda k: token(k["attacker"]),
    "wrong issuer": lambda k: token(k["current"], iss="https://evil.clerk.accounts.dev"),
    "no issuer": lambda k: token(k["current"], iss=None),
    "wrong azp": lambda k: token(k["current"], azp="https://evil.example"),
    "no azp": lambda k: token(k["current"], azp=None),
    "no kid": lambda k: jwt.encode(claims(), k["current"], algorithm="RS256"),
    "tampered payload": lambda k: with_payload(token(k["current"]), claims(sub="user_admin")),
    "malformed": lambda k: "abc.def.ghi",
    "garbage": lambda k: "not-a-token-at-all",
    "truncated signature": lambda k: token(k["current"])[:-10],
    "alg none": lambda k: unsigned_token({"alg": "none", "typ": "JWT", "kid": "kid-1"}, claims()),
    "alg none, uppercase": lambda k: unsigned_token({"alg": "NONE", "kid": "kid-1"}, claims()),
    "HS256 with the public key as secret": lambda k: hs256_with_public_key(k["current"]),
    "RS512": lambda k: jwt.encode(claims(), k["current"], algorithm="RS512", headers={"kid": "kid-1"}),
}


def with_payload(signed: str, payload: dict) -> str:
    header, _, signature = signed.split(".")
    return f"{header}.{b64url(json.dumps(payload).encode())}.{signature}"


def hs256_with_public_key(private_key) -> str:
    """The classic confusion attack: an HMAC 'signature' keyed with the (public) verification key."""
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "kid-1"}).encode())
    payload = b64url(json.dumps(claims()).encode())
    signing_input = f"{header}.{payload}".encode()
    mac = hmac.new(public_pem(private_key).encode(), signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(mac)}"


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_invalid_tokens_are_401_and_create_nobody(db, clerk, keys, case):
    response = whoami(REFUSED[case](keys))

    assert response.status_code == 401
    assert response.json()["code"] == "unauthenticated"
    assert not User.objects.filter(clerk_id__isnull=False).exists()


@pytest.mark.parametrize("case", ["alg none", "HS256 with the public key as secret"])
def test_algorithm_attacks_are_refused_with_a_pem_key_too(db, clerk, keys, settings, case):
    settings.CLERK_JWT_KEY = public_pem(keys["current"])

    assert whoami(REFUSED[case](keys)).status_code == 401


def test_tokens_are_refused_when_clerk_is_not_configured(db, clerk, keys, settings):
    settings.CLERK_JWKS_URL = ""

    assert whoami(token(keys["current"])).status_code == 401
    assert clerk.fetches == 0
    assert not User.objects.exists()


def test_a_deactivated_user_is_refused(db, clerk, keys):
    assert whoami(token(keys["current"])).status_code == 200
    User.objects.filter(clerk_id="user_2abcDEF").update(is_active=False)

    assert whoami(token(keys["current"])).status_code == 401


# --- key rotation ---------------------------------------------------------------------------------------------


def test_an_unknown_kid_refetches_the_jwks_once_and_finds_the_rotated_key(db, clerk, keys):
    assert whoami(token(keys["current"])).status_code == 200
    assert clerk.fetches == 1

    clerk.document = {"keys": [jwk(keys["current"], "kid-1"), jwk(keys["next"], "kid-2")]}
    assert whoami(token(keys["next"], kid="kid-2")).status_code == 200
    assert clerk.fetches == 2

    assert whoami(token(keys["next"], kid="kid-2")).status_code == 200
    assert whoami(token(keys["current"])).status_code == 200
    assert clerk.fetches == 2


def test_a_kid_that_is_nowhere_costs_one_refetch_and_is_refused(db, clerk, keys):
    assert whoami(token(keys["current"])).status_code == 200

    assert whoami(token(keys["attacker"], kid="kid-forged")).status_code == 401
    assert clerk.fetches == 2


def test_unknown_kids_refetch_at_most_once_per_interval(db, clerk, keys, settings):
    settings.CLERK_JWKS_MIN_REFETCH_SECONDS = 60
    assert whoami(token(keys["current"])).status_code == 200

    for attempt in range(5):
        assert whoami(token(keys["attacker"], kid=f"kid-forged-{attempt}")).status_code == 401

    assert clerk.fetches == 1


def test_an_expired_cache_is_refetched(db, clerk, keys, settings):
    settings.CLERK_JWKS_CACHE_SECONDS = 0
    settings.CLERK_JWKS_MIN_REFETCH_SECONDS = 0

    assert whoami(token(keys["current"])).status_code == 200
    assert whoami(token(keys["current"])).status_code == 200
    assert clerk.fetches == 2


# --- concurrency ----------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_first_requests_create_one_user(clerk, keys):
    raw = token(keys["current"], sub="user_Concurrent", email="race@example.com")
    barrier = threading.Barrier(2)
    results = []

    def request():
        barrier.wait()
        try:
            results.append(whoami(raw))
        finally:
            connection.close()

    threads = [threading.Thread(target=request) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert [r.status_code for r in results] == [200, 200]
    assert results[0].json()["id"] == results[1].json()["id"]
    assert User.objects.filter(clerk_id="user_Concurrent").count() == 1


def test_losing_the_creation_race_returns_the_winners_user(db, clerk, keys, monkeypatch):
    """Forces the interleaving: the winner's row is committed after our lookup missed it, so our insert hits the
    unique Clerk id and we must answer with the winner's user instead of failing or making a second one."""
    from accounts import services

    winner = User.objects.create_user("winner@example.com", None, clerk_id="user_Raced")
    real_filter = User.objects.filter
    lookups = []

    def filter_missing_the_first_time(*args, **kwargs):
        lookups.append(kwargs)
        return real_filter(*args, **kwargs).none() if len(lookups) == 1 else real_filter(*args, **kwargs)

    monkeypatch.setattr(services.User.objects, "filter", filter_missing_the_first_time)

    response = whoami(token(keys["current"], sub="user_Raced"))

    assert response.status_code == 200
    assert response.json()["id"] == winner.pk
    assert len(lookups) == 2
    assert User.objects.filter(clerk_id="user_Raced").count() == 1


# --- WebSockets -----------------------------------------------------------------------------------------------


def open_socket(headers, path="/ws/chat/", query_string=b""):
    seen = {}

    async def inner(scope, receive, send):
        seen.update(scope)

    scope = {"type": "websocket", "path": path, "query_string": query_string, "headers": headers}
    async_to_sync(BearerWebSocketMiddleware(inner))(scope, None, None)
    return seen


@pytest.mark.django_db(transaction=True)
def test_a_clerk_token_authenticates_the_websocket(clerk, keys):
    scope = open_socket([(b"authorization", f"Bearer {token(keys['current'])}".encode())])

    assert scope["user"].clerk_id == "user_2abcDEF"
    assert scope["api_client"] is True


@pytest.mark.django_db(transaction=True)
def test_the_websocket_takes_no_user_id_from_the_query_string(clerk, keys, owner):
    forged = open_socket([], query_string=f"userId={owner.pk}&user_id=user_2abcDEF".encode())
    invalid = open_socket([(b"authorization", f"Bearer {token(keys['attacker'])}".encode())])

    assert "user" not in forged
    assert "user" not in invalid
