"""One training step of a run alone and of its seeds as ensembles of E members, side by side in one
process: where an ensemble's speed comes from (`python -m benchmarks.ensemble_step`).

The steps are those `--ensemble auto` times (experiments.grouping.Timer: the runs' own models,
seeds 0..E-1 of one variant, built as the runner builds them), over longer windows, every size once
per round and the fastest round kept. The first ensemble shares one run's per-step overhead
(Python, op dispatch, the optimizer's launches) among its members; what each member still pays is
its own kernels, so the gain grows with E until those dominate. (torch.profiler is no help here: it
slows the small ops of a lone step several-fold, more than it slows their batched twins.)

    python -m benchmarks.ensemble_step                   # tutorial leave_one_out/full, E = 3, 9
    python -m benchmarks.ensemble_step --sizes 3 9 27 --threads 2
    python -m benchmarks.ensemble_step --preset modern --variant modern_leave_one_out/full --sizes 3
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence

import pandas as pd

from benchmarks.train_speed import machine, write_section
from experiments import exits
from experiments.config import RunConfig, parse_assignments, resolve
from experiments.grouping import Timer
from experiments.machine import prepare
from experiments.runner import USER_ERRORS
from experiments.settings import ConfigError


def step_times(timer: Timer, runs: Sequence[RunConfig], sizes: Sequence[int],
               rounds: int) -> pd.DataFrame:
    """Seconds per step of one run alone and of each ensemble size, the fastest of the rounds."""
    best = {size: float("inf") for size in (1, *sizes)}
    for _ in range(rounds):
        for size in best:
            best[size] = min(best[size], timer(runs[:size]))
    alone = best[1]
    return pd.DataFrame([{"members": size, "ms per step": 1e3 * s, "ms per member": 1e3 * s / size,
                          "vs alone": alone * size / s} for size, s in best.items()])


def build_parser() -> argparse.ArgumentParser:
    p = exits.ArgumentParser(prog="python -m benchmarks.ensemble_step",
                             description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="tutorial")
    p.add_argument("--variant", default="leave_one_out/full",
                   help="EXPERIMENT/VARIANT of the preset (default leave_one_out/full)")
    p.add_argument("--sizes", type=int, nargs="+", default=[3, 9],
                   help="ensemble sizes to time against one run alone (default 3 9)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads, as an ablation worker gets them (default 1)")
    p.add_argument("--seconds", type=float, default=1.0,
                   help="length of each timing window (default 1)")
    p.add_argument("--rounds", type=int, default=3, help="rounds over every size (default 3)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="change a setting of the runs (e.g. device=cuda, data=my_corpus.txt)")
    p.add_argument("--no-write", action="store_true",
                   help="print only; do not update docs/benchmarks.md")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    given = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "-m", "benchmarks.ensemble_step", *given])
    return exits.run_command(lambda: _run(args, command), USER_ERRORS, "nothing was written")


def _run(args: argparse.Namespace, command: str) -> int:
    if min(args.sizes) < 2 or args.threads < 1 or args.rounds < 1 or args.seconds <= 0:
        raise ConfigError("give --sizes of at least 2 members, and positive --threads, --rounds "
                          "and --seconds")
    overrides = parse_assignments(args.set)
    first = prepare(resolve(args.preset, args.variant, overrides=overrides))
    runs = [prepare(resolve(args.preset, args.variant, seed=s, overrides=overrides),
                    first.corpus).cfg for s in range(max(args.sizes))]
    timer = Timer(first.corpus, first.device, args.threads, args.seconds)
    steps = step_times(timer, runs, args.sizes, args.rounds)
    report = (f"`{command}` on {machine()}, {args.threads} thread(s); "
              f"{args.preset} {args.variant}:\n\n{steps.round(2).to_markdown(index=False)}\n")
    print(report)
    if not args.no_write:
        write_section("ensemble-step", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
