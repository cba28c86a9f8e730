# The two commands of the README: `make demo` (the main job, offline) and `make test` (every test).
# Both create the virtualenv and install what they need on first use.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
# This machine's pip configuration may name local indexes that do not exist: hide those warnings.
PIP_QUIET := { grep -v -e "is ignored: it is neither" -e "^$$" || true; }

.PHONY: install demo test clean

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is needed, found " + sys.version.split()[0] if sys.version_info < (3, 11) else 0)'
	@echo "Setting up $(VENV) (first run only, about a minute)…"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip 2>&1 | $(PIP_QUIET)
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[test]" 2>&1 | $(PIP_QUIET)
	@touch $@

demo: $(INSTALLED)
	$(BIN)/python scripts/demo.py

test: $(INSTALLED)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .demo .pytest_cache *.egg-info
