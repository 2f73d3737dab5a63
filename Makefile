# nanoGPT ablation suite. `make ablate` is the main job; `make test` is what CI runs.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
# Tests and CI read Tiny Shakespeare from the shared copy; users download it once into ~/.cache.
SHARED_DATA := $(abspath ../shared/data/tinyshakespeare/input.txt)
export NANOGPT_TINYSHAKESPEARE ?= $(if $(wildcard $(SHARED_DATA)),$(SHARED_DATA))

# make ablate PRESET=cpu SEEDS=5 JOBS=2 WANDB=offline EXPERIMENTS="ladder" FORCE=1 DATA=my_corpus.txt
#             SET="lr=3e-4 n_layer=4" NAME=tutorial-lr3e-4 DRY_RUN=1 ENSEMBLE=off
# PRESET empty: the experiments' own (tutorial for the ladder and leave-one-out). NAME empty: the preset's name.
PRESET      ?=
WANDB       ?= auto
SEEDS       ?= 3
EXPERIMENTS ?= ladder leave_one_out
JOBS        ?=
FORCE       ?=
DRY_RUN     ?=
RESULTS     ?= $(or $(NANOGPT_RESULTS),results)
NAME        ?=
ABLATE_ARGS = $(if $(PRESET),--preset $(PRESET)) --experiments $(EXPERIMENTS) --results $(RESULTS) \
	$(if $(NAME),--name $(NAME)) $(if $(DATA),--data $(DATA)) $(foreach setting,$(SET),--set $(setting))

.PHONY: setup test test-slow lint reliability run ablate help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

# requirements.lock pins every dependency (dev tools too) to one version and its hashes; the project itself is
# installed on top without resolving anything again.
$(PY): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --require-hashes -r requirements.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(PY)

setup: $(PY)  ## make .venv and install the locked dependencies (requirements.lock)

# After changing pyproject.toml's dependencies: re-resolve them (pip-tools) into requirements.lock; `make setup`
# then installs it. The torch pinned is the one this machine's pip finds (a CPU build here).
.PHONY: lock
lock: setup  ## refresh requirements.lock from pyproject.toml (exact versions with hashes)
	$(PY) -m piptools compile -q --generate-hashes --allow-unsafe --extra dev --strip-extras --no-emit-find-links \
		--no-emit-index-url --output-file requirements.lock pyproject.toml

# Tests run on one xdist worker per core (-n auto): most wait on subprocesses or run one torch thread.
# `make test` leaves out the `slow` ones (whole processes killed or signalled mid-run, many seconds each);
# `make test-slow` runs just those. CI (.ci/run) runs both: every test, every commit (docs/development.md).
test: setup  ## the test suite without the slow fault-injection tests (CI runs it, then test-slow)
	$(PY) -m ruff check .
	$(PY) -m pytest -q -n auto --dist loadgroup -m "not slow" --durations=15

test-slow: setup  ## the slow fault-injection tests: processes killed, signalled, disks filled mid-run
	$(PY) -m pytest -q -n auto --dist loadgroup -m slow --durations=10

lint: setup  ## ruff
	$(PY) -m ruff check .

reliability: setup  ## the fault-injection, bad-input and security tests; writes docs/reliability.md from their results
	$(PY) -m pytest -q -n auto --dist loadgroup -m reliability --reliability-report docs/reliability.md tests

ablate: setup  ## the ladder + leave-one-out over seeds, in parallel, resumable; then the tables and the report (DRY_RUN=1: the plan only)
ifdef DRY_RUN
	$(PY) -m experiments.ablate $(ABLATE_ARGS) --seeds $(SEEDS) --dry-run
else
	@# Failed runs (exit 1) still get their table rows; bad input (2) or Ctrl-C/SIGTERM (130) stops here.
	@# A SIGTERM to make reaches this shell only: it passes it on (Ctrl-C too, as SIGTERM, since a job in the
	@# background ignores SIGINT) and waits for the ablation to stop its runs; a bare `sh -c` would die, orphaning it.
	trap 'kill -TERM $$pid 2>/dev/null' INT TERM; \
	$(PY) -m experiments.ablate $(ABLATE_ARGS) --seeds $(SEEDS) --wandb $(WANDB) $(if $(JOBS),--jobs $(JOBS)) \
		$(if $(FORCE),--force) & pid=$$!; \
	while :; do wait $$pid; status=$$?; kill -0 $$pid 2>/dev/null || break; done; \
	[ $$status -gt 1 ] && exit $$status; \
	folder=$$($(PY) -m experiments.ablate $(ABLATE_ARGS) --print-folder) || exit $$?; \
	$(PY) -m analysis.report $$folder || exit $$?; exit $$status
