"""A real QueryNox server for end-to-end tests and benchmarks: daphne (or uvicorn) in a subprocess on loopback.

The server runs exactly as deployed with embedded defaults (DEBUG off, the real local CPU model, no provider
keys), against its own temporary SQLite file, so what a test sees over HTTP and WebSocket is what a user gets.
Users and API keys are made in that database with `manage.py shell -c`, under the same environment.

    server = LiveServer(tmp_dir).start()
    key = server.create_api_key(server.create_user("a@example.com", "a good password"))
    ... httpx / websockets / a browser against server.url ...
    server.stop()
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from testsupport.http import free_port

BASE_DIR = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
# LiveServer(server=...): daphne as `make run` starts it (querynox/server.py), or uvicorn as the Dockerfile does.
SERVER_MODULES = {"daphne": "querynox.server", "uvicorn": "querynox.uvicorn_server"}

# Anything that would switch the server off its embedded defaults (a provider, a shared database or channel layer)
# or off plain http://127.0.0.1 (secure-only cookies, other hosts).
_STRIPPED_ENV = (
    "DATABASE_URL",
    "REDIS_URL",
    "DEBUG",
    "ALLOWED_HOSTS",
    "CSRF_TRUSTED_ORIGINS",
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
    "DEFAULT_MODEL",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "CLAUDE_API_KEY",
    "CLAUDE_BASE_URL",
    "GROQ_API_KEY",
    "GROQ_BASE_URL",
    "GEMINI_API_KEY",
    "GEMINI_BASE_URL",
    "OPENROUTER_API_KEY",
    "OPENROUTER_BASE_URL",
    "OPENAI_COMPATIBLE_BASE_URL",
    "OPENAI_COMPATIBLE_API_KEY",
    "S3_BUCKET",
    "R2_BUCKET_NAME",
    "CLERK_JWKS_URL",
    "CLERK_JWT_KEY",
    "FALLBACK_MODELS",
    "UTILITY_MODELS",
)

_CREATE_USER = """
import os
from accounts.models import User
User.objects.create_user(os.environ["QNX_LIVE_EMAIL"], os.environ["QNX_LIVE_PASSWORD"])
"""

_CREATE_KEY = """
import os
from accounts.models import ApiKey, User
user = User.objects.get(email=os.environ["QNX_LIVE_EMAIL"])
print("QNX_KEY=" + ApiKey.generate(user, os.environ["QNX_LIVE_KEY_NAME"])[1])
"""


def _key_from_output(out: str) -> str:
    for line in out.splitlines():
        if line.startswith("QNX_KEY="):
            return line[len("QNX_KEY=") :]
    raise LiveServerError(f"no key in the shell's output:\n{out}")


class LiveServerError(RuntimeError):
    pass


class LiveServer:
    """One daphne process serving querynox.asgi on 127.0.0.1 and a free port, with its own database."""

    def __init__(self, work_dir: Path, extra_env: dict[str, str] | None = None, server: str = "daphne"):
        if server not in SERVER_MODULES:
            raise LiveServerError(f"unknown server {server!r}: one of {', '.join(SERVER_MODULES)}")
        self.server = server
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.db_path = self.work_dir / "db.sqlite3"
        self.log_path = self.work_dir / "daphne.log"
        self.port: int | None = None
        self.process: subprocess.Popen | None = None
        self._log_file = None
        env = {k: v for k, v in os.environ.items() if k not in _STRIPPED_ENV}
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "querynox.settings",
                "DATABASE_URL": f"sqlite:///{self.db_path}",  # an absolute path: sqlite:////tmp/…/db.sqlite3
                "MEDIA_ROOT": str(self.work_dir / "media"),  # uploads and images stay out of the work tree
                "PYTHONUNBUFFERED": "1",
                # The first turn should not pay for loading the model.
                "LOCAL_MODEL_PRELOAD": "true",
            }
        )
        env.update(extra_env or {})
        self.env = env

    @property
    def url(self) -> str:
        if self.port is None:
            raise LiveServerError("the server is not started")
        return f"http://{HOST}:{self.port}"

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1)

    # --- management commands under the server's environment -----------------------------------------------

    def manage(self, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> str:
        result = subprocess.run(
            [sys.executable, str(BASE_DIR / "manage.py"), *args],
            cwd=BASE_DIR,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise LiveServerError(f"manage.py {' '.join(args[:1])} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def migrate(self) -> None:
        self.manage("migrate", "--noinput", "-v", "0")

    def collectstatic(self) -> None:
        # With DEBUG off, WhiteNoise serves STATIC_ROOT (git-ignored), as in production.
        self.manage("collectstatic", "--noinput", "-v", "0")

    def create_user(self, email: str, password: str) -> str:
        self.manage("shell", "-c", _CREATE_USER, env={"QNX_LIVE_EMAIL": email, "QNX_LIVE_PASSWORD": password})
        return email

    def create_user_with_key(self, email: str, password: str, key_name: str = "live tests") -> str:
        """A user and an API key for them in one shell run (each run pays Django's start-up); returns the raw key."""
        out = self.manage(
            "shell",
            "-c",
            _CREATE_USER + _CREATE_KEY,
            env={"QNX_LIVE_EMAIL": email, "QNX_LIVE_PASSWORD": password, "QNX_LIVE_KEY_NAME": key_name},
        )
        return _key_from_output(out)

    def create_api_key(self, email: str, name: str = "live tests") -> str:
        """A new API key for the user with this email; returns the raw key (only its hash is stored)."""
        out = self.manage("shell", "-c", _CREATE_KEY, env={"QNX_LIVE_EMAIL": email, "QNX_LIVE_KEY_NAME": name})
        return _key_from_output(out)

    # --- the server process -------------------------------------------------------------------------------

    def start(self, timeout: float = 90) -> "LiveServer":
        """Migrate, collect static files, start daphne and wait until /api/v1/health answers."""
        self.migrate()
        self.collectstatic()
        last_error = None
        for _attempt in range(3):  # a free port can be taken between probing it and daphne binding it
            self.port = free_port()
            self._spawn()
            try:
                self._wait_healthy(timeout)
                return self
            except LiveServerError as exc:
                last_error = exc
                self.stop()
        raise last_error

    def _spawn(self) -> None:
        self._log_file = open(self.log_path, "ab")  # closed in stop()
        if self.server == "uvicorn":  # the Dockerfile's server (querynox/uvicorn_server.py)
            command = [sys.executable, "-m", "querynox.uvicorn_server", "--host", HOST, "--port", str(self.port)]
        else:
            command = [
                sys.executable,
                "-m",
                "querynox.server",  # daphne with request bodies bounded, as `make run` starts it
                "-b",
                HOST,
                "-p",
                str(self.port),
                "--application-close-timeout",
                "5",
                "querynox.asgi:application",
            ]
        self.process = subprocess.Popen(
            command,
            cwd=BASE_DIR,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            # Same process group as pytest on purpose: a Ctrl-C, or CI's `timeout`, stops daphne along with the tests.
        )

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LiveServerError(f"daphne exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                response = httpx.get(f"{self.url}/api/v1/health", timeout=2)
                if response.status_code == 200 and response.json().get("status") == "ok":
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise LiveServerError(f"daphne did not answer /api/v1/health within {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def rss_bytes(self) -> int | None:
        """The server process's resident memory now (Linux), or None."""
        if self.process is None:
            return None
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> "LiveServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
