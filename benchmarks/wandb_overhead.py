"""What the W&B mirror costs per run, in offline mode, on smoke-preset runs (whose training is ~0.1
s).

    OMP_NUM_THREADS=1 python -m benchmarks.wandb_overhead [--runs 6]

- one process per run (the CLI): wall time of `python -m experiments.run` with --wandb offline vs
  off;
- many runs in one process (a worker calling train_run): the first offline run pays the import
  of wandb and the start of its wandb-core service, later ones only init/log/finish.
Off and offline runs alternate, so a busy machine slows both alike; compare the differences. CPU
seconds (user+sys, wandb-core included for the CLI) are steadier than wall seconds on a shared
machine.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from experiments import PROJECT_ROOT, exits
from experiments.config import ConfigError
from experiments.runner import USER_ERRORS


def cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cli_seconds(mode: str, seed: int, results: Path) -> tuple[float, float]:
    """Wall and CPU seconds of one `python -m experiments.run` process."""
    start, cpu = time.perf_counter(), cpu_of_children()
    subprocess.run([sys.executable, "-m", "experiments.run", "--preset", "smoke", "--seed",
                    str(seed), "--quiet", "--results", str(results), "--wandb", mode],
                   cwd=PROJECT_ROOT, check=True, capture_output=True)
    return time.perf_counter() - start, cpu_of_children() - cpu


def in_process_seconds(runs: int, results: Path) -> dict[str, list[float]]:
    from experiments.config import resolve
    from experiments.machine import prepare
    from experiments.runner import train_run
    from experiments.wandb_mirror import WandbSettings

    # torch's one-time costs stay out of both columns
    train_run(resolve("smoke"), results / "warmup", quiet=True)
    times: dict[str, list[float]] = {"off": [], "offline": []}
    for seed in range(1, runs + 1):
        for mode in times:
            ready = prepare(resolve("smoke", seed=seed))
            start = time.perf_counter()
            train_run(ready.cfg, results / mode, quiet=True, prepared=ready,
                      wandb=WandbSettings(mode))
            times[mode].append(time.perf_counter() - start)
    return times


def main(argv: Sequence[str] | None = None) -> int:
    parser = exits.ArgumentParser(prog="python -m benchmarks.wandb_overhead",
                                  description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=6, help="runs per mode and setting (default 6)")
    args = parser.parse_args(argv)
    return exits.run_command(lambda: _measure(args.runs), USER_ERRORS, "nothing was measured")


def _measure(runs: int) -> int:
    if runs < 2:
        raise ConfigError(f"--runs must be at least 2 (the first in-process run is timed apart), "
                          f"got {runs}")
    # each CLI run starts its own wandb-core, as under make ablate
    os.environ.pop("WANDB_SERVICE", None)
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp)
        cli: dict[str, list[tuple[float, float]]] = {"off": [], "offline": []}
        for seed in range(runs):
            for mode in cli:
                cli[mode].append(cli_seconds(mode, seed, results / "cli" / mode))
        warm = in_process_seconds(runs, results / "worker")
    median = statistics.median
    for i, what in enumerate(("wall", "CPU")):
        off, offline = (median(t[i] for t in cli[mode]) for mode in ("off", "offline"))
        print(f"one process per run ({runs} runs each), {what}: off {off:.2f} s, offline "
              f"{offline:.2f} s "
              f"-> W&B adds {offline - off:.2f} s")
    first = warm["offline"][0] - warm["off"][0]
    later = median(warm["offline"][1:]) - median(warm["off"][1:])
    print(f"one worker process, {runs} runs each: first offline run +{first:.2f} s (import "
          "wandb, start "
          f"wandb-core), later runs +{later:.3f} s each (off {median(warm['off'][1:]):.3f} s, "
          f"offline {median(warm['offline'][1:]):.3f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
