# nanoGPT ablation suite. `make ablate` is the main job; `make test` is what CI runs.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
# Tests and CI read Tiny Shakespeare from the shared copy; users download it once into ~/.cache.
SHARED_DATA := $(abspath ../shared/data/tinyshakespeare/input.txt)
export NANOGPT_TINYSHAKESPEARE ?= $(if $(wildcard $(SHARED_DATA)),$(SHARED_DATA))

.PHONY: setup test lint run help bench

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(PY): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(PY)

setup: $(PY)  ## make .venv and install the pinned dependencies

test: setup  ## the test suite (what CI runs)
	$(PY) -m ruff check .
	$(PY) -m pytest -q

lint: setup  ## ruff
	$(PY) -m ruff check .

run: setup  ## one tutorial-preset run of the full model: make run VARIANT=bigram SEED=1
	$(PY) -m experiments.run --preset tutorial --variant $(or $(VARIANT),full) --seed $(or $(SEED),0)

bench: setup  ## training speed (ms/iter, tokens/s, MFU, time to target) -> docs/benchmarks.md: make bench ARGS="--compare cpu/full dtype=float32 dtype=bfloat16"
	$(PY) -m experiments.bench $(ARGS)
