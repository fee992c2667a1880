# The two quick-start commands are `make demo` and `make test`; both set themselves up.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tfship-installed
export TF_CPP_MIN_LOG_LEVEL ?= 3
export TF_ENABLE_ONEDNN_OPTS ?= 0
export PIP_DISABLE_PIP_VERSION_CHECK := 1
PYTEST_ARGS ?=

.PHONY: demo test test-fast lint ci-local bench clean setup

setup: $(STAMP)

$(STAMP): requirements.txt requirements-cpu.txt requirements-serving-api.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements.txt -r requirements-cpu.txt -r requirements-dev.txt
	$(BIN)/python -m pip install -q --no-deps -r requirements-serving-api.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

## The main job: the whole pipeline locally on the built-in demo data.
demo: $(STAMP)
	$(BIN)/tfship run --config pipeline.yaml

## The test suite (unit + integration + e2e), with coverage.
test: $(STAMP)
	$(BIN)/python -m pytest --cov --cov-report=term --cov-report=xml:coverage.xml \
		--junitxml=junit.xml $(PYTEST_ARGS)

## Fast unit tests only (what a merge request's first job runs).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not integration and not e2e" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: $(STAMP)
	for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) runs build *.egg-info .pytest_cache .coverage* coverage.xml junit.xml
