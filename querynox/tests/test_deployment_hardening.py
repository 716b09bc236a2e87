"""What a deployment expects: `check --deploy` silent with a production-like environment, HSTS / SSL redirect /
proxy SSL header from the environment, the built-in SECRET_KEY refused for a real host, no "testserver" in the
production ALLOWED_HOSTS, and a strict Content-Security-Policy on every HTML page with no inline script or style in
the templates."""

import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client

from core.csp import HEADER

ROOT = Path(__file__).resolve().parents[2]
# Anything in the test run's environment that would change what the subprocess configures.
CLEARED = {
    "DATABASE_URL",
    "REDIS_URL",
    "DEBUG",
    "SECRET_KEY",
    "ALLOWED_HOSTS",
    "CSRF_TRUSTED_ORIGINS",
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD",
    "SECURE_SSL_REDIRECT",
    "SECURE_PROXY_SSL_HEADER",
    "DJANGO_SETTINGS_MODULE",
}
PRODUCTION = {
    "SECRET_KEY": secrets.token_urlsafe(50),
    "DEBUG": "false",
    "ALLOWED_HOSTS": "chat.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://chat.example.com",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
    "SECURE_HSTS_PRELOAD": "true",
    "SECURE_SSL_REDIRECT": "true",
    "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto: https",
    "SESSION_COOKIE_SECURE": "true",
    "CSRF_COOKIE_SECURE": "true",
}


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    base = {name: value for name, value in os.environ.items() if name not in CLEARED}
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={**base, "DJANGO_SETTINGS_MODULE": "querynox.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def settings_under(env: dict[str, str], *names: str) -> dict:
    code = (
        "import json, django; django.setup(); from django.conf import settings; "
        f"print(json.dumps({{n: getattr(settings, n, None) for n in {list(names)!r}}}))"
    )
    result = run(["-c", code], env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- check --deploy ----------------------------------------------------------------------------------------------


def test_check_deploy_prints_no_warnings_for_a_production_like_environment():
    result = run(["manage.py", "check", "--deploy"], PRODUCTION)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "System check identified no issues (0 silenced)."
    assert "WARNINGS" not in result.stderr and "security.W" not in result.stderr


def test_check_deploy_still_warns_when_hsts_and_the_redirect_are_off():
    # The control: the same check does see a weaker environment, so the silence above means something.
    weaker = {**PRODUCTION, "SECURE_HSTS_SECONDS": "0", "SECURE_SSL_REDIRECT": "false"}
    result = run(["manage.py", "check", "--deploy"], weaker)

    assert "security.W004" in result.stderr and "security.W008" in result.stderr


def test_hsts_redirect_and_proxy_header_come_from_the_environment():
    values = settings_under(
        PRODUCTION,
        "SECURE_HSTS_SECONDS",
        "SECURE_HSTS_INCLUDE_SUBDOMAINS",
        "SECURE_HSTS_PRELOAD",
        "SECURE_SSL_REDIRECT",
        "SECURE_PROXY_SSL_HEADER",
    )
    assert values == {
        "SECURE_HSTS_SECONDS": 31536000,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
        "SECURE_HSTS_PRELOAD": True,
        "SECURE_SSL_REDIRECT": True,
        "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"],
    }


def test_the_embedded_defaults_leave_https_settings_off():
    names = ("SECURE_HSTS_SECONDS", "SECURE_SSL_REDIRECT", "SECURE_PROXY_SSL_HEADER", "ALLOWED_HOSTS")
    values = settings_under({}, *names)
    assert values == {
        "SECURE_HSTS_SECONDS": 0,
        "SECURE_SSL_REDIRECT": False,
        "SECURE_PROXY_SSL_HEADER": None,
        "ALLOWED_HOSTS": ["127.0.0.1", "localhost", "[::1]"],  # no "testserver" in production
    }


@pytest.mark.parametrize("raw", ["X-Forwarded-Proto", ": https", "X-Forwarded-Proto:"])
def test_a_malformed_proxy_ssl_header_stops_start_up(raw):
    result = run(["-c", "import django; django.setup()"], {"SECURE_PROXY_SSL_HEADER": raw})
    assert result.returncode != 0
    assert "SECURE_PROXY_SSL_HEADER" in result.stderr


def test_hsts_is_sent_over_https(settings, db):
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    settings.SECURE_HSTS_PRELOAD = True
    response = Client().get("/accounts/login/", secure=True)
    assert response["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"


# --- the built-in SECRET_KEY --------------------------------------------------------------------------------------


def test_the_built_in_secret_key_is_refused_for_a_real_host():
    result = run(["manage.py", "check"], {"ALLOWED_HOSTS": "chat.example.com"})

    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr
    assert "ALLOWED_HOSTS=chat.example.com" in result.stderr


@pytest.mark.parametrize(
    "env",
    [
        {},  # the embedded defaults: loopback only
        {"ALLOWED_HOSTS": "127.0.0.1,localhost"},
        {"ALLOWED_HOSTS": "chat.example.com", "DEBUG": "true"},
        {"ALLOWED_HOSTS": "chat.example.com", "SECRET_KEY": "a-real-secret-key-set-by-the-deployer"},
    ],
)
def test_the_built_in_secret_key_still_serves_loopback_debug_or_is_unused(env):
    assert run(["manage.py", "check"], env).returncode == 0


# --- Content-Security-Policy -----------------------------------------------------------------------------------------

EXPECTED_POLICY = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "font-src": "'self'",
    "connect-src": "'self'",
    "object-src": "'none'",
    "frame-ancestors": "'none'",
    "base-uri": "'self'",
    "form-action": "'self' https://polar.sh https://*.polar.sh",
}


def directives(header: str) -> dict:
    return dict(part.strip().split(" ", 1) for part in header.split(";"))


@pytest.mark.parametrize(
    ("path", "logged_in"),
    [
        ("/accounts/login/", False),
        ("/accounts/signup/", False),
        ("/chat/", True),
        ("/accounts/", True),
        ("/pricing/", True),
    ],
)
def test_every_html_page_has_the_policy(owner_client, path, logged_in):
    response = (owner_client if logged_in else Client()).get(path)
    assert response.status_code == 200 and response["Content-Type"].startswith("text/html")
    assert directives(response[HEADER]) == EXPECTED_POLICY


def test_error_pages_and_the_share_page_have_it_too(db, owner, make_chat):
    assert HEADER in Client().get("/no-such-page/")
    chat = make_chat(owner, shared=True)
    assert directives(Client().get(f"/share/{chat.pk}/")[HEADER]) == EXPECTED_POLICY


def test_json_answers_need_no_policy(db):
    assert HEADER not in Client().get("/api/v1/chat/models")


TEMPLATES = sorted((ROOT / "templates").rglob("*.html"))


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda path: str(path.relative_to(ROOT / "templates")))
def test_no_template_has_inline_script_or_style(template):
    html = template.read_text()
    inline_scripts = [tag for tag in re.findall(r"<script\b[^>]*>", html) if "src=" not in tag]
    assert inline_scripts == []
    assert re.findall(r"\sstyle\s*=", html) == []
    assert re.findall(r"\son[a-z]+\s*=", html) == []  # onclick= and friends are inline script
    assert "<style" not in html


# --- the server's own defaults (querynox/server.py) ---------------------------------------------------------------


def test_the_server_runs_daphne_without_its_access_log_and_with_room_for_our_socket_limit():
    from chat.consumers import MAX_FRAME_BYTES
    from querynox.server import WEBSOCKET_MAX_MESSAGE_BYTES, with_default_options

    args = with_default_options(["-b", "0.0.0.0", "-p", "8000", "querynox.asgi:application"])
    assert args[args.index("--access-log") + 1] == "/dev/null"
    assert int(args[args.index("--websocket-max-message-size") + 1]) == WEBSOCKET_MAX_MESSAGE_BYTES > MAX_FRAME_BYTES
    assert args[-5:] == ["-b", "0.0.0.0", "-p", "8000", "querynox.asgi:application"]
    # An operator's own choice wins.
    assert with_default_options(["--access-log=-", "app"]).count("/dev/null") == 0
