"""The coordinate check of the muP papers: `python -m benchmarks.coord_check` (`make coord-check`).

For each width (32 to 512 by default; the head size stays the preset's, the heads grow in number),
a few Adam steps of the preset's model under SP and under muP from the preset's width, seeded as
every run is seeded and trained by the one Trainer. At every training step it records the RMS of
each layer type's output: the embedding (tokens plus positions), attention and the MLP (over every
block) and the logits. Under muP a curve is flat in width; under SP it grows (Yang et al. 2022,
Tensor Programs V; microsoft/mup's README, "Coord Check").

The learning rate stays constant (the preset's lr, no warmup): the check is of the first few
updates, which a warmup would shrink to nothing. The summary is the slope of log2 RMS against
log2 width at the last step, per layer type: the RMS grows by 2**slope per doubling of width (0
under muP). The figure goes to docs/figures/coord_check.png, the command, its wall time and the
slopes to the `coord-check` section of docs/mup.md.

    python -m benchmarks.coord_check                        # modern preset, widths 32..512, 6 steps
    python -m benchmarks.coord_check --widths 32 64 128 --steps 5 --seeds 1 --out /tmp/check.png
"""

from __future__ import annotations

import argparse
import itertools
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
import torch.nn as nn
from matplotlib import ticker

from analysis.figures import setup as figure_theme
from benchmarks.train_speed import machine, write_section
from experiments import PROJECT_ROOT, exits
from experiments.config import parse_assignments, resolve
from experiments.machine import prepare
from experiments.runner import USER_ERRORS, make_trainer
from experiments.settings import ConfigError
from nanogpt.model import GPT

LAYERS = ("embedding", "attention out", "MLP out", "logits")
PARAMETRIZATIONS = ("sp", "mup")
FIGURE = PROJECT_ROOT / "docs" / "figures" / "coord_check.png"
DOC = PROJECT_ROOT / "docs" / "mup.md"


def watched(model: GPT) -> dict[str, list[nn.Module]]:
    """The modules whose outputs are each layer type's coordinates (attention, MLP: all blocks')."""
    blocks = list(model.blocks)
    return {"embedding": [model.add_positions], "attention out": [b.attn for b in blocks],
            "MLP out": [b.mlp for b in blocks], "logits": [model.lm_head]}


class Recorder:
    """The RMS of each layer type's output at every training forward (one per step), by hooks."""

    def __init__(self, model: GPT):
        self.sums: dict[str, list[float]] = {}  # this forward's: layer -> [sum of squares, count]
        self.rms: list[dict[str, float]] = []  # per training step: layer type -> RMS
        self.hooks = [module.register_forward_hook(self._add(layer))
                      for layer, modules in watched(model).items() for module in modules]
        self.hooks.append(model.register_forward_hook(self._end_step))  # after its modules' hooks

    def _add(self, layer: str) -> Callable[[nn.Module, Any, torch.Tensor], None]:
        def add(module: nn.Module, args: Any, out: torch.Tensor) -> None:
            if module.training:  # a training step's forward, not an evaluation's
                sums = self.sums.setdefault(layer, [0.0, 0])
                sums[0] += out.detach().float().pow(2).sum().item()
                sums[1] += out.numel()
        return add

    def _end_step(self, model: nn.Module, args: Any, out: Any) -> None:
        if model.training:
            self.rms.append({layer: (total / count) ** 0.5
                             for layer, (total, count) in self.sums.items()})
            self.sums = {}

    def close(self) -> None:
        for hook in self.hooks:
            hook.remove()


def measure(preset: str, widths: Sequence[int], steps: int, seeds: Sequence[int],
            overrides: dict[str, Any] | None = None) -> pd.DataFrame:
    """One row per (parametrization, width, seed, step, layer type): the RMS of that output in the
    step's forward (step 0: at init). Each width keeps the preset's head size."""
    head_size = resolve(preset, overrides=overrides).model.head_size
    odd = [w for w in widths if w % head_size]
    if odd:
        raise ConfigError(f"width {odd[0]} is not a multiple of the preset's head size "
                          f"{head_size}: a width here adds heads of that size")
    corpus = None  # loaded by the first run, shared by every other
    rows = []
    for parametrization, width, seed in itertools.product(PARAMETRIZATIONS, widths, seeds):
        settings = (overrides or {}) | {
            "n_embd": width, "n_head": width // head_size, "parametrization": parametrization,
            "lr_schedule": "constant", "max_iters": steps, "eval_interval": steps, "eval_iters": 1}
        ready = prepare(resolve(preset, seed=seed, overrides=settings), corpus)
        corpus, trainer = ready.corpus, make_trainer(ready)
        recorder = Recorder(trainer.model)
        trainer.run()
        recorder.close()
        rows += [{"parametrization": parametrization, "width": width, "seed": seed, "step": step,
                  "layer": layer, "rms": rms}
                 for step, by_layer in enumerate(recorder.rms) for layer, rms in by_layer.items()]
    return pd.DataFrame(rows)