endif

run: setup  ## one tutorial-preset run of the full model: make run VARIANT=bigram SEED=1
	$(PY) -m experiments.run --preset tutorial $(if $(VARIANT),--variant $(VARIANT)) --seed $(or $(SEED),0)

# ---- analysis (issue 5): tables, notebooks, report ----------------------------------------------------------
# make report [NAME=tutorial] [RESULTS=results] [STUDY=name [STORAGE=sqlite:///sweep.db]]
# STUDY alone finds the study's default storage (<results>/<study>/optuna.db), as `make dashboard` does.
# The folder: a study's (STUDY= without NAME=), else the one `make ablate` writes with the same variables (NAME=,
# else the preset of PRESET= or of its EXPERIMENTS), so a plain `make tables` reads what a plain `make ablate` wrote.
FOLDER = $(if $(NAME)$(if $(STUDY),,all),$(PY) -m experiments.ablate $(ABLATE_ARGS) --print-folder,echo $(RESULTS)/$(STUDY))
REPORT_ARGS = $(if $(STORAGE),--storage $(STORAGE)) $(if $(STUDY),--study $(STUDY))
.PHONY: tables plots report

tables: setup  ## print and write the tables of results/NAME (tables.md, <definition>.csv): what `make ablate` prints
	folder=$$($(FOLDER)) || exit $$?; $(PY) -m analysis.report $$folder --tables-only

plots: setup  ## run the notebooks headless: figures (PNG + SVG) in results/NAME/report/figures
	folder=$$($(FOLDER)) || exit $$?; $(PY) -m analysis.report $$folder $(REPORT_ARGS) --no-markdown

report: setup  ## plots + the Markdown report results/NAME/report/progression.md (and sweep.md with STORAGE=...)
	folder=$$($(FOLDER)) || exit $$?; $(PY) -m analysis.report $$folder $(REPORT_ARGS)
# ---- end analysis -------------------------------------------------------------------------------------------

# >>> sweeps: Optuna studies over the runner (sweeps/), dashboard, throughput benchmark >>>
# STUDY and STORAGE mean what they mean to `make report`; STUDY's default is picked per target here.
SPACE   ?= sweeps/search_space.yaml
PORT    ?= 8080
SWEEP_STUDY = $(or $(STUDY),$(if $(GRID),$(firstword $(GRID))-grid,search))
# The storage URL travels in the environment, never on a command line make would echo.
SWEEP_ENV = $(if $(STORAGE),NANOGPT_SWEEP_STORAGE='$(STORAGE)')
.PHONY: sweep sweep-worker dashboard bench-sweep

sweep: setup  ## Optuna study on a local SQLite file: make sweep [SPACE=file | GRID=ladder SEEDS=3 [LRS="1e-3 5e-3"] [DEPTHS=...]] [STUDY=name WORKERS=2]
	@$(SWEEP_ENV) $(PY) -m sweeps.optuna run --study $(SWEEP_STUDY) \
		$(if $(GRID),--grid $(GRID) --seeds $(SEEDS) $(AXIS_ARGS),--space $(SPACE)) \
		$(if $(WORKERS),--workers $(WORKERS)) \
		--results $(RESULTS) --wandb $(WANDB)

sweep-worker: setup  ## one more worker, any machine: make sweep-worker STORAGE=postgresql://USER@HOST/DB STUDY=name
	@$(SWEEP_ENV) $(PY) -m sweeps.optuna worker --study $(SWEEP_STUDY) --results $(RESULTS) --wandb $(WANDB)

dashboard: setup  ## optuna-dashboard on 127.0.0.1 for a study: make dashboard STUDY=name [STORAGE=... PORT=8080]
	@$(SWEEP_ENV) $(PY) -m sweeps.dashboard --study $(SWEEP_STUDY) --port $(PORT) --results $(RESULTS)

