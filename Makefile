# Two commands for a fresh Debian/Ubuntu machine:  `make demo`  and  `make test`.
# Each installs what it needs: a venv with the package, and the Debian packages the tests run for real.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
# binary:package pairs the test suite starts for real (on loopback ports, stopped by PID)
SYSTEM_DEPS := redis-server:redis-server prometheus:prometheus promtool:prometheus \
               prometheus-alertmanager:prometheus-alertmanager amtool:prometheus-alertmanager
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint typecheck unit integration system-deps venv bench dashboards clean

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
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
	else echo "==> Debian packages present: redis-server, prometheus, promtool, alertmanager, amtool"; fi

demo: venv
	$(VENV)/bin/taskiq-monitor demo $(DEMO_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	$(VENV)/bin/mypy

test: system-deps venv lint typecheck
	$(PY) -m pytest $(PYTEST_ARGS)

unit: venv
	$(PY) -m pytest --ignore=tests/integration $(PYTEST_ARGS)

bench: venv
	$(PY) benchmarks/bench_middleware.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
