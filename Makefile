# Two commands for a fresh Debian/Ubuntu machine:  `make demo`  and  `make test`.
# Each installs what it needs: a venv with the package, and the Debian packages the tests run for real.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
# binary:package pairs the test suite starts for real (on loopback ports, stopped by PID)
SYSTEM_DEPS := redis-server:redis-server prometheus:prometheus promtool:prometheus \
               prometheus-alertmanager:prometheus-alertmanager amtool:prometheus-alertmanager \
               chromium:chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# make test-stress: the test suite with CPU hogs beside it (tools/stress.sh), e.g. STRESS_RUNS=3
STRESS_HOGS ?= 2
STRESS_RUNS ?= 1

.PHONY: demo test test-stress taskiq-suite lint typecheck unit system-deps node-deps venv bench bench-ui dashboards screenshots clean

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "taskiq-monitor needs Python >= 3.11; run with PYTHON=python3.11 (or newer)"; exit 1; }
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || { echo "==> installing python3-venv"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq python3-venv >/dev/null; }
	@echo "==> creating $(VENV) and installing taskiq-monitor[dev]"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

system-deps:
	@missing=""; for pair in $(SYSTEM_DEPS); do bin=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$bin >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  pkgs=$$(echo $$missing | tr ' ' '\n' | sort -u | tr '\n' ' '); \
	  echo "==> installing Debian packages:$$pkgs"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$pkgs >/dev/null; \
	else echo "==> Debian packages present: redis-server, prometheus, promtool, alertmanager, amtool, chromium"; fi

demo: venv
	$(VENV)/bin/taskiq-monitor demo $(DEMO_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	$(VENV)/bin/mypy

node-deps:
	@command -v npm >/dev/null 2>&1 || { echo "==> installing nodejs and npm"; $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null; }
	@if [ ! -d tools/grafana-validate/node_modules ]; then echo "==> npm ci (dashboard schema + LogQL grammar)"; \
	  (cd tools/grafana-validate && npm ci --no-audit --no-fund --loglevel=error); fi

test: system-deps node-deps venv lint typecheck
	$(PY) grafana/generate.py --check
	$(PY) prometheus/rules/generate.py --check
	$(PY) -m pytest $(PYTEST_ARGS)
	$(MAKE) --no-print-directory taskiq-suite

# taskiq's own test suite with MonitoringMiddleware attached to every broker (tools/taskiq_suite/run.py);
# TASKIQ_SUITE_ARGS="--position all --sinks all" runs every combination.
taskiq-suite: venv $(VENV)/.taskiq-suite
	$(PY) tools/taskiq_suite/run.py $(TASKIQ_SUITE_ARGS)

$(VENV)/.taskiq-suite: tools/taskiq_suite/requirements.txt $(VENV)/.installed
	@echo "==> installing what taskiq's test suite needs (tools/taskiq_suite/requirements.txt)"
	$(PY) -m pip install --quiet -r tools/taskiq_suite/requirements.txt
	@touch $@

test-stress: system-deps node-deps venv
	tools/stress.sh $(STRESS_HOGS) $(STRESS_RUNS) -- $(PY) -m pytest -p no:cacheprovider $(PYTEST_ARGS)

unit: venv
	$(PY) -m pytest --ignore=tests/integration --ignore=tests/browser $(PYTEST_ARGS)

bench: venv
	$(PY) benchmarks/bench_middleware.py

# PNGs of the dashboard's views under docs/ (the in-memory demo, driven by Chromium)
screenshots: system-deps venv
	$(PY) tools/screenshots.py

# Dashboard freshness and initial load in Chromium; BENCH_UI_ARGS="--scale --minutes 5" adds the 1,000 events/s run
bench-ui: system-deps venv
	$(PY) benchmarks/bench_ui.py $(BENCH_UI_ARGS)

dashboards: venv
	$(PY) grafana/generate.py
	$(PY) prometheus/rules/generate.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
