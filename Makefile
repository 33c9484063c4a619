# ingestd: the targets a newcomer can guess. Everything installs what it needs on first use.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
STACK  := deploy/stack/stack.sh
CONFIG ?= deploy/ingestd.yaml

.PHONY: help venv run test test-unit test-integration lint fmt typecheck bench chaos fuzz \
        stack-up stack-down stack-status schema image tools clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

NATIVE_SRC := native/pyproject.toml native/Cargo.toml native/Cargo.lock $(wildcard native/src/*.rs)
CARGO      := PYO3_PYTHON=$(abspath $(BIN)/python) cargo

$(STAMP): pyproject.toml $(NATIVE_SRC)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@# The native codec (docs/native.md): optional, ingestd falls back to python without it.
	@if command -v cargo >/dev/null 2>&1; then $(BIN)/pip install -q ./native; \
	else echo "native codec not built: no Rust toolchain (install cargo: https://rustup.rs); ingest.codec auto uses python"; fi
	@touch $@

venv: $(STAMP) ## create the virtualenv and install ingestd with its dev tools

stack-up: ## install (first time) and start PostgreSQL+TimescaleDB, Elasticsearch, Redis
	@$(STACK) up

stack-down: ## stop what stack-up started
	@$(STACK) down

stack-status: ## show what runs, with versions
	@$(STACK) status

schema: $(STAMP) stack-up ## apply the database and Elasticsearch schema to the dev stack
	@set -a; . .stack/env; set +a; $(BIN)/ingestd schema apply -c $(CONFIG)

run: $(STAMP) schema ## bring up the dev stack, apply the schema, run ingestd in the foreground
	@set -a; . .stack/env; set +a; exec $(BIN)/ingestd run -c $(CONFIG)

tools: ## install podman, runc, debootstrap and promtool from Debian (first time; deploy/tools.sh)
	@deploy/tools.sh >/dev/null

lint: $(STAMP) tools ## ruff, mypy --strict, and the deployment linters
	$(BIN)/ruff format --check ingestd tests
	$(BIN)/ruff check ingestd tests
	$(BIN)/mypy
	@if [ -x deploy/lint.sh ]; then deploy/lint.sh; fi
	cd native && cargo fmt --check && $(CARGO) clippy --all-targets --features python -- -D warnings

typecheck: $(STAMP)
	$(BIN)/mypy

fmt: $(STAMP) ## format and auto-fix
	$(BIN)/ruff format ingestd tests
	$(BIN)/ruff check --fix ingestd tests

test-unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

test-integration: $(STAMP) stack-up
	@set -a; . .stack/env; set +a; $(BIN)/pytest -q tests/integration

test: $(STAMP) stack-up lint ## the whole suite: lint, types, unit and integration tests on the real servers
	cd native && cargo test -q
	@set -a; . .stack/env; set +a; $(BIN)/pytest -q -p no:cacheprovider tests

bench: $(STAMP) stack-up ## end-to-end benchmarks (prints a table; see `make bench ARGS=--help`)
	@set -a; . .stack/env; set +a; $(BIN)/python -m tests.bench $(ARGS)

chaos: $(STAMP) stack-up ## the full fault-injection suite with the exactly-once ledger
	@set -a; . .stack/env; set +a; $(BIN)/python -m tests.chaos $(ARGS)

fuzz: $(STAMP) ## fuzz decoders and converters (ARGS="--target proto|json|bytes|native --minutes 30")
	$(BIN)/python -m tests.fuzz $(ARGS)

image: tools ## build the container image with docker or podman, offline (docs/container.md)
	@deploy/image.sh

clean: ## remove the virtualenv and caches (the stack keeps running)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
