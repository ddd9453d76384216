# The whole set-up on a fresh machine is two commands:
#   make demo   (virtual environment, install, run the main job on the embedded synthetic data)
#   make test   (virtual environment, install, run the test suite)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEB_PACKAGES := libusb-1.0-0 libvulkan1 mesa-vulkan-drivers xvfb
PYTEST_ARGS ?=

.PHONY: demo test test-all lint gpu-check system-deps install clean

system-deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian packages:$$missing"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else \
	  echo "avfusion needs these Debian packages, not installed and not root to install them:$$missing"; \
	  echo "  run: sudo apt-get install$$missing"; exit 2; \
	fi

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/activate pyproject.toml
	$(BIN)/pip install -q -e ".[all]"
	touch $@

install: system-deps $(VENV)/.installed

demo: install
	$(BIN)/avfusion demo

test: install
	$(BIN)/python -m pytest -m "not heavy" $(PYTEST_ARGS)

test-all: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Lint, format check and type check. mypy sees the package through a link named avfusion (the
# repository root is the package; see pyproject.toml's [tool.mypy]).
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@mkdir -p build/typecheck && ln -sfn "$(CURDIR)" build/typecheck/avfusion
	$(BIN)/mypy -p avfusion

# On a machine with one CUDA GPU: the GPU tests, bench voxelize / infer on CUDA against spconv's
# CUDA voxelizer, and 100 AMP training steps, in under 8 minutes, written to gpu-check.json.
gpu-check: install
	$(BIN)/avfusion bench gpu --json gpu-check.json

clean:
	rm -rf $(VENV) build *.egg-info