bench-sweep: setup  ## sweep throughput, trials/min with 1 and 2 workers (docs/benchmarks.md; ~5 min)
	$(PY) -m benchmarks.sweep_throughput --trials 4 --max-iters 500 --repeats 2
# <<< sweeps <<<

# >>> speed: training-speed benchmark (benchmarks/train_speed.py) >>>
.PHONY: bench
bench: setup  ## training speed (ms/iter, tokens/s, MFU, time to target) -> docs/benchmarks.md; A/B: make bench ARGS="--compare cpu/full dtype=float32 dtype=bfloat16"
	$(PY) -m benchmarks.train_speed $(ARGS)
# <<< speed <<<

# >>> axes: learning-rate, width and depth axes for `make ablate` and `make sweep GRID=` (experiments/axes.py) >>>
# make ablate EXPERIMENTS=norms LRS="1e-3 2e-3 5e-3 1e-2": every variant x seed at each lr; the tables then compare
# each variant at its own best lr (docs/lr-fair.md). make ablate EXPERIMENTS=leave_one_out DEPTHS="1 2 4 8"
# WIDTHS="32 64 128": every variant at every size; Δ vs the baseline at each size and its trend (docs/scale.md).
# Empty: a definition's own `lrs:`, `widths:`, `depths:` if it has one, else no axis (today's runs).
LRS    ?=
WIDTHS ?=
DEPTHS ?=
AXIS_ARGS = $(if $(LRS),--lrs $(LRS)) $(if $(WIDTHS),--widths $(WIDTHS)) $(if $(DEPTHS),--depths $(DEPTHS))
ABLATE_ARGS += $(AXIS_ARGS)
# <<< axes <<<

# >>> ensembles: the runs of one architecture (seeds, lrs) trained as one batched model (experiments.grouping) >>>
# make ablate ENSEMBLE=off: every run alone; ENSEMBLE=4: groups of at most 4; empty: auto (where it pays here).
ENSEMBLE ?=
ABLATE_ARGS += $(if $(ENSEMBLE),--ensemble $(ENSEMBLE))
# <<< ensembles <<<

# >>> dashboard: W&B workspace and report built by code (analysis/wandb_dashboard.py, docs/wandb-dashboards.md) >>>
# make wandb-dashboard NAME=tutorial [JSON=DIR] [WANDB_ENTITY=me WANDB_PROJECT=nanogpt-ablations]
#                      [STUDY=name [STORAGE=...]]   (an Optuna search: its section, as `make report` finds it)
# Without WANDB_PROJECT, the project the runs were mirrored to (each run's wandb/mirror.json).
.PHONY: wandb-dashboard
wandb-dashboard: setup  ## W&B workspace + report of results/NAME, saved (needs `wandb login`) or written as JSON=DIR
	folder=$$($(FOLDER)) || exit $$?; $(PY) -m analysis.wandb_dashboard $$folder $(if $(JSON),--json $(JSON)) \
		$(if $(WANDB_ENTITY),--entity $(WANDB_ENTITY)) $(if $(WANDB_PROJECT),--project $(WANDB_PROJECT)) \
		$(if $(STUDY),--study $(STUDY)) $(if $(STORAGE),--storage $(STORAGE))
# <<< dashboard <<<

# >>> gpu: the GPU check (benchmarks/gpu_check.py; docs/gpu.md) >>>
# Runs with the machine's own python3 where there is no .venv (the GPU check machine has none, and no network).
GPU_PY = $(if $(wildcard $(PY)),$(PY),python3)
.PHONY: gpu-check
gpu-check:  ## one CUDA GPU, <= 8 min: seed speed+MFU, fp16 vs fp32, fp16 kill+resume, make ablate wall, CUDA tests -> REPORT (DRY_RUN=1: the plan)
	$(GPU_PY) -m benchmarks.gpu_check $(if $(DRY_RUN),--dry-run) $(if $(REPORT),--report $(REPORT)) \
		$(if $(PARTS),--parts $(PARTS)) $(if $(JOBS),--jobs $(JOBS))
# <<< gpu <<<

# >>> mup: the coordinate check of muP against SP (benchmarks/coord_check.py, docs/mup.md) >>>
.PHONY: coord-check
coord-check: setup  ## muP's coordinate check, a few minutes -> docs/figures/coord_check.png, docs/mup.md
	$(PY) -m benchmarks.coord_check $(ARGS)
# <<< mup <<<
