# The front door: `make demo` and `make test` set everything up from nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PLUGINS := $(sort $(dir $(wildcard plugins/*/pyproject.toml)))
INTEGRATIONS := $(sort $(dir $(wildcard integrations/*/pyproject.toml)))
DISTS := $(PLUGINS) $(INTEGRATIONS)
# The CPU build of torch that rdzv-torch is tested against (pip takes it from this machine's
# disk; a bare "torch" requirement would fetch a multi-GB CUDA build).
TORCH := torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit unit-local engines matrix dist-check bench clean servers torch-version

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml requirements-dev.txt $(wildcard plugins/*/pyproject.toml) $(wildcard integrations/*/pyproject.toml)
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -r requirements-dev.txt -e '.[testing]' $(foreach p,$(DISTS),-e $(p))
	touch $@

demo: $(STAMP)
	$(BIN)/rdzv demo

lint: $(STAMP)
	$(BIN)/ruff check rdzv_core tests plugins integrations bench tools
	$(BIN)/ruff format --check rdzv_core tests plugins integrations bench tools

typecheck: $(STAMP)
	$(BIN)/mypy rdzv_core $(foreach p,$(PLUGINS),$(p)rdzv_plugin_*) integrations/torch/rdzv_torch tools

# What the tests start or call as child processes, from Debian: etcd and redis-server (the
# etcd and redis plugins' tests), openssl (certificates for their TLS tests), and chromium
# with its driver (the status page's browser test).
servers:
	@missing=""; \
	command -v etcd >/dev/null || [ -n "$$ETCD_BIN" ] || missing="$$missing etcd-server"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	if [ -n "$$missing" ]; then apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi

# etcd's and redis's suites run side by side (etcd's on 2 workers, the heavier), each with
# its output kept whole.
ENGINES := plugins/etcd/ plugins/redis/
LOGS := $(VENV)/logs

# Each suite runs on several pytest-xdist workers: most tests wait on child processes,
# servers and timeouts rather than compute, so more workers than cores keep the cores busy
# (`make test` gives each lane its share: see below).
WORKERS ?= 4
PYTEST := $(BIN)/python -m pytest -n $(WORKERS) --dist worksteal

unit: unit-local engines

unit-local: $(STAMP) servers
	$(PYTEST) tests
	@for p in $(filter-out $(ENGINES),$(DISTS)); do echo "== $$p"; $(PYTEST) $$p/tests || exit 1; done

engines: $(STAMP) servers
	@mkdir -p $(LOGS); pids=""; \
	for p in $(ENGINES); do name=$$(basename $$p); \
		workers=$$([ $$name = etcd ] && echo 2 || echo 1); \
		$(BIN)/python -m pytest -n $$workers --dist worksteal $$p/tests > $(LOGS)/$$name.log 2>&1 & \
		pids="$$pids $$!"; done; \
	status=0; for pid in $$pids; do wait $$pid || status=1; done; \
	for p in $(ENGINES); do echo "== $$p"; cat $(LOGS)/$$(basename $$p).log; done; \
	exit $$status

# The other Python versions the distributions claim (3.10, 3.12, 3.13 beside the default
# 3.11), each in a venv of its own (.venv-3.X): the core, tcp and file conformance suites,
# the CLI's error paths and most of rdzv-core's tests (tools/matrix.py says which). A claimed
# version with no interpreter here fails.
matrix: $(STAMP) servers
	$(BIN)/python tools/matrix.py --workers $(WORKERS)

# Every wheel and sdist as a package index would get it; rdzv-plugin-tcp alone in a fresh venv.
dist-check: $(STAMP)
	$(BIN)/python tools/check_dist.py

# Two lanes share the cores: in the background the engines' suites, then the other Pythons
# (their output printed whole at the end); in the foreground this Python's other suites,
# one after another. A failing stage does not stop the others; any failure fails the target.
test: lint typecheck servers
	@mkdir -p $(LOGS); \
	( status=0; $(MAKE) --no-print-directory engines || status=1; \
	  $(MAKE) --no-print-directory matrix WORKERS=2 || status=1; exit $$status ) \
		> $(LOGS)/background.out 2>&1 & background=$$!; \
	status=0; $(MAKE) --no-print-directory unit-local WORKERS=3 || status=1; \
	wait $$background || status=1; cat $(LOGS)/background.out; \
	exit $$status
	$(MAKE) dist-check
	$(MAKE) demo

# bench/store_scale.py compiles a tiny getnameinfo shim for torch's clients: it needs cc.
bench: $(STAMP) servers
	@command -v cc >/dev/null || (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc libc6-dev >/dev/null)
	$(BIN)/python bench/run.py

# rdzv-torch's tests on another torch release, e.g. `make torch-version V=2.15.0`, in a venv
# of its own (.venv-torch-V). Not part of `make test`: each release is a CUDA build of about
# 5 GB (83-85 s to install here), which the CI's time budget cannot hold.
torch-version: $(STAMP) servers
	@test -n "$(V)" || (echo "usage: make torch-version V=2.15.0" >&2; exit 2)
	test -x $(VENV)-torch-$(V)/bin/python || $(PYTHON) -m venv $(VENV)-torch-$(V)
	PIP_CONFIG_FILE=/dev/null $(VENV)-torch-$(V)/bin/pip install --quiet torch==$(V) numpy \
		-r requirements-dev.txt -e '.[testing]' $(foreach p,$(DISTS),-e $(p))
	$(VENV)-torch-$(V)/bin/python -m pytest integrations/torch/tests

clean:
	rm -rf $(VENV) $(VENV)-3.* $(VENV)-torch-*
