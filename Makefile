# pyvault-tokens. `make help` lists the targets.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
SQL_DIRS := sql migrations tests/sql tests/helpers
NODE_DIR := clients/node
NODE_STAMP := $(NODE_DIR)/node_modules/.package-lock.json

.DEFAULT_GOAL := help
.PHONY: help setup test lint demo migrate bench bench-quick soak schema-dump clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml tools/install-debian-packages
	tools/install-debian-packages
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# npm writes node_modules/.package-lock.json on every install: a fresh checkout, or a
# package-lock.json newer than node_modules, gets `npm ci` first.
$(NODE_STAMP): $(NODE_DIR)/package-lock.json
	cd $(NODE_DIR) && npm ci --no-audit --no-fund
	touch $(NODE_STAMP)

setup: $(STAMP) ## Install the Debian packages and the virtualenv

test: $(STAMP) ## Run every test (pytest, pgTAP) on a throwaway cluster
	$(BIN)/pytest -q

lint: $(STAMP) $(NODE_STAMP) ## sqlfluff, plpgsql_check over every function, ruff, mypy --strict, eslint
	$(BIN)/sqlfluff lint $(SQL_DIRS)
	$(BIN)/python tools/plpgsql_lint.py
	$(BIN)/ruff check pyvault_tokens tests tools examples bench
	cd $(NODE_DIR) && npm run --silent lint
	$(BIN)/mypy pyvault_tokens

demo: $(STAMP) ## Run the refresh story on an embedded throwaway cluster
	$(BIN)/pyvault-tokens demo

migrate: $(STAMP) ## Migrate the database named by DATABASE_URL
	$(BIN)/pyvault-tokens migrate

bench: $(STAMP) ## Benchmark the hot path with pgbench (1M tokens, embedded cluster; several minutes)
	$(BIN)/python bench/run.py

bench-quick: $(STAMP) ## Short benchmark (~20k tokens, one short run per row, lifecycle at 800 clients; ~90 s)
	$(BIN)/python bench/run.py --quick

soak: $(STAMP) ## The reliability suite with soak-sized counts (under 30 minutes)
	PYVAULT_SOAK=1 $(BIN)/pytest -q tests/test_reliability.py tests/test_fuzz.py tests/test_concurrency.py

schema-dump: $(STAMP) ## Rewrite tests/expected-schema.txt from a freshly migrated database
	$(BIN)/python tools/dump_schema.py

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache build dist
