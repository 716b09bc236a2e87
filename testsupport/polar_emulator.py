"""A Polar API emulator on loopback, for tests: the endpoints billing/polar.py calls, with Polar's JSON shapes.

  GET  /v1/customers/external/{external_id}   the customer, or 404
  POST /v1/customers/                          create (422 when the external id or email is taken)
  POST /v1/checkouts/                          create an open checkout for known products (422 otherwise)
  GET  /v1/checkouts/{id}                      the checkout, or 404
  POST /v1/customer-sessions/                  a portal session for a customer_id / external_customer_id

Every request needs `Authorization: Bearer <access_token>` (else 401). Requests are recorded (method, path, JSON
body, whether the token matched). `fail_next(status, times, match)` makes the next matching requests answer with
an error status; `complete_checkout(id)` marks a checkout succeeded, as a payment would.
Webhook deliveries are signed with `sign_webhook` (the Standard Webhooks scheme that Polar uses).

In process:  emulator = PolarEmulator(access_token="polar_oat_test").start(); emulator.url; emulator.stop()
Only the standard library is used, and it only listens on 127.0.0.1.
"""

import base64
import hashlib
import hmac
import json
import re
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# The credentials the tests give the emulator and the webhook receiver.
POLAR_TEST_TOKEN = "polar_oat_test_token"
POLAR_WEBHOOK_TEST_SECRET = "polar_whs_test_secret_0123456789"

_CUSTOMER_EXTERNAL = re.compile(r"^/v1/customers/external/([^/]+)/?$")
_CHECKOUT = re.compile(r"^/v1/checkouts/([^/]+)/?$")


def _now() -> str:
    return datetime.now(UTC).isoformat()


