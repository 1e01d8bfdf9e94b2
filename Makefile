# CityPass — every command a developer needs. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CODE := shared services citypass tests loadtests

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "CityPass needs Python >= 3.11 (found %s)" % sys.version.split()[0])'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { echo "python3 -m venv failed: install python3-venv (apt-get install python3-venv)"; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

# Debian packages the tests need: Chromium drives the dashboard and rider app in browser
# tests; Node.js and npm build the rider app and run its codec against the Python one.
SYSTEM_STAMP := $(VENV)/.system-stamp
$(SYSTEM_STAMP): | $(STAMP)
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium fonts-noto-core"; \
	{ command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; } || missing="$$missing nodejs npm"; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "Installing$$missing (Debian) for the tests…"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "The tests need:$$missing (sudo apt-get install$$missing)"; exit 1; fi; \
	fi
	@touch $(SYSTEM_STAMP)

install: $(STAMP) ## create .venv and install everything (done by the other targets)

# The rider web app: npm fetches the pinned QR encoder, build.js copies it and our sources
# into dist/ (no bundler). Rebuilt only when a source changed.
WEBAPP := services/ticketing/webapp
WEBAPP_BUILD := $(WEBAPP)/dist/index.html
HAVE_NODE := command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1

$(WEBAPP_BUILD): $(WEBAPP)/package.json $(WEBAPP)/build.js $(wildcard $(WEBAPP)/src/*)
	@$(HAVE_NODE) || { echo "Rider app not built: install Node.js 18+ and npm (apt-get install nodejs npm) and re-run make app"; exit 1; }
	cd $(WEBAPP) && npm install --no-package-lock --no-audit --no-fund --loglevel=error && npm run --silent build

app: $(WEBAPP_BUILD) ## build the rider web app (PWA) that ticketing serves at /app/ (needs Node.js 18+)

run: $(STAMP) ## run the whole platform locally on real servers (data in ./var, Ctrl-C stops)
	@if $(HAVE_NODE); then $(MAKE) --no-print-directory app || echo "Rider app build failed (see above); starting without it"; fi
	$(BIN)/python -m citypass.stack run

test: $(STAMP) $(SYSTEM_STAMP) ## run the whole test suite against real PostgreSQL, Valkey and Kafka
	$(BIN)/pytest -n 2 --dist loadfile

check: $(STAMP) ## format check, lint and types
	$(BIN)/ruff format --check $(CODE)
	$(BIN)/ruff check $(CODE)
	$(BIN)/mypy $(CODE)

format: $(STAMP) ## apply ruff format and autofixes
	$(BIN)/ruff format $(CODE)
	$(BIN)/ruff check --fix $(CODE)

migrate: $(STAMP) ## apply migrations to CITYPASS_DATABASE_URL
	$(BIN)/citypass stack migrate

seed: $(STAMP) ## load demo data into CITYPASS_DATABASE_URL / CITYPASS_REDIS_URL
	$(BIN)/citypass stack seed

bench: $(STAMP) ## the platform's figures in one table (own servers; 8–15 min: waits for a quiet machine)
	$(BIN)/python -m loadtests.bench

bench-fares: $(STAMP) ## fare engine legs/s on one core with transfer and cap state (pure, ~15 s)
	$(BIN)/python -m loadtests.bench_fares

compose-check: ## validate docker-compose.yml (needs Debian's docker-compose)
	docker-compose config -q

clean: ## remove local data, logs and caches (keeps .venv)
	rm -rf var test-artifacts .pytest_cache .mypy_cache .ruff_cache .hypothesis $(WEBAPP)/dist

.PHONY: help install app run test check format migrate seed bench loadtest compose-check clean

loadtest: $(STAMP) ## Locust against the gate path (starts the stack if needed); fails on SLO breach
	$(BIN)/python -m loadtests.run
