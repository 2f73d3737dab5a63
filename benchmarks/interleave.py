"""A/B speed inside one process: two `Trainer`s take turns, `chunk` training steps each.

Process-level alternation (`benchmarks.train_speed --compare`) sees a machine whose load changes
over minutes; on a shared machine load changes by the second, and two configurations trained
in turns of a few hundred milliseconds see the same load. Each turn is timed by the loop
itself (the `tokens_per_sec` of its evaluation window, which excludes evaluation time).
Thread count is per turn (torch.set_num_threads); code versions cannot be mixed here.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
from typing import Any

import torch

from experiments.config import ConfigError, parse_settings, resolve
from experiments.machine import prepare
from experiments.runner import make_trainer
from nanogpt.train import Callback, Trainer


class _Rates(Callback):
    def __init__(self) -> None:
        self.rates: list[float] = []

    def on_eval(self, metrics: dict[str, Any], checkpoint_state) -> None:
        if metrics["tokens_per_sec"]:
            self.rates.append(metrics["tokens_per_sec"])


RUN_KEYS = ("threads", "code", "target")  # spec keys that are not run settings


def spec_settings(spec: dict[str, str]) -> dict[str, Any]:
    """The run settings in a spec (dtype=bfloat16, compile=true, device=cuda, ...), parsed to their
    types."""
    return parse_settings({k: v for k, v in spec.items() if k not in RUN_KEYS})


def _trainer(case: str, spec: dict[str, str]) -> tuple[Trainer, int]:
    preset, variant = case.split("/", 1)
    ready = prepare(resolve(preset, variant, 0, spec_settings(spec) | {"eval_iters": 1}))
    threads = int(spec.get("threads", torch.get_num_threads()))
    return make_trainer(ready), threads


def interleave(case: str, spec_a: dict[str, str], spec_b: dict[str, str], turns: int,
               chunk: int) -> dict[str, Any]:
    """Median tokens/s of A and B over `turns` alternating turns, and the median of per-turn ratios
    B/A."""
    if "code" in spec_a or "code" in spec_b:
        raise ConfigError("code= needs separate processes; use --compare without --interleave")
    sides = {"A": _trainer(case, spec_a), "B": _trainer(case, spec_b)}
    rates = {label: _Rates() for label in sides}
    for turn in range(turns + 1):  # turn 0 warms both up and is not counted
        for label, (trainer, threads) in sides.items():
            torch.set_num_threads(threads)
            trainer.cfg = dataclasses.replace(trainer.cfg, max_iters=trainer.step + chunk,
                                              eval_interval=10**9)
            trainer.run([rates[label]] if turn else [])
        if turn:
            print(f"turn {turn}: A {rates['A'].rates[-1]:,.0f} B {rates['B'].rates[-1]:,.0f} "
                  "tokens/s",
                  file=sys.stderr, flush=True)
    ratios = [b / a for a, b in zip(rates["A"].rates, rates["B"].rates, strict=True)]
    tokens_per_iter = {
        label: t.cfg.batch_size * t.model.config.block_size for label, (t, _) in sides.items()}
    return {
        label: {"tokens_per_sec": statistics.median(r.rates),
                "ms_per_iter": 1000 * tokens_per_iter[label] / statistics.median(r.rates)}
        for label, r in rates.items()
    } | {"ratios": ratios, "speedup": statistics.median(ratios)}
