# `make demo` and `make test` bootstrap everything themselves: a virtual environment,
# pinned torch (the CPU build where there is no GPU), and this package.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION := 2.13.0
# Where the CPU-only build of torch comes from when no local wheel provides it.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
PYTEST_ARGS ?=
READY := $(VENV)/.memento-ready

export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export ANONYMIZED_TELEMETRY ?= False
export LANGGRAPH_CLI_NO_ANALYTICS ?= 1
export LANGGRAPH_NO_VERSION_CHECK ?= true

.PHONY: all setup demo test sandbox-tool install-bwrap postgres-server install-postgres studio clean

all: test

setup: $(READY)

$(READY): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@# torch first and pinned: an unpinned or later resolve would pull several GB of CUDA packages.
	@if $(BIN)/python -c "import torch" 2>/dev/null; then \
	  echo "torch already installed: $$($(BIN)/python -c 'import torch; print(torch.__version__)')"; \
	elif command -v nvidia-smi >/dev/null 2>&1; then \
	  $(BIN)/python -m pip install "torch==$(TORCH_VERSION)"; \
	elif $(BIN)/python -m pip install "torch==$(TORCH_VERSION)+cpu" 2>/dev/null; then \
	  echo "installed the CPU build of torch $(TORCH_VERSION)"; \
	else \
	  $(BIN)/python -m pip install "torch==$(TORCH_VERSION)" --index-url "$(TORCH_CPU_INDEX)" \
	    --extra-index-url https://pypi.org/simple; \
	fi
	$(BIN)/python -m pip install -e ".[test]"
	@touch $@

demo: $(READY)
	$(BIN)/memento demo

test: $(READY) sandbox-tool postgres-server
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# System packages some tests need, installed where this machine lets us (root or passwordless sudo,
# with apt); elsewhere those tests are skipped, saying why: bubblewrap for the code sandbox's bwrap
# backend, PostgreSQL for the Postgres checkpointer and the shared learner (the tests start their
# own server on a free port in a temporary folder, and stop it).
define apt_install
	@if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=none; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
	  echo "$(1) not installed and no apt-get here: $(2) will be skipped"; \
	elif [ "$$SUDO" = none ]; then \
	  echo "$(1) not installed and no root to install it: $(2) will be skipped"; \
	else \
	  echo "installing $(1) (apt) for $(2)"; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(1) >/dev/null 2>&1 || \
	  { $$SUDO apt-get update -q >/dev/null 2>&1 && \
	    $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(1) >/dev/null 2>&1; } || \
	  echo "could not install $(1): $(2) will be skipped"; \
	fi
endef

sandbox-tool:
	@command -v bwrap >/dev/null 2>&1 || $(MAKE) --no-print-directory install-bwrap

install-bwrap:
	$(call apt_install,bubblewrap,the bwrap sandbox tests)

postgres-server:
	@command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  $(MAKE) --no-print-directory install-postgres

install-postgres:
	$(call apt_install,postgresql,the PostgreSQL tests)

studio: $(READY)
	@# MEMENTO_ALLOW_STUDIO=1: LangGraph Studio in this machine's browser may use this loopback server without a token.
	MEMENTO_ALLOW_STUDIO=1 LANGGRAPH_CLI_NO_ANALYTICS=1 LANGGRAPH_NO_VERSION_CHECK=true $(BIN)/langgraph dev --port 2025 --no-browser

clean:
	rm -rf $(VENV) build *.egg-info