def sign_webhook(secret: bytes, body: bytes, delivery_id: str, timestamp: int | None = None) -> dict:
    """The Standard Webhooks headers for a delivery: HMAC-SHA256 over `id.timestamp.body` with the raw key."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret, f"{delivery_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": delivery_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }


class PolarEmulator:
    def __init__(self, access_token: str = "polar_oat_emulator", host: str = "127.0.0.1", port: int = 0):
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError("the Polar emulator only listens on loopback")
        self.access_token = access_token
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread = None
        self.reset()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "PolarEmulator":
        self._thread = threading.Thread(target=self._server.serve_forever, name="polar-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        with self._lock:
            self.requests: list[dict] = []
            self.customers: dict[str, dict] = {}
            self.checkouts: dict[str, dict] = {}
            self.sessions: list[dict] = []
            self.products: dict[str, dict] = {}
            self._faults: list[dict] = []

    # --- test controls ---

    def add_product(self, product_id: str, name: str, **fields) -> dict:
        product = {
            "id": product_id,
            "name": name,
            "description": fields.pop("description", ""),
            "recurring_interval": fields.pop("recurring_interval", "month"),
            "is_recurring": True,
            "is_archived": fields.pop("is_archived", False),
            "metadata": fields.pop("metadata", {}),
            "created_at": _now(),
            "modified_at": None,
            **fields,
        }
        with self._lock:
            self.products[product_id] = product
        return product

    def fail_next(self, status: int, times: int = 1, match: str = "") -> None:
        with self._lock:
            self._faults.append({"status": status, "times": times, "match": match})

    def complete_checkout(self, checkout_id: str) -> None:
        with self._lock:
            self.checkouts[checkout_id]["status"] = "succeeded"

    def requests_to(self, method: str, path_prefix: str) -> list[dict]:
        return [r for r in self.requests if r["method"] == method and r["path"].startswith(path_prefix)]

    # --- the API ---

    def _fault_for(self, path: str) -> int | None:
        for fault in self._faults:
            if fault["match"] in path and fault["times"] > 0:
                fault["times"] -= 1
                return fault["status"]
        return None

    def _handle(self, method: str, path: str, body, authorised: bool) -> tuple[int, dict]:
        with self._lock:
            self.requests.append({"method": method, "path": path, "json": body, "authorised": authorised})
            if not authorised:
                return 401, {"error": "Unauthorized", "detail": "Invalid or missing access token."}
            status = self._fault_for(path)
            if status is not None:
                return status, {"error": "EmulatedFault", "detail": f"Emulated HTTP {status}."}
            if method == "GET" and (m := _CUSTOMER_EXTERNAL.match(path)):
                customer = next((c for c in self.customers.values() if c["external_id"] == m.group(1)), None)
                return (200, customer) if customer else (404, {"error": "ResourceNotFound", "detail": "Not found"})
            if method == "POST" and path.rstrip("/") == "/v1/customers":
                return self._create_customer(body)
            if method == "POST" and path.rstrip("/") == "/v1/checkouts":
                return self._create_checkout(body)
            if method == "GET" and (m := _CHECKOUT.match(path)):
                checkout = self.checkouts.get(m.group(1))
                return (200, checkout) if checkout else (404, {"error": "ResourceNotFound", "detail": "Not found"})
            if method == "POST" and path.rstrip("/") == "/v1/customer-sessions":
                return self._create_session(body)
            return 404, {"error": "ResourceNotFound", "detail": f"No route {method} {path}"}

    @staticmethod
    def _invalid(location: str, message: str) -> tuple[int, dict]:
        return 422, {"error": "RequestValidationError", "detail": [{"loc": ["body", location], "msg": message}]}

    def _create_customer(self, body) -> tuple[int, dict]:
        if not isinstance(body, dict) or not body.get("email"):
            return self._invalid("email", "Field required")
        if any(c["external_id"] == body.get("external_id") for c in self.customers.values() if c["external_id"]):
            return self._invalid("external_id", "A customer with this external ID already exists.")
        if any(c["email"] == body["email"] for c in self.customers.values()):
            return self._invalid("email", "A customer with this email address already exists.")
        customer = {
            "id": str(uuid.uuid4()),
            "email": body["email"],
            "name": body.get("name"),
            "external_id": body.get("external_id"),
            "metadata": body.get("metadata") or {},
            "created_at": _now(),
        }
        self.customers[customer["id"]] = customer
        return 201, customer

    def _create_checkout(self, body) -> tuple[int, dict]:
        if not isinstance(body, dict) or not body.get("products"):
            return self._invalid("products", "Field required")
        unknown = [p for p in body["products"] if p not in self.products]
        if unknown:
            return self._invalid("products", f"Product does not exist: {unknown[0]}")
        customer_id = body.get("customer_id")
        if customer_id and customer_id not in self.customers:
            return self._invalid("customer_id", "Customer does not exist.")
        product = self.products[body["products"][0]]
        checkout_id = str(uuid.uuid4())
        checkout = {
            "id": checkout_id,
            "status": "open",
            "url": f"{self.url}/checkout/{checkout_id}",
            "client_secret": uuid.uuid4().hex,
            "success_url": body.get("success_url", "").replace("{CHECKOUT_ID}", checkout_id),
            "expires_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
            "product_id": product["id"],
            "product": product,
            "products": [self.products[p] for p in body["products"]],
            "customer_id": customer_id,
            "customer_email": body.get("customer_email"),
            "external_customer_id": body.get("external_customer_id"),
            "metadata": body.get("metadata") or {},
            "created_at": _now(),
        }
        self.checkouts[checkout_id] = checkout
        return 201, checkout

    def _create_session(self, body) -> tuple[int, dict]:
        body = body if isinstance(body, dict) else {}
        customer = self.customers.get(body.get("customer_id") or "")
        if customer is None and body.get("external_customer_id"):
            customer = next(
                (c for c in self.customers.values() if c["external_id"] == body["external_customer_id"]), None
            )
        if customer is None:
            return self._invalid("customer_id", "Customer does not exist.")
        token = f"polar_cst_{uuid.uuid4().hex}"
        session = {
            "id": str(uuid.uuid4()),
            "token": token,
            "customer_id": customer["id"],
            "customer_portal_url": f"{self.url}/portal?customer_session_token={token}",
            "return_url": body.get("return_url"),
            "expires_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
            "created_at": _now(),
        }
        self.sessions.append(session)
        return 201, session

    def _handler_class(self):
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as two writes

            def _serve(self, method):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("latin-1")
                authorised = self.headers.get("Authorization") == f"Bearer {emulator.access_token}"
                status, payload = emulator._handle(method, self.path.split("?")[0], body, authorised)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802
                self._serve("GET")

            def do_POST(self):  # noqa: N802
                self._serve("POST")

            def log_message(self, *args):
                pass

        return Handler
