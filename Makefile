# sipha developer entry points.  `make demo` and `make test` work on a fresh machine:
# they create .venv, install the Python packages and (as root) the Debian ones.

PYTHON    ?= python3
VENV      ?= .venv
PY        := $(VENV)/bin/python
COMPILED  ?= .venv-compiled
DEB_DEPS  := sip-tester chromium nftables sngrep sipsak
# Installed without recommended packages: the TLS peers of tests/tls (Kamailio with its tls
# module, and baresip-core alone (its modules include the ones tests/tls loads: ctrl_tcp, menu,
# g711, ausine, aubridge), not the baresip metapackage, which pulls in FFmpeg and GStreamer),
# dnsmasq's binary without its system service (the DNS server of tests/net/test_dns.py), and
# Prometheus for promtool and a server scraping sipha (tests/admin/test_monitoring.py checks
# docs/monitoring; its recommends are the node exporter, not needed), and SIPVicious, the
# scanners of tests/chaos/test_scanners.py (its scapy recommends IPython and more, not needed).
DEB_DEPS_NO_RECOMMENDS := kamailio kamailio-tls-modules baresip-core dnsmasq-base prometheus sipvicious
HYPOTHESIS_PROFILE ?= ci

.PHONY: setup deb-deps demo test check lint typecheck pytest unit compiled pytest-compiled bench chaos property fuzz soak-faults overload clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# Debian packages the tests use (SIPp; Chromium for the dashboard test; nftables for the fault bed
# of tests/chaos, with iproute2's ip netns; Kamailio, its tls module and baresip for tests/tls;
# sngrep, the HEP receiver of tests/tracing).
# Installed only when missing; the services the packages ship (Kamailio on 5060, Prometheus on
# 9090) are stopped and disabled where systemd runs: the tests start their own, on free ports.
deb-deps:
	@missing=""; for p in $(DEB_DEPS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	lean=""; for p in $(DEB_DEPS_NO_RECOMMENDS); do dpkg -s $$p >/dev/null 2>&1 || lean="$$lean $$p"; done; \
	if [ -n "$$missing$$lean" ]; then \
	  echo "installing Debian packages:$$missing$$lean"; \
	  apt-get update -qq || exit 1; \
	  if [ -n "$$missing" ]; then \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null || exit 1; \
	  fi; \
	  if [ -n "$$lean" ]; then \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$lean >/dev/null || exit 1; \
	  fi; \
	  if [ -d /run/systemd/system ]; then \
	    systemctl disable --now kamailio prometheus >/dev/null 2>&1 || true; \
	  fi; \
	fi

# The demo: the proxy, two simulated SIP servers and the dashboard (http://127.0.0.1:8080/).
demo: setup
	$(VENV)/bin/sipha demo

lint: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

typecheck: setup
	$(VENV)/bin/mypy

# Unit and integration tests with branch coverage of the sans-IO core: first the core's unit
# tests (fake clock, no sockets: CPU-bound and independent) over 2 processes (pytest-xdist),
# then everything else in one process, one test at a time (real peers, timings), its coverage
# added to theirs; then the property tests on their own, untraced, over 2 processes too
# (2,000 examples each under the ci profile; `make property` runs 10,000 each).
CORE_TESTS := tests/sip tests/txn tests/proxy tests/ha
CORE_COV := --cov=sipha.sip --cov=sipha.txn --cov=sipha.proxy --cov=sipha.ha --cov-branch
pytest: setup deb-deps
	$(PY) -m pytest -q -n 2 -m "not property and not long" $(CORE_COV) --cov-report= $(CORE_TESTS)
	$(PY) -m pytest -p no:xdist -m "not property and not long" $(addprefix --ignore=,$(CORE_TESTS)) \
	  $(CORE_COV) --cov-append --cov-report=term-missing:skip-covered --cov-fail-under=95
	HYPOTHESIS_PROFILE=$(HYPOTHESIS_PROFILE) $(PY) -m pytest -n 2 -m property -p no:cacheprovider

# The compiled build (setup.py: the sans-IO core through mypyc, half the CPU per call) in its
# own virtualenv: what the benchmarks measure, and what production runs.  It is what a plain
# `pip install .` builds (mypyc and what it type-checks through are build requirements in
# pyproject.toml); .venv above stays an editable, interpreted install, so that a change needs no
# recompilation (minutes) and coverage is measured on the source.
compiled: $(COMPILED)/.installed

$(COMPILED)/.installed: pyproject.toml setup.py $(shell find src -name '*.py')
	$(PYTHON) -m venv $(COMPILED)
	$(COMPILED)/bin/pip install --quiet --upgrade pip
	rm -rf build  # setuptools would package stale extension modules left there by an earlier build
	$(COMPILED)/bin/pip install --quiet '.[dev]'
	$(COMPILED)/bin/python -c "import sipha.proxy.core as m; assert m.__file__.endswith('.so'), m.__file__"
	touch $@

# Against the compiled modules: the core's and the transports' unit tests again, and the
# worker processes end to end with SIPp (the UDP path and the hand-over, compiled).
pytest-compiled: compiled deb-deps
	$(COMPILED)/bin/python -m pytest -q -m "not property" -p no:cacheprovider \
	  tests/sip tests/txn tests/proxy tests/ha tests/net tests/test_build.py tests/integration/test_workers.py

# The inner loop (under a minute): lint, types and the unit tests of the sans-IO core and the
# configuration, on a fake clock; no SIPp, no namespaces, no compiled build.
UNIT_TESTS := tests/sip tests/txn tests/proxy tests/ha tests/test_config.py tests/test_tlsconfig.py \
  tests/test_architecture.py tests/test_build.py tests/tracing/test_hep.py

unit: setup
	$(PY) -m pytest -q -m "not property" -p no:cacheprovider $(UNIT_TESTS)

check: lint typecheck unit

# Everything CI runs: lint, types, tests (interpreted with coverage, then compiled).
test: lint typecheck pytest pytest-compiled

# The long runs kept out of `make test` (marker "long"): the fault bed of tests/chaos with
# 2 workers as well as 1 (about 5 minutes more), printing each case's CHAOS line; the pool
# behind DNS with baresip over UDP too (about 3 minutes), printing its POOL lines; 11,000 idle
# TCP connections against the default max-connections (about 1 minute), its TCP line.
chaos: setup deb-deps
	$(PY) -m pytest -s -p no:cacheprovider tests/chaos tests/integration/test_failover.py tests/pool/test_pool.py

# The property tests at length: 10,000 examples each (hypothesis profile "long").
property: setup
	HYPOTHESIS_PROFILE=long $(PY) -m pytest -m property -p no:cacheprovider

# Coverage-guided fuzzing (atheris) of the parser, the stream framer and the proxy core, FUZZ_SECONDS
# per target (tests/fuzz/README.md); crashes are written to $(FUZZ_OUT)/crashes/<target>/, and fail it.
# CI runs a short version of each (tests/fuzz/test_fuzz.py).
FUZZ_SECONDS ?= 600
FUZZ_OUT ?= tests/artifacts/fuzz
fuzz: setup
	$(PY) -m tests.fuzz.campaign --seconds $(FUZZ_SECONDS) --out $(FUZZ_OUT)

# Benchmarks: the parser alone; the side by side with Kamailio is bench/proxies.py (see bench/README.md).
bench: setup compiled
	$(PY) bench/parse.py
	$(COMPILED)/bin/python bench/core.py

# A 30-minute soak with faults (bench, not CI; as root): SIPp calls through the compiled sipha in
# a network namespace, a random fault every 60 s (loss burst, member kill and restart, INVITE
# flood); a Markdown report to $(SOAK_OUT) (bench/README.md, "chaos_soak.py"). SOAK_ARGS: e.g.
# "--rate 500 --seed 15".
SOAK_OUT ?= bench/soak-faults.md
SOAK_ARGS ?=
soak-faults: setup deb-deps compiled
	$(PY) bench/chaos_soak.py --duration 1800 --every 60 --out $(SOAK_OUT) $(SOAK_ARGS)

# Overload at 2x capacity, sipha and Kamailio side by side (bench, not CI; as root: a cgroup per
# proxy): each held to OVERLOAD_CPU of one core on core 0 (cgroup CPU quota), SIPp on core 1; a
# ladder finds each one's capacity C, then 2x C for 30 s; a Markdown report to $(OVERLOAD_OUT).
OVERLOAD_OUT ?= bench/overload.md
OVERLOAD_CPU ?= 0.4
OVERLOAD_ARGS ?=
overload: setup deb-deps compiled
	$(PY) bench/overload.py --cpu-limit $(OVERLOAD_CPU) --duration 30 --out $(OVERLOAD_OUT) $(OVERLOAD_ARGS)

clean:
	rm -rf $(VENV) $(COMPILED) build .mypy_cache .pytest_cache .ruff_cache .coverage htmlcov
