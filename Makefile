# labguard: the two commands an admin needs are `make demo` and `make test`.
# Everything they need (the venv, pip packages, npm packages) is installed here, never by hand.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: all venv demo test chaos lint typecheck imports bench clean schema chromium

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

# The compliance page is tested in a real headless browser: Debian's chromium. CI runs as root with
# Debian's mirror, so it is installed here; elsewhere the page test skips and says why.
chromium:
	@if ! command -v chromium >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium (apt-get) for the page tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

imports: $(STAMP)
	$(VENV)/bin/lint-imports

schema: $(STAMP)
	$(VENV)/bin/labguard check-policy --write-schema policy.schema.json
	$(VENV)/bin/labguard check-policy policy.yaml --write-checked >/dev/null

test: $(STAMP) node_modules/.installed .venv-checkov/.installed chromium lint typecheck imports
	$(VENV)/bin/pytest

# The full chaos run (about 1,000 changes under each PATCH mode) and a larger fuzz budget; `make test`
# runs the chaos test at about 120 changes. LABGUARD_CHAOS_SEED=N reproduces a run (each run prints its seed).
CHAOS_CHANGES ?= 1000
chaos: $(STAMP) node_modules/.installed
	LABGUARD_CHAOS_CHANGES=$(CHAOS_CHANGES) LABGUARD_CHAOS_PATCH_MODES=merge,replace \
		$(VENV)/bin/pytest -m chaos -s tests/chaos
	LABGUARD_FUZZ_EXAMPLES=1000 $(VENV)/bin/pytest -q tests/fuzz tests/unit/test_properties.py

demo: $(STAMP) node_modules/.installed
	$(PY) -m devtools.demo

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) .venv-checkov node_modules .pytest_cache .mypy_cache .ruff_cache .hypothesis
