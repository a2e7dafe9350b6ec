# The two set-up commands (see README): `make demo` and `make test`.
# Both create .venv if it is missing and install what they need into it.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test dev lint typecheck unit proto bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

## Run the demo federation (3 chains x 5 departments on loopback, SQLite) and verify it.
demo: $(VENV)/.installed
	$(BIN)/creditshare demo --verify

## Lint, type-check and run every test (unit, node gRPC, end to end), the database
## tests on SQLite and on a throw-away PostgreSQL 15 server (scripts/postgres.sh).
test: lint typecheck
	scripts/postgres.sh run -- $(BIN)/pytest

## Install the development tools (tests, lint, benchmarks) without running anything.
dev: $(VENV)/.installed-dev

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests scripts bench
	$(BIN)/ruff format --check src tests scripts bench

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

unit: $(VENV)/.installed-dev
	$(BIN)/pytest tests/unit

## Regenerate the committed gRPC stubs from proto/.
proto: $(VENV)/.installed-dev
	$(BIN)/python scripts/gen_proto.py
	$(BIN)/ruff check --fix --quiet src/creditshare/proto/__init__.py

## Quick runs of every benchmark (each prints ratios against a baseline from the same run).
bench: $(VENV)/.installed-dev
	$(BIN)/python bench/crypto.py --quick
	$(BIN)/python bench/psi.py --quick
	$(BIN)/python bench/query.py --quick
	$(BIN)/python bench/monitoring.py --quick
	$(BIN)/python bench/train_default_credit.py --quick
	$(BIN)/python bench/train_gbdt.py --quick
	$(BIN)/python bench/scale.py --quick
	$(BIN)/python bench/stats.py --quick

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
