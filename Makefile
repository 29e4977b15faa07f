# labguard: the two commands an admin needs are `make demo` and `make test`.
# Everything they need (the venv, pip packages, npm packages) is installed here, never by hand.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: all venv demo test lint typecheck imports bench clean schema

all: test

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $@

# checkov pins libraries that clash with the app's (packaging<24, an older pycep-parser): own venv.
.venv-checkov/.installed:
	@test -x .venv-checkov/bin/python || $(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/pip install --quiet --disable-pip-version-check checkov==3.3.30
	@touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

venv: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

imports: $(STAMP)
	$(VENV)/bin/lint-imports

schema: $(STAMP)
	$(PY) -m shared.policy --write-schema policy.schema.json

test: $(STAMP) node_modules/.installed .venv-checkov/.installed lint typecheck imports
	$(VENV)/bin/pytest

demo: $(STAMP) node_modules/.installed
	$(PY) -m devtools.demo

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) .venv-checkov node_modules .pytest_cache .mypy_cache .ruff_cache .hypothesis
