# The front door: `make demo` and `make test` set everything up from nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PLUGINS := $(sort $(dir $(wildcard plugins/*/pyproject.toml)))
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit dist-check bench clean servers

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml requirements-dev.txt $(wildcard plugins/*/pyproject.toml)
	$(BIN)/pip install --quiet -r requirements-dev.txt -e '.[testing]' $(foreach p,$(PLUGINS),-e $(p))
	touch $@

demo: $(STAMP)
	$(BIN)/rdzv demo

lint: $(STAMP)
	$(BIN)/ruff check rdzv_core tests plugins bench tools
	$(BIN)/ruff format --check rdzv_core tests plugins bench tools

typecheck: $(STAMP)
	$(BIN)/mypy rdzv_core $(foreach p,$(PLUGINS),$(p)rdzv_plugin_*)

# What the tests start or call as child processes, from Debian: etcd (rdzv-plugin-etcd's
# tests) and openssl (certificates for its TLS test).
servers:
	@missing=""; \
	command -v etcd >/dev/null || [ -n "$$ETCD_BIN" ] || missing="$$missing etcd-server"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	if [ -n "$$missing" ]; then apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi

unit: $(STAMP) servers
	$(BIN)/python -m pytest tests
	@for p in $(PLUGINS); do echo "== $$p"; $(BIN)/python -m pytest $$p/tests || exit 1; done

# Every wheel and sdist as a package index would get it; rdzv-plugin-tcp alone in a fresh venv.
dist-check: $(STAMP)
	$(BIN)/python tools/check_dist.py

test: lint typecheck unit dist-check
	$(MAKE) demo

bench: $(STAMP)
	$(BIN)/pip install --quiet torch==2.13.0 redis
	command -v redis-server >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV)
