# The front door: `make demo` and `make test` set everything up from nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PLUGINS := $(sort $(dir $(wildcard plugins/*/pyproject.toml)))
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench clean servers

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml requirements-dev.txt $(wildcard plugins/*/pyproject.toml)
	$(BIN)/pip install --quiet -r requirements-dev.txt -e '.[testing]' $(foreach p,$(PLUGINS),-e $(p))
	touch $@

demo: $(STAMP)
	$(BIN)/rdzv demo

lint: $(STAMP)
	$(BIN)/ruff check rdzv_core tests plugins bench
	$(BIN)/ruff format --check rdzv_core tests plugins bench

typecheck: $(STAMP)
	$(BIN)/mypy rdzv_core $(foreach p,$(PLUGINS),$(p)rdzv_plugin_*)

# Servers the tests start as child processes (etcd for rdzv-plugin-etcd), from Debian.
servers:
	@command -v etcd >/dev/null || [ -n "$$ETCD_BIN" ] || (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null)

unit: $(STAMP) servers
	$(BIN)/python -m pytest tests
	@for p in $(PLUGINS); do echo "== $$p"; $(BIN)/python -m pytest $$p/tests || exit 1; done

test: lint typecheck unit
	$(MAKE) demo

bench: $(STAMP)
	$(BIN)/pip install --quiet torch==2.13.0 redis
	command -v redis-server >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV)
