# sipha developer entry points.  `make demo` and `make test` work on a fresh machine:
# they create .venv, install the Python packages and (as root) the Debian ones.

PYTHON    ?= python3
VENV      ?= .venv
PY        := $(VENV)/bin/python
DEB_DEPS  := sip-tester chromium
HYPOTHESIS_PROFILE ?= ci

.PHONY: setup deb-deps demo test lint typecheck pytest bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# Debian packages the tests use (SIPp; Chromium for the dashboard test).  Installed only when missing.
deb-deps:
	@missing=""; for p in $(DEB_DEPS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

# The demo: the proxy, two simulated SIP servers and the dashboard (http://127.0.0.1:8080/).
demo: setup
	$(VENV)/bin/sipha demo

lint: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

typecheck: setup
	$(VENV)/bin/mypy

# Unit and integration tests with branch coverage of the sans-IO core; then the property
# tests on their own, untraced (10,000 examples each under the ci profile).
pytest: setup deb-deps
	$(PY) -m pytest -m "not property" \
	  --cov=sipha.sip --cov=sipha.txn --cov=sipha.proxy --cov=sipha.ha --cov-branch --cov-report=term-missing:skip-covered --cov-fail-under=95
	HYPOTHESIS_PROFILE=$(HYPOTHESIS_PROFILE) $(PY) -m pytest -m property -p no:cacheprovider

# Everything CI runs: lint, types, tests.
test: lint typecheck pytest

bench: setup
	$(PY) bench/parse.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .coverage htmlcov