def slopes(frame: pd.DataFrame) -> pd.DataFrame:
    """Per parametrization and layer type: the slope of log2 RMS (mean over seeds) against log2
    width at the last step. The RMS grows by 2**slope per doubling of width."""
    last = frame[frame["step"] == frame["step"].max()]
    mean = last.groupby(["parametrization", "layer", "width"], as_index=False)["rms"].mean()
    fitted = mean.groupby(["parametrization", "layer"]).apply(
        lambda g: np.polyfit(np.log2(g["width"]), np.log2(g["rms"]), 1)[0], include_groups=False)
    table = fitted.unstack("layer")
    return table[[layer for layer in LAYERS if layer in table]].loc[list(PARAMETRIZATIONS)]


def spread_ratio(table: pd.DataFrame) -> float:
    """How much more SP's curves move with width than muP's: their mean |slope|, SP over muP."""
    magnitude = table.abs().mean(axis=1)
    return float(magnitude["sp"] / magnitude["mup"])


def plot(frame: pd.DataFrame, path: Path, title: str) -> None:
    """One panel per parametrization x layer type: RMS against width, one line per step."""
    figure_theme()
    named = frame.assign(parametrization=frame["parametrization"].map({"sp": "SP", "mup": "muP"}))
    grid = sns.relplot(named, x="width", y="rms", hue="step", col="layer", row="parametrization",
                       col_order=[layer for layer in LAYERS if layer in set(frame["layer"])],
                       row_order=["SP", "muP"], kind="line", marker="o", errorbar=None,
                       palette="viridis", legend="full", height=2.6, aspect=1.1,
                       facet_kws={"sharey": "col", "margin_titles": True})
    grid.set(xscale="log", yscale="log")
    widths = sorted(frame["width"].unique())
    for ax in grid.axes.flat:
        ax.set_xticks(widths, [str(w) for w in widths])
        ax.xaxis.set_minor_locator(ticker.NullLocator())
    grid.set_axis_labels("width (n_embd)", "RMS of the output")
    grid.set_titles(row_template="{row_name}", col_template="{col_name}")
    grid.figure.suptitle(title, y=1.02)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.savefig(path)
    plt.close(grid.figure)


def build_parser() -> argparse.ArgumentParser:
    p = exits.ArgumentParser(prog="python -m benchmarks.coord_check",
                                description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="modern", help="the model and its training (default "
                   "modern); its width is muP's base width, and every width keeps its head size")
    p.add_argument("--widths", type=int, nargs="+", default=[32, 64, 128, 256, 512])
    p.add_argument("--steps", type=int, default=6, help="training steps per run (default 6)")
    p.add_argument("--seeds", type=int, default=2, help="seeds per width, averaged (default 2)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="change a setting of the preset (e.g. lr=1e-2, data=my_corpus.txt)")
    p.add_argument("--out", type=Path, default=FIGURE, help=f"the figure (default {FIGURE})")
    p.add_argument("--doc", type=Path, default=DOC, help="the doc whose coord-check section gets "
                   f"the command, its wall time and the slopes (default {DOC})")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    given = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "-m", "benchmarks.coord_check", *given])
    return exits.run_command(lambda: _run(args, command), USER_ERRORS, "nothing was written")


def _run(args: argparse.Namespace, command: str) -> int:
    if args.steps < 1 or args.seeds < 1 or len(set(args.widths)) < 2 or min(args.widths) < 1:
        raise ConfigError("give --steps and --seeds of at least 1, and two or more positive "
                          "--widths")
    overrides = parse_assignments(args.set)
    base = resolve(args.preset, overrides=overrides).model
    start = time.perf_counter()
    frame = measure(args.preset, sorted(set(args.widths)), args.steps, range(args.seeds), overrides)
    table = slopes(frame)
    plot(frame, args.out, f"{args.preset} preset, head size {base.head_size}, {args.steps} Adam "
         f"steps x {args.seeds} seeds; muP from width {base.n_embd}")
    wall = time.perf_counter() - start
    report = (f"`{command}`: {wall:.0f} s (the runs and the figure) on {machine()}, "
              f"{torch.get_num_threads()} threads.\n\n"
              f"Slope of log2 RMS against log2 width at step {args.steps - 1} (0: flat in width):"
              f"\n\n{table.round(2).to_markdown()}\n\n"
              f"SP's curves move {spread_ratio(table):.1f}x as much with width as muP's "
              "(mean |slope|).\n")
    write_section("coord-check", report, args.doc)
    print(report + f"\nfigure: {args.out}; doc: {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
