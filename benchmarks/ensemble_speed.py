"""Wall time of whole ablations trained run by run (`--ensemble off`) and as ensembles (`auto`),
side by side.

    python -m benchmarks.ensemble_speed --cases default norms_lr_grid --rounds 1

Each round trains every case once per mode, in alternating order (off first in even rounds, auto
first in odd ones), each into a fresh results folder, with the real CLI (`python -m
experiments.ablate`, W&B off): what `make ablate` costs, start-up, the `auto` measurements and
evaluations included. It prints one Markdown row per case: the machine, both wall times (median over
rounds) and their ratio. The numbers of both are the same runs; the benchmark checks that every run
of one mode has the final val loss of the other, to the bit.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.train_speed import machine, write_section
from experiments import exits
from experiments.store import METRICS, read_jsonl

# The ablations the ensemble issue asks about: (what it is, the arguments of `python -m
# experiments.ablate`).
CASES = {
    "default": ("make ablate (ladder + leave-one-out, tutorial, 3 seeds: 45 runs)", []),
    "tutorial_lr_grid": ("the tutorial ladder + leave-one-out over LRS=\"3e-4 1e-3 3e-3\" (135 "
                         "runs)",
                         ["--lrs", "3e-4", "1e-3", "3e-3"]),
    "ladder_lr_grid": ("the tutorial ladder over LRS=\"3e-4 1e-3 3e-3\" (81 runs)",
                       ["--experiments", "ladder", "--lrs", "3e-4", "1e-3", "3e-3"]),
    "norms_lr_grid": ("EXPERIMENTS=norms LRS=\"1e-3 2e-3 5e-3 1e-2\" (60 runs)",
                      ["--experiments", "norms", "--lrs", "1e-3", "2e-3", "5e-3", "1e-2"]),
    "lr_sensitivity": ("EXPERIMENTS=lr_sensitivity (72 runs)", ["--experiments", "lr_sensitivity"]),
}
MODES = ("off", "auto")


def ablate(args: Sequence[str], mode: str, results: Path) -> tuple[float, dict[str, float]]:
    """Wall seconds of one ablation, and every run's final val loss."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "experiments.ablate", *args, "--ensemble", mode,
                          "--wandb", "off", "--results", str(results)], capture_output=True,
                         text=True)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise exits.CommandFailed(f"the ablation ({mode}) failed: "
                                  f"{out.stderr.strip().splitlines()[-1]}")
    finals = {}
    for path in results.glob(f"*/*/{METRICS}"):
        metrics, _ = read_jsonl(path)
        finals[path.parent.name] = metrics[-1]["val_loss"]
    return seconds, finals


def measure(case: str, extra: Sequence[str], rounds: int, scratch: Path) -> dict[str, object]:
    seconds: dict[str, list[float]] = {mode: [] for mode in MODES}
    for r in range(rounds):
        finals = {}
        for mode in MODES if r % 2 == 0 else MODES[::-1]:
            wall, finals[mode] = ablate([*CASES[case][1], *extra], mode,
                                        scratch / f"{case}-{mode}-{r}")
            seconds[mode].append(wall)
            print(f"{case} round {r} {mode}: {wall:.0f} s", file=sys.stderr, flush=True)
        if finals["off"] != finals["auto"]:
            raise exits.CommandFailed(f"{case}: the runs trained as ensembles do not end on the "
                                      "numbers they have alone; this is a bug, please report it")
    off, auto = (statistics.median(seconds[m]) for m in MODES)
    return {"case": case, "runs": len(finals["off"]), "off_s": off, "auto_s": auto,
            "speedup": off / auto}


def build_parser() -> argparse.ArgumentParser:
    p = exits.ArgumentParser(prog="python -m benchmarks.ensemble_speed",
                             description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="+", choices=CASES, default=["default"])
    p.add_argument("--rounds", type=int, default=1, help="alternating rounds per case (default 1)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="passed on to every ablation (e.g. max_iters=500 for a quick look)")
    p.add_argument("--no-write", action="store_true",
                   help="print only; do not update docs/benchmarks.md")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return exits.run_command(lambda: _run(args, argv), (),
                             "nothing to keep: the ablations train in a scratch folder")


def _run(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    extra = [a for setting in args.set for a in ("--set", setting)]
    with tempfile.TemporaryDirectory(prefix="ensemble-speed-") as scratch:
        rows = [measure(case, extra, args.rounds, Path(scratch)) for case in args.cases]
    lines = ["| ablation | runs | `--ensemble off` | `--ensemble auto` | auto vs off |",
             "|:--|--:|--:|--:|--:|"]
    lines += [f"| {CASES[r['case']][0]} | {r['runs']} | {r['off_s']:.0f} s | {r['auto_s']:.0f} s | "
              f"{r['speedup']:.2f}x |" for r in rows]
    command = ("python -m "
               "benchmarks.ensemble_speed " + " ".join(argv if argv is not None else sys.argv[1:]))
    text = f"Measured on {machine()}.\n\n`{command.strip()}`\n\n" + "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        write_section("ensembles-" + "-".join(args.cases), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
