# Every target installs what it needs into .venv first, so a fresh clone needs only
# Python 3.11+ (and, for the PostgreSQL tests, a PostgreSQL server; see .ci/run).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Test processes (pytest-xdist); `make test TEST_WORKERS=0` runs the suite in one process.
TEST_WORKERS ?= auto

.PHONY: install run test lint typecheck unit bench bench-quick clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "smsinbox needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

## run: the server on the embedded SQLite default (./var/smsinbox.db), http://127.0.0.1:8080
run: install
	$(BIN)/smsinbox serve

## test: lint, type checks and the whole test suite
test: lint typecheck unit

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: install
	$(BIN)/mypy

# node-smpp, the SMSC the SMPP tests bind to, from its lockfile (tests/smsc).
NODE_PEER := tests/smsc/node_modules/.package-lock.json

$(NODE_PEER): tests/smsc/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix tests/smsc --no-audit --no-fund --loglevel=error; \
	else \
		echo "npm not found: the tests against node-smpp will be skipped"; \
	fi

# axe-core, the accessibility checker the browser tests load into pages (tests/browser).
AXE := tests/browser/node_modules/.package-lock.json

$(AXE): tests/browser/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error; \
	else \
		echo "npm not found: the browser tests will be skipped"; \
	fi

# The browser tests run in a pytest session of their own (tests/conftest.py says why).
unit: install $(NODE_PEER) $(AXE)
	$(BIN)/pytest -n $(TEST_WORKERS)
	$(BIN)/pytest -n $(TEST_WORKERS) tests/test_web_browser.py

## bench: every hot path beside the ceiling, SQLite and PostgreSQL (installs wrk and Kannel if missing)
bench: install
	$(BIN)/python bench/run.py --mode full

## bench-quick: a smoke run of the same, under two minutes
bench-quick: install
	$(BIN)/python bench/run.py --mode quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
