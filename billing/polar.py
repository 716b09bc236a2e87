"""A small client for the parts of Polar's REST API we use (httpx, bearer access token).

Base URL and token come from settings (POLAR_API_BASE_URL, POLAR_ACCESS_TOKEN); tests point the base URL at
testsupport/polar_emulator.py. Every failure is one of three exceptions: PolarNotConfigured (no token),
PolarNotFound (Polar answered 404) and PolarError (anything else: a refusal, a 5xx, a timeout, a body that is not
the JSON we expect). Messages never contain the token.
"""

import logging
import threading
from urllib.parse import quote

import httpx
from django.conf import settings

log = logging.getLogger(__name__)


class PolarError(Exception):
    """Polar failed or refused; `status` is its HTTP status (None: no answer)."""

    def __init__(self, message: str, status: int | None = None, detail=None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.detail = detail


class PolarNotFound(PolarError):
    pass


class PolarNotConfigured(Exception):
    pass


_http_lock = threading.Lock()
_http: httpx.Client | None = None


def _http_client() -> httpx.Client:
    """One pooled client for the process (creating one per request costs a TLS context each time)."""
    global _http
    with _http_lock:
        if _http is None:
            _http = httpx.Client(follow_redirects=False)
        return _http


def _detail(response: httpx.Response):
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    return body.get("detail", body) if isinstance(body, dict) else body


class PolarClient:
    def __init__(self, base_url: str, access_token: str, timeout: float):
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {access_token}", "Accept": "application/json"}
        self.timeout = timeout

    def _request(self, method: str, path: str, json: dict | None = None) -> dict:
        url = f"{self.base_url}{path}"
        try:
            response = _http_client().request(method, url, json=json, headers=self._headers, timeout=self.timeout)
        except httpx.HTTPError as exc:
            log.warning("polar request failed", extra={"path": path, "error": type(exc).__name__})
            raise PolarError(f"The payment provider could not be reached ({type(exc).__name__}).") from None
        if response.status_code == 404:
            raise PolarNotFound("Not found at the payment provider.", 404, _detail(response))
        if response.status_code >= 400:
            log.warning("polar refused", extra={"path": path, "status": response.status_code})
            raise PolarError(
                f"The payment provider answered HTTP {response.status_code}.", response.status_code, _detail(response)
            )
        try:
            body = response.json()
        except ValueError:
            raise PolarError("The payment provider sent a response that is not JSON.", response.status_code) from None
        if not isinstance(body, dict):
            raise PolarError("The payment provider sent an unexpected response.", response.status_code)
        return body

    @staticmethod
    def _segment(value: str) -> str:
        return quote(str(value), safe="")

    # --- customers ---

    def get_customer_by_external_id(self, external_id: str) -> dict | None:
        try:
            return self._request("GET", f"/v1/customers/external/{self._segment(external_id)}")
        except PolarNotFound:
            return None

    def create_customer(self, *, email: str, external_id: str, name: str | None = None) -> dict:
        return self._request("POST", "/v1/customers/", {"email": email, "external_id": external_id, "name": name})

    # --- checkouts ---

    def create_checkout(
        self,
        *,
        product_id: str,
        success_url: str,
        external_customer_id: str,
        customer_id: str | None = None,
        customer_email: str | None = None,
        metadata: dict | None = None,
    ) -> dict:
        body = {
            "products": [product_id],
            "success_url": success_url,
            "external_customer_id": external_customer_id,
            "metadata": metadata or {},
        }
        if customer_id:
            body["customer_id"] = customer_id
        if customer_email:
            body["customer_email"] = customer_email
        checkout = self._request("POST", "/v1/checkouts/", body)
        if not isinstance(checkout.get("url"), str):
            raise PolarError("The payment provider's checkout has no URL.")
        return checkout

    def get_checkout(self, checkout_id: str) -> dict:
        return self._request("GET", f"/v1/checkouts/{self._segment(checkout_id)}")

    # --- customer portal ---

    def create_customer_session(self, *, customer_id: str, return_url: str | None = None) -> dict:
        body = {"customer_id": customer_id}
        if return_url:
            body["return_url"] = return_url
        session = self._request("POST", "/v1/customer-sessions/", body)
        if not isinstance(session.get("customer_portal_url"), str):
            raise PolarError("The payment provider's customer session has no portal URL.")
        return session


def polar_client() -> PolarClient:
    if not settings.POLAR_ACCESS_TOKEN:
        raise PolarNotConfigured("Payments are not configured on this server (POLAR_ACCESS_TOKEN is not set).")
    return PolarClient(settings.POLAR_API_BASE_URL, settings.POLAR_ACCESS_TOKEN, settings.POLAR_TIMEOUT)
