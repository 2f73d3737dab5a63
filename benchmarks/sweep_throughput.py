"""Sweep throughput: trials per minute with 1 and 2 workers: `python -m benchmarks.sweep_throughput`
(make bench-sweep).

Each measurement is a fresh `python -m sweeps.optuna run` (local SQLite, the `make sweep` path)
over a grid of equal trials: the tutorial model, --trials seeds of it, --max-iters steps each.
Throughput is counted over the study's own span (first trial start to last trial end, from
Optuna's timestamps), so process start-up is left out; total wall time is printed beside it.
Worker counts alternate (1, 2, 1, 2...) so a shared machine's drifting load hits both alike, and
each pair is preceded by a control: how much two plain CPU-bound processes gain over one, which
is the most the sweep can gain on the machine as loaded at that moment.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from experiments import PROJECT_ROOT, exits
from experiments.config import ConfigError
from experiments.presets import PRESETS
from experiments.runner import USER_ERRORS
from sweeps import storage

# One variant, so every trial costs the same and the seeds are the only axis.
DEFINITION = ("name: bench\ndescription: equal trials for the sweep benchmark\nvariants:\n  - "
              "{name: full, set: {}}\n")


def measure(workers: int, threads: int | None, trials: int, preset: str, max_iters: int,
            folder: Path) -> dict[str, float]:
    """One `run` of the bench grid in `folder` (which holds the bench definition)."""
    import optuna

    results, study = folder / f"results-{workers}", "bench"
    command = [sys.executable, "-m", "sweeps.optuna", "run", "--study", study, "--grid", "bench",
               "--seeds", str(trials), "--preset", preset, "--set", f"max_iters={max_iters}",
               "--workers", str(workers), "--results", str(results), "--quiet",
               *(["--threads", str(threads)] if threads else [])]
    started = time.perf_counter()
    out = subprocess.run(command, cwd=PROJECT_ROOT,
                         env=os.environ | {"NANOGPT_EXPERIMENTS": str(folder)}, capture_output=True,
                         text=True)
    wall = time.perf_counter() - started
    if out.returncode:
        raise RuntimeError(f"the sweep failed with {workers} workers:\n{out.stderr[-3000:]}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    done = optuna.load_study(study_name=study, storage=storage.open_storage(
        storage.default_storage(results / study))).get_trials(
            states=(optuna.trial.TrialState.COMPLETE,))
    if len(done) != trials:
        raise RuntimeError(f"{len(done)} of {trials} trials completed with {workers} workers; see "
                           f"{results}")
    span = (max(t.datetime_complete for t in done) - min(t.datetime_start
                                                         for t in done)).total_seconds()
    return {"workers": workers, "trials_per_min": 60 * trials / span, "span_sec": span,
            "wall_sec": wall}


def _spin(_: int) -> float:
    started, x = time.perf_counter(), 0
    for i in range(5_000_000):
        x += i
    return time.perf_counter() - started


def machine_parallelism() -> float:
    """How much faster two CPU-bound processes finish a fixed loop each than one: ~2 on an idle
    2-core machine, less when others share it. The ceiling for the sweep's speed-up right now."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(2) as pool:
        list(pool.map(_spin, [0, 0]))  # start both workers before timing
        one = _spin(0)
        started = time.perf_counter()
        list(pool.map(_spin, [0, 0]))
        two = time.perf_counter() - started
    return 2 * one / two


def main(argv: Sequence[str] | None = None) -> int:
    p = exits.ArgumentParser(prog="python -m benchmarks.sweep_throughput",
                             description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=6, help="trials per measurement (default 6)")
    p.add_argument("--preset", default="tutorial", choices=list(PRESETS),
                   help="trial model (default tutorial)")
    p.add_argument("--max-iters", type=int, default=1000,
                   help="training steps per trial (default 1000)")
    p.add_argument("--repeats", type=int, default=1,
                   help="measurements per worker count (default 1)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per worker (default 1, so both counts use the same "
                        "per-worker speed; "
                   "0 = run's own policy: the cores shared among the workers)")
    args = p.parse_args(argv)
    return exits.run_command(lambda: _measure(args), USER_ERRORS, "nothing was measured")


def _measure(args: argparse.Namespace) -> int:
    if min(args.trials, args.max_iters, args.repeats) < 1 or args.threads < 0:
        raise ConfigError("--trials, --max-iters and --repeats must be at least 1, --threads at "
                          "least 0")
    rows, capacity = [], []
    for _ in range(args.repeats):
        capacity.append(machine_parallelism())
        for workers in (1, 2):
            with tempfile.TemporaryDirectory(prefix="sweep-bench-") as tmp:
                (Path(tmp) / "bench.yaml").write_text(DEFINITION)
                row = measure(workers, args.threads or None, args.trials, args.preset,
                              args.max_iters, Path(tmp))
            rows.append(row)
            print(f"{workers} worker(s): {row['trials_per_min']:.2f} trials/min "
                  f"({args.trials} trials in {row['span_sec']:.1f} s; {row['wall_sec']:.1f} s with "
                  "start-up)",
                  flush=True)
    by_workers = {w: [r["trials_per_min"] for r in rows if r["workers"] == w] for w in (1, 2)}
    one, two = (sum(v) / len(v) for v in by_workers.values())
    print(f"machine meanwhile: 2 busy processes got {sum(capacity) / len(capacity):.2f}x the work "
          f"of one done ({', '.join(f'{c:.2f}' for c in capacity)}; 2.0 on an idle 2-core machine)")
    print(f"speed-up with 2 workers: {two / one:.2f}x ({one:.2f} -> {two:.2f} trials/min; "
          f"{args.preset} preset, {args.max_iters} steps per trial, {args.threads or 'shared'} "
          f"torch threads per worker, {os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
