# The two commands of the README: `make demo` (the main job, offline) and `make test` (every test).
# Both create the virtualenv and install what they need on first use.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
# Versions the suite was last run with (pip freeze), so that a fresh install resolves the same set
# quickly; used when present for this Python. Refresh: .venv/bin/pip freeze --exclude-editable.
PYVER := $(shell $(PYTHON) -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
CONSTRAINTS := $(if $(wildcard constraints/py$(PYVER).txt),-c constraints/py$(PYVER).txt,)
# This machine's pip configuration may name local indexes that do not exist: hide those warnings.
PIP_QUIET := { grep -v -e "is ignored: it is neither" -e "^$$" || true; }

.PHONY: install demo demo-clean test test-matrix dist clean chromium redis-server postgresql

install: $(INSTALLED)

$(INSTALLED): pyproject.toml $(wildcard constraints/*.txt)
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is needed, found " + sys.version.split()[0] if sys.version_info < (3, 11) else 0)'
	@echo "Setting up $(VENV) (first run only, about a minute)…"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip 2>&1 | $(PIP_QUIET)
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[test]" $(CONSTRAINTS) 2>&1 | $(PIP_QUIET)
	@touch $@

demo: $(INSTALLED)
	$(BIN)/python scripts/demo.py

# The demo keeps its results (a second run shows resume); this starts it over.
demo-clean:
	rm -rf .demo/results .demo/results.db .demo/demo.log

# A wheel and an sdist in dist/, checked by twine (install one with: pip install dist/*.whl).
dist: $(INSTALLED)
	$(BIN)/pip install --quiet --disable-pip-version-check build twine 2>&1 | $(PIP_QUIET)
	rm -rf dist
	$(BIN)/python -m build --outdir dist . 2>&1 | grep -E "^Successfully|[Ww]arning|[Ee]rror" | grep -v "byte-compiling is disabled" || true
	$(BIN)/twine check --strict dist/*

# Two passes: the tests that measure time or rates (marker `serial`) run alone, after the rest has run
# in TEST_WORKERS processes (pytest-xdist; the browser tests share one). A pass that PYTEST_ARGS leaves
# empty (exit status 5) is fine; both empty is an error (select with paths or -k: a -m there replaces
# each pass's own). The first pass waits on servers and subprocesses much of the time: on 2 cores it
# took 209 s with 3 workers and 224 s with 4.
TEST_WORKERS ?= 3
test: $(INSTALLED) chromium redis-server postgresql
	@parallel=0; serial=0; \
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup -m "not serial" $(PYTEST_ARGS) || parallel=$$?; \
	[ $$parallel = 0 ] || [ $$parallel = 5 ] || exit $$parallel; \
	$(BIN)/python -m pytest -m serial $(PYTEST_ARGS) || serial=$$?; \
	[ $$serial = 0 ] || [ $$serial = 5 ] || exit $$serial; \
	[ $$parallel$$serial != 55 ] || { echo "make test: PYTEST_ARGS selected no test" >&2; exit 5; }

# The compatibility subset on the newest patch release of each Airflow 3 minor version (noxfile.py),
# one uv-made virtualenv per version under .nox/. One version: make test-matrix NOX_ARGS='-s "compat(3.1)"'
test-matrix: $(INSTALLED)
	$(BIN)/nox $(NOX_ARGS)

# $(call debian_package,CHECK,PACKAGE,TESTS): unless the shell command CHECK succeeds, install Debian's
# PACKAGE when permitted (root, apt-get); otherwise warn that TESTS will be skipped.
define debian_package
	@if ! $(1) >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "Installing Debian's $(2) for $(3)…"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2)) >/dev/null 2>&1 \
	      || echo "WARNING: could not install $(2): $(3) will be SKIPPED"; \
	  else \
	    echo "WARNING: no $(2) and no permission to install it: $(3) will be SKIPPED"; \
	  fi; \
	fi
endef

# What the tests start on 127.0.0.1 (servers) or drive (a browser).
chromium:
	$(call debian_package,test -x /usr/bin/chromium,chromium,the browser tests (tests/e2e))

redis-server:
	$(call debian_package,test -x /usr/bin/redis-server,redis-server,the shared rate limit tests)

postgresql:
	$(call debian_package,ls /usr/lib/postgresql/*/bin/postgres,postgresql,the SQL output's PostgreSQL tests)

clean:
	rm -rf $(VENV) .demo .pytest_cache *.egg-info
