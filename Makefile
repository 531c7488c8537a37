# One-word tasks. Both install what they need into .venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: demo tour test lint bench system-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

## demo: start the sandbox (default scenario), run the incident notebook, archive the record
demo: $(STAMP)
	$(BIN)/exportnb demo

## tour: start the sandbox, run the runbook's commands verbatim, stop it
tour: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/runbook-tour.sh

## test: install everything the tests need (Python and Debian packages), lint, run all tests
test: $(STAMP) system-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check exportnb tests benchmarks notebooks templates
	$(BIN)/mypy exportnb
	$(BIN)/lint-imports
	$(BIN)/python -m pytest
	$(BIN)/python -m pytest --nbval-lax --nbval-sanitize-with notebooks/sanitize.cfg notebooks/

system-deps:
	bash scripts/system-deps.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy exportnb
	$(BIN)/lint-imports

bench: $(STAMP)
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
