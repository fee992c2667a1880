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

.PHONY: demo test test-fast lint lint-ci ci-local ci-local-setup bench clean setup lock

setup: $(STAMP)

# Everything from the hashed lock (runtime + tensorflow-cpu + CI tools), nothing unpinned: see
# ci/install-deps, which installs the same way in CI.
$(STAMP): requirements-cpu.lock requirements-serving-api.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --require-hashes -r requirements-cpu.lock
	$(BIN)/python -m pip install -q --no-deps --require-hashes -r requirements-serving-api.txt
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

## Regenerate the hashed locks after editing requirements*.txt (uv, pinned, in a throwaway venv).
## With CI tools: requirements-cpu.lock (plain Python: + tensorflow-cpu), requirements-dev.lock
## (images that ship TensorFlow). Runtime only (deploy jobs, the training image): requirements.lock
## (TensorFlow from the image), requirements-runtime-cpu.lock (+ tensorflow-cpu).
LOCK_TOOL := build/lock-venv/bin/uv
LOCK_ARGS := --universal --python-version 3.11 --generate-hashes
$(LOCK_TOOL):
	$(PYTHON) -m venv build/lock-venv
	build/lock-venv/bin/python -m pip install -q uv==0.13.9
lock: $(LOCK_TOOL)
	$(LOCK_TOOL) pip compile -q $(LOCK_ARGS) requirements.txt requirements-build.txt requirements-dev.txt requirements-cpu.txt -o requirements-cpu.lock
	$(LOCK_TOOL) pip compile -q $(LOCK_ARGS) requirements.txt requirements-build.txt requirements-dev.txt -c requirements-cpu.lock -o requirements-dev.lock
	$(LOCK_TOOL) pip compile -q $(LOCK_ARGS) requirements.txt requirements-build.txt -c requirements-cpu.lock -o requirements.lock
	$(LOCK_TOOL) pip compile -q $(LOCK_ARGS) requirements.txt requirements-build.txt requirements-cpu.txt -c requirements-cpu.lock -o requirements-runtime-cpu.lock

## The main job: the whole pipeline locally on the built-in demo data.
demo: $(STAMP)
	$(BIN)/tfship run --config pipeline.yaml

## The test suite (unit + integration + e2e), with coverage.
test: $(STAMP) ci-local-setup
	$(BIN)/python -m pytest --cov --cov-report=term --cov-report=xml:coverage.xml \
		--junitxml=junit.xml $(PYTEST_ARGS)

## Fast unit tests only (what a merge request's first job runs).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not integration and not e2e" $(PYTEST_ARGS)

lint: $(STAMP)
	PYTHON=$(BIN)/python ci/lint-python

## Offline lint of the CI files: GitLab/GitHub schemas, actionlint, zizmor, hadolint, shellcheck, yamllint.
lint-ci: $(STAMP)
	BIN=$(BIN) ci/lint

GITLAB_CI_LOCAL := build/tools/node_modules/.bin/gitlab-ci-local
$(GITLAB_CI_LOCAL):
	command -v rsync >/dev/null || { apt-get update -qq && apt-get install -y -qq rsync; }
	npm install --prefix build/tools --no-save --no-audit --no-fund gitlab-ci-local@4.72.0

## gitlab-ci-local (npm, pinned) and the rsync it needs.
ci-local-setup: $(GITLAB_CI_LOCAL)

## The merge-request pipeline of the real .gitlab-ci.yml, locally (CI_LOCAL_PIPELINE=protected-push for the other one).
ci-local: $(STAMP) $(GITLAB_CI_LOCAL)
	PATH="$(CURDIR)/$(BIN):$$PATH" TFSHIP_SKIP_INSTALL=true CI_LOCAL_PIPELINE=$${CI_LOCAL_PIPELINE:-merge-request} \
		ci/gitlab-local --variable TFSHIP_SKIP_INSTALL=true --shell-isolation $(CI_LOCAL_ARGS)

bench: $(STAMP)
	for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) runs build *.egg-info .pytest_cache .coverage* coverage.xml junit.xml
