# QueryNox: two commands a newcomer needs.
#   make run   set up (.venv, packages, database, static files) and serve on http://127.0.0.1:8000
#   make test  set up, lint (ruff) and run the whole test suite (pytest)
# Overridable: PYTHON (interpreter for the venv), HOST, PORT, PYTEST_ARGS (e.g. PYTEST_ARGS="-k share -x").

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=

PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check --no-input
REQUIREMENTS := requirements.txt requirements-nodeps.txt
# The stamp is keyed on the requirement files' content: editing either one reinstalls, nothing else does.
# It lives inside the venv, so deleting .venv also forgets it (and .gitignore's .venv/ covers it).
REQ_HASH := $(shell cat $(REQUIREMENTS) | sha256sum | cut -c1-16)
STAMP := $(VENV)/.requirements-$(REQ_HASH).stamp

.PHONY: help run test install system-packages

help:
	@echo "make run    set up and serve QueryNox on http://$(HOST):$(PORT) (embedded defaults: SQLite, local CPU model)"
	@echo "make test   set up, then ruff check . and pytest (the whole suite)"

run: system-packages install
	$(PY) manage.py wait_for_db
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput -v 0
	@echo "QueryNox is starting on http://$(HOST):$(PORT)/ (sign up in the browser; Ctrl-C stops it)"
	LOCAL_MODEL_PRELOAD=$${LOCAL_MODEL_PRELOAD:-true} exec $(PY) -m querynox.server -b $(HOST) -p $(PORT) querynox.asgi:application

# Lint and tests both run (one report shows every problem); either failing fails the target.
# pytest's exit code 5 (no tests collected) counts as a failure, with a message saying so.
test: install
	@lint=0; echo "$(VENV)/bin/ruff check ."; $(VENV)/bin/ruff check . || lint=$$?; \
	tests=0; echo "$(PY) -m pytest $(PYTEST_ARGS)"; $(PY) -m pytest $(PYTEST_ARGS) || tests=$$?; \
	if [ $$tests -eq 5 ]; then echo "make test: pytest collected no tests (exit code 5); that is a failure" >&2; fi; \
	if [ $$lint -ne 0 ]; then echo "make test: ruff check failed (exit code $$lint)" >&2; fi; \
	if [ $$tests -ne 0 ]; then exit $$tests; fi; \
	exit $$lint

# --- internal helpers ---------------------------------------------------------------------------

# Tesseract reads scanned PDFs and images (rag/extract.py). Installed with apt when missing and we may (root or
# sudo); otherwise the app still runs and says, for each such file, that OCR is not installed.
system-packages:
	@if ! command -v tesseract >/dev/null; then \
		if [ "$$(id -u)" -eq 0 ]; then apt-get update -qq && apt-get install -y -qq tesseract-ocr >/dev/null; \
		elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then \
			sudo apt-get update -qq && sudo apt-get install -y -qq tesseract-ocr >/dev/null; \
		else echo "note: tesseract-ocr is not installed (apt-get install tesseract-ocr): OCR of scans is off" >&2; fi; \
	fi

# After the packages: the static embedding model distilled from the installed MiniLM (rag/embeddings.py; ~1
# CPU-minute once, then a no-op), so no upload waits for it.
install: $(STAMP)
	$(PY) -m rag.embeddings

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): | $(PY)
	@echo "Installing requirements into $(VENV) ..."
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps -r requirements-nodeps.txt
	@rm -f $(VENV)/.requirements-*.stamp
	@touch $@
