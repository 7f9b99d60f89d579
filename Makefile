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

.PHONY: all setup demo test studio clean

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

test: $(READY)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

studio: $(READY)
	LANGGRAPH_CLI_NO_ANALYTICS=1 LANGGRAPH_NO_VERSION_CHECK=true $(BIN)/langgraph dev --port 2025 --no-browser

clean:
	rm -rf $(VENV) build *.egg-info
