# Glucohub: `make demo` runs the gateway on simulated devices; `make test` runs every check.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck unit bench test-deps clean help

help:
	@echo "make demo   - run the whole gateway on simulated patients (dashboard on http://127.0.0.1:8080)"
	@echo "make test   - install dev dependencies and test services, then lint, type-check and test"
	@echo "make lint   - ruff and mypy only"
	@echo "make bench  - run the benchmarks and print figures against in-run baselines"

$(BIN)/python:
	@scripts/ensure-python.sh "$(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(VENV)/.installed $@

demo: $(VENV)/.installed
	@scripts/ensure-test-deps.sh --runtime
	$(BIN)/glucohub demo

test-deps:
	@scripts/ensure-test-deps.sh

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

unit: $(VENV)/.installed-dev test-deps
	$(BIN)/pytest -n 2 --dist loadfile

test: lint unit

bench: $(VENV)/.installed-dev test-deps
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var test-artifacts .pytest_cache .mypy_cache .ruff_cache
