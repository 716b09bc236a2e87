"""Clerk session tokens for API clients: RS256 JWTs verified against Clerk's public key.

The key comes from CLERK_JWT_KEY (a PEM, no network) or CLERK_JWKS_URL (fetched with httpx and cached in memory
for CLERK_JWKS_CACHE_SECONDS; a token naming a key id the cache does not hold triggers one refetch, at most once
per CLERK_JWKS_MIN_REFETCH_SECONDS, which is how Clerk's key rotation is picked up). Only RS256 is accepted, so
`alg: none` and HS256 tokens (including ones "signed" with the public key as an HMAC secret) are refused.

exp is required; nbf and iat are checked when present, with CLERK_LEEWAY_SECONDS of clock skew. The issuer is
checked when CLERK_ISSUER is set, and the authorised party (`azp`, the browser origin the token was issued to)
when CLERK_AUTHORIZED_PARTIES is set: then a token without azp is refused too.

A valid token whose `sub` (the Clerk user id) is new creates the user (accounts.services).
"""

import logging
import threading
import time
from dataclasses import dataclass, field

import httpx
import jwt
from django.conf import settings

from accounts.models import API_KEY_PREFIX

log = logging.getLogger(__name__)

ALGORITHMS = ["RS256"]
EMAIL_CLAIMS = ("email", "email_address", "primary_email", "primaryEmail")


class ClerkTokenError(Exception):
    """The token is not a valid Clerk session token (the message says why; it is logged, never shown)."""


def clerk_configured() -> bool:
    return bool(settings.CLERK_JWT_KEY or settings.CLERK_JWKS_URL)


def looks_like_jwt(token: str) -> bool:
    return bool(token) and not token.startswith(API_KEY_PREFIX) and token.count(".") == 2


# --- the JWKS cache -------------------------------------------------------------------------------------------


@dataclass
class _JwksState:
    url: str = ""
    keys: dict = field(default_factory=dict)  # kid -> PyJWK
    fetched_at: float = 0.0  # monotonic time of the last successful fetch; 0: never
    attempted_at: float = 0.0  # monotonic time of the last attempt, successful or not
    fetches: int = 0


class JwksCache:
    """The signing keys of one JWKS URL, shared by every request of the process."""

    def __init__(self):
        self._lock = threading.Lock()
        self._state = _JwksState()

    def reset(self):
        with self._lock:
            self._state = _JwksState()

    @property
    def fetches(self) -> int:
        return self._state.fetches

    def key_for(self, url: str, kid: str):
        with self._lock:
            state = self._state
            if state.url != url:  # the setting changed (tests): start over
                state = self._state = _JwksState(url=url)
            now = time.monotonic()
            expired = not state.keys or now - state.fetched_at >= settings.CLERK_JWKS_CACHE_SECONDS
            throttled = state.attempted_at and now - state.attempted_at < settings.CLERK_JWKS_MIN_REFETCH_SECONDS
            if (expired or kid not in state.keys) and not throttled:
                if not expired:
                    log.info("clerk jwks: unknown key id, refetching", extra={"kid": kid[:64]})
                self._fetch(state)
            key = state.keys.get(kid)
        if key is None:
            raise ClerkTokenError("the token's key id is not in the JWKS")
        return key

    def _fetch(self, state: _JwksState) -> None:
        state.fetches += 1
        state.attempted_at = time.monotonic()
        try:
            response = httpx.get(state.url, timeout=settings.CLERK_JWKS_TIMEOUT, follow_redirects=False)
            response.raise_for_status()
            entries = response.json()["keys"]
            keys = {}
            for entry in entries:
                if entry.get("kty") != "RSA" or not entry.get("kid") or entry.get("use", "sig") != "sig":
                    continue
                try:
                    keys[entry["kid"]] = jwt.PyJWK(entry, algorithm="RS256")
                except jwt.PyJWTError:
                    continue
        except (httpx.HTTPError, ValueError, KeyError, AttributeError, TypeError) as exc:
            # Keep serving the keys we had, if any; the next attempt waits for the refetch interval.
            log.warning("clerk jwks: fetch failed", extra={"error": type(exc).__name__})
            return
        state.keys = keys
        state.fetched_at = state.attempted_at


jwks_cache = JwksCache()


def _verification_key(token: str):
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise ClerkTokenError(f"malformed token: {exc}") from None
    if header.get("alg") not in ALGORITHMS:
        raise ClerkTokenError(f"algorithm {header.get('alg')!r} is not accepted")
    if settings.CLERK_JWT_KEY:
        return settings.CLERK_JWT_KEY
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise ClerkTokenError("the token names no key id")
    return jwks_cache.key_for(settings.CLERK_JWKS_URL, kid)


def verify_token(token: str) -> dict:
    """The verified claims of a Clerk session token; raises ClerkTokenError."""
    if not clerk_configured():
        raise ClerkTokenError("Clerk is not configured")
    key = _verification_key(token)
    options = {"require": ["exp", "sub"], "verify_aud": False}
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=ALGORITHMS,
            leeway=settings.CLERK_LEEWAY_SECONDS,
            issuer=settings.CLERK_ISSUER or None,
            options=options,
        )
    except jwt.PyJWTError as exc:
        raise ClerkTokenError(f"{type(exc).__name__}: {exc}") from None
    parties = settings.CLERK_AUTHORIZED_PARTIES
    if parties and claims.get("azp") not in parties:
        raise ClerkTokenError("the token's authorised party is not allowed")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub.strip() or len(sub) > 100:
        raise ClerkTokenError("the token's subject is not a Clerk user id")
    return claims


def email_from_claims(claims: dict) -> str:
    for name in EMAIL_CLAIMS:
        value = claims.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return ""
