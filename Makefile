# Doorstep: `make run` starts the demo, `make test` runs every check CI runs.
# Each target installs what is missing first; stamps keep a second run fast.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# python3.11 if present, else python3 (checked to be >= 3.11 below). Override: make PYTHON=...
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null)
VENV := .venv
PY := $(VENV)/bin/python
# Serial: on 2 cores `-p xdist -n 2` measured no reliably faster (44-56 s vs 52 s for 577 tests),
# and its workers would flush each other's Redis test database. A hung test fails after 300 s.
PYTEST_ARGS ?= --timeout=300
RUN_ADDR ?= 127.0.0.1:8000

# Only for `check --deploy`: a long random-looking literal, never used to sign anything real.
DEPLOY_CHECK_ENV := DEBUG=false \
	SECRET_KEY=ci-check-only-Vq7Lw2Rk9Xz4Tn8Hb3Jd6Fm1Sy5Gc0Pe7Ua2Wk9Nr4Qt8Zx3Lb6 \
	ALLOWED_HOSTS=doorstep.example.com

# PostgreSQL + Redis run of the suite (`make test-postgres`, and the second phase of .ci/run).
PG_ADMIN_URL ?= postgres://postgres@127.0.0.1:5432/postgres
PG_TEST_URL ?= postgres://postgres@127.0.0.1:5432/doorstep_ci
REDIS_TEST_URL ?= redis://127.0.0.1:6379/15

export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PIP_NO_INPUT := 1
export npm_config_fund := false
export npm_config_audit := false
export npm_config_update_notifier := false

.PHONY: help install vendor migrate run test test-postgres lint clean

help:
	@echo "make run            install, migrate, seed the demo, start web + worker on http://$(RUN_ADDR)/"
	@echo "make test           install, lint, system checks, the whole pytest suite (SQLite)"
	@echo "make test-postgres  the pytest suite on PostgreSQL + Redis ($(PG_TEST_URL))"
	@echo "make install | migrate | lint | clean"

# --- install -------------------------------------------------------------------------------
install: $(VENV)/.installed node_modules/.package-lock.json vendor

$(PY):
	@if [ -z "$(PYTHON)" ]; then echo "Doorstep needs Python >= 3.11: no python3.11 or python3 on PATH." >&2; exit 1; fi
	@if ! "$(PYTHON)" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then \
		echo "Doorstep needs Python >= 3.11, but $(PYTHON) is $$("$(PYTHON)" -V 2>&1)." >&2; \
		echo "Install Python 3.11+ or run: make PYTHON=/path/to/python3.11 ..." >&2; exit 1; fi
	"$(PYTHON)" -m venv $(VENV)

# PYTHONWARNINGS: setuptools' generic "editable installation" notice would bury real errors.
$(VENV)/.installed: pyproject.toml | $(PY)
	PYTHONWARNINGS=ignore $(PY) -m pip install --quiet --editable '.[dev]'
	@touch $@

node_modules/.package-lock.json: package-lock.json package.json
	@command -v npm >/dev/null || { echo "npm (Node.js) is needed for the map and signature JS: apt-get install npm" >&2; exit 1; }
	npm ci --loglevel=error
	@touch $@

vendor: node_modules/.package-lock.json
	@$(PY) scripts/vendor_static.py

# --- run -----------------------------------------------------------------------------------
migrate: install
	$(PY) manage.py migrate --noinput

run: migrate
	DEBUG=true SECURE_SSL_REDIRECT=false PY=$(PY) RUN_ADDR=$(RUN_ADDR) scripts/run.sh

# --- checks --------------------------------------------------------------------------------
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	@$(PY) scripts/check_env_example.py

test: lint
	$(PY) manage.py makemigrations --check --dry-run
	$(PY) manage.py check
	$(DEPLOY_CHECK_ENV) $(PY) manage.py check --deploy --fail-level WARNING
	@scripts/pytest.sh $(PYTEST_ARGS)

# pytest-django creates (and drops) test_<name> itself; <name> is created here so the URL is real.
test-postgres: install
	@db=$(notdir $(PG_TEST_URL)); \
		psql "$(PG_ADMIN_URL)" -tAc "SELECT 1 FROM pg_database WHERE datname = '$$db'" | grep -q 1 \
		|| psql "$(PG_ADMIN_URL)" -qc "CREATE DATABASE \"$$db\""
	@DATABASE_URL=$(PG_TEST_URL) REDIS_URL=$(REDIS_TEST_URL) scripts/pytest.sh $(PYTEST_ARGS)

# Back to a fresh clone, keeping your data (db.sqlite3, media/, .env).
clean:
	rm -rf $(VENV) node_modules static/vendor staticfiles test-results .pytest_cache .ruff_cache .hypothesis *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
