# Portico: `make up` runs the system on embedded defaults, `make test` runs the tests.
# Everything installs into .venv from the pinned requirements.lock.

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
BENCH_INSTALLED := $(VENV)/.bench-installed
AUDIT_VENV := .venv-audit

.DEFAULT_GOAL := help
.PHONY: help install up down test test-fast lint format proto proto-check lock rotate-keys bench load contracts edge-certs compose-secrets audit clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(INSTALLED): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Portico needs Python >= 3.11 (set PYTHON=...)")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --requirement requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation --editable .
	@touch $@

install: $(INSTALLED) ## create .venv and install the pinned dependencies

# locust (make load, and its short run in make test) and the bench's peers: on top of
# requirements.lock, never in it (the image installs requirements.lock; ADR 0022)
$(BENCH_INSTALLED): $(INSTALLED) requirements-bench.lock
	$(BIN)/python -m pip install --quiet --constraint requirements.lock --requirement requirements-bench.lock
	$(BIN)/python -m pip check
	@touch $@

up: $(INSTALLED) ## prepare and run the stack (DETACH=1 returns once ready; EDGE=nginx: TLS + 2 gateways)
	$(BIN)/python -m tools.stack up $(if $(DETACH),--detach) $(if $(EDGE),--edge $(EDGE))

edge-certs: $(INSTALLED) ## development CA + server certificate for nginx in var/edge/certs (never committed)
	$(BIN)/python -m tools.edge certs

compose-secrets: $(INSTALLED) ## the Docker secrets compose mounts, generated into compose/secrets/ (never committed)
	$(BIN)/python -m tools.compose_secrets

down: ## stop a stack started with `make up DETACH=1`
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m tools.stack down; else echo "nothing to stop"; fi

test: $(BENCH_INSTALLED) ## lint, then unit, integration and end-to-end tests, and a 20 s load run
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m tools.protocheck
	$(BIN)/python -m pytest

test-fast: $(INSTALLED) ## lint and the unit tests only, on two processes: no servers, no stack (~30 s)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q -n 2 tests/unit examples

lint: $(INSTALLED) ## ruff check and format check
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: $(INSTALLED) ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

bench: $(BENCH_INSTALLED) ## the gateway side by side with nginx and Python peers (needs wrk, nginx)
	$(BIN)/python -m tests.bench $(BENCH_ARGS)

load: $(BENCH_INSTALLED) ## the user journey under Locust through a stack on free ports, then the saga invariants
	$(BIN)/python -m tests.load $(LOAD_ARGS)

contracts: $(INSTALLED) ## consumer-driven contracts: pacts, provider verification, the matrix (PUBLISH=1)
	$(BIN)/python -m tools.protocheck
	$(BIN)/python -m contracts $(if $(PUBLISH),--publish)

proto: $(INSTALLED) ## regenerate portico_proto/ from proto/ with the pinned grpcio-tools (ADR 0025)
	$(BIN)/python -m tools.protogen

proto-check: $(INSTALLED) ## breaking changes of proto/ against git PROTO_BASE_REF (default HEAD; ADR 0028)
	$(BIN)/python -m tools.protocheck

rotate-keys: $(INSTALLED) ## add a new token signing key; old keys stay valid until their tokens expire
	$(BIN)/python -m services.identity rotate-keys

$(AUDIT_VENV)/.installed: requirements-audit.lock
	@test -x $(AUDIT_VENV)/bin/python || $(PYTHON) -m venv $(AUDIT_VENV)
	$(AUDIT_VENV)/bin/python -m pip install --quiet --requirement requirements-audit.lock
	@touch $@

audit: $(AUDIT_VENV)/.installed ## pip-audit over requirements.lock (service unreachable: says so, fails only with CI=true)
	$(AUDIT_VENV)/bin/python -m tools.audit requirements.lock

lock: ## re-pin requirements.lock from the ranges in pyproject.toml (needs the network)
	rm -rf .lockvenv && $(PYTHON) -m venv .lockvenv
	.lockvenv/bin/python -m pip install --quiet --upgrade pip setuptools
	.lockvenv/bin/python -m pip install --quiet '.[dev]'
	.lockvenv/bin/python -m pip freeze --all --exclude portico --exclude pip > requirements.lock
	rm -rf .lockvenv

clean: down ## remove .venv and var/ (databases, keys, logs)
	rm -rf $(VENV) $(AUDIT_VENV) var
