"""Which planned runs train together as one ensemble (`--ensemble auto|off|N`, ENSEMBLE=), and why.

Runs may share an ensemble when they differ only in their seed and in what each member keeps for
itself (`nanogpt.ensemble.PER_MEMBER`: the lr and its schedule, weight decay, betas, clipping,
z-loss): the seeds of a variant, the points of an LR grid. A member computes its lone run bit for
bit, so grouping changes how long an ablation takes, never a number in it:

- `off`: every run alone, as before ensembles existed;
- `N`: the runs of one architecture in groups of at most N, split evenly;
- `auto`: measured here. For each architecture this machine times training steps of one run alone
  and of its runs as one ensemble, at a few members and at all of them (sizes between are
  interpolated: past some size the members' work outgrows the caches and a member costs more), on
  the threads a worker gets. A run whose step alone is compute-bound on a CPU, or an architecture
  whose ensemble would not step its runs at least MIN_GAIN times as fast as one by one, trains
  alone; the others are split into as many groups as keeps every worker busy to the end (the
  measured step times, longest first). On a GPU a group also fits in a quarter of the
  memory free when measured.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from experiments.config import RunConfig
from experiments.runner import seeded_model
from experiments.settings import ConfigError
from nanogpt.config import TrainConfig
from nanogpt.data import Corpus
from nanogpt.ensemble import PER_MEMBER, EnsembleTrainer
from nanogpt.train import Trainer

# the margin that keeps `auto` from choosing an ensemble that is only as fast, or noise
MIN_GAIN = 1.15
MAX_SIZE = 64  # members of one ensemble at most
# a timing window is at least this long (and 2 steps); the faster of two, after a warm-up
MEASURE_SECONDS = 0.05
# the ensemble is timed at this many members and at its largest size
MEASURED_SIZE = 4
# On a CPU a step of this long alone is compute: the per-step overhead an ensemble shares (op
# dispatch, Python, the optimizer's launches: ~1-3 ms measured on 2-core EPYCs) could not make it
# MIN_GAIN times as fast.
COMPUTE_BOUND_S = 0.05
Group = tuple[RunConfig, ...]


@dataclass(frozen=True)
class EnsembleMode:
    """`auto`, `off`, or `fixed` groups of at most `size`."""

    kind: str
    size: int = 0

    @classmethod
    def parse(cls, text: str) -> EnsembleMode:
        if text in ("auto", "off"):
            return cls(text)
        size = int(text) if text.isdigit() else 0
        if size < 1:
            raise ConfigError(f"--ensemble {text}: give auto, off, or the largest ensemble size N "
                              ">= 1 (ENSEMBLE= for make)")
        return cls("off") if size == 1 else cls("fixed", size)

    def __str__(self) -> str:
        return str(self.size) if self.kind == "fixed" else self.kind


def architecture(cfg: RunConfig) -> tuple | None:
    """What runs must share to train as one ensemble; None for a run that trains alone (compiled, or
    fp16, whose gradient scaler is one per run)."""
    if cfg.compile or cfg.train.dtype == "float16":
        return None
    shared = dataclasses.replace(cfg.train, **{k: getattr(TrainConfig, k) for k in PER_MEMBER})
    return cfg.model, shared, cfg.data, cfg.data_sha256, cfg.device


@dataclass(frozen=True)
class Grouping:
    groups: tuple[Group, ...]  # every run once, the longest group first
    notes: tuple[str, ...]  # one line per architecture of several runs: how it trains, and why


def group(runs: Sequence[RunConfig], mode: EnsembleMode, jobs: int,
          timer: Timer | None = None) -> Grouping:
    """The runs to train (in plan order) grouped into ensembles for `jobs` workers; `auto` measures
    with `timer`."""
    archs: dict[object, list[RunConfig]] = {}
    alone: list[RunConfig] = []
    for cfg in runs:
        key = architecture(cfg)
        if key is None or mode.kind == "off":
            alone.append(cfg)
        else:
            archs.setdefault(key, []).append(cfg)
    # architecture -> how many groups its runs train in (as many as runs: alone)
    parts: dict[object, int] = {}
    # architecture -> measured seconds per step of n members
    step: dict[object, Callable[[int], float]] = {}
    notes: list[str] = []
    for key, members in archs.items():
        name, m = _name(members[0]), len(members)
        if m == 1 or mode.kind == "fixed":
            parts[key] = math.ceil(m / (mode.size or 1))
            if m > 1:
                notes.append(f"{name}: {m} runs in {parts[key]} ensemble(s) of at most {mode.size}")
            continue
        assert timer is not None, "auto measures step times"
        size = min(m, MAX_SIZE, timer.capacity(tuple(members[:1])))
        alone_s = timer(tuple(members[:1]))
        if timer.compute_bound(alone_s):
            parts[key], step[key] = m, lambda n, s=alone_s: n * s
            notes.append(f"{name}: {m} runs alone (compute-bound: {alone_s * 1e3:.0f} ms a step "
                         "alone leaves an ensemble little overhead to share)")
            continue
        # the step time is overhead + members x work, until the members' work outgrows the
        # caches: measured at a few members and at the largest ensemble, interpolated between
        sizes = sorted({1, min(size, MEASURED_SIZE), size})
        step[key] = _interpolated(sizes, [alone_s] + [timer(tuple(members[:n])) for n in sizes[1:]])
        best = max(sizes, key=lambda n, t=step[key]: n / t(n))
        gain = best * alone_s / step[key](best)
        if gain < MIN_GAIN:
            parts[key] = m
            notes.append(f"{name}: {m} runs alone (an ensemble of {best} steps them {gain:.2f}x as "
                         f"fast as one by one: under {MIN_GAIN}x)")
        else:
            parts[key] = math.ceil(m / best)
            notes.append(f"{name}: an ensemble of {best} steps its runs {gain:.2f}x as fast as one "
                         f"by one (measured at {', '.join(map(str, sizes[1:]))} members)")
    measured = [t(1) for t in step.values()]
    # a guess for runs nothing measured
    per_run = sum(measured) / len(measured) if measured else 1.0

    def cost(g: Group) -> float:
        key = architecture(g[0])
        return g[0].train.max_iters * (step[key](len(g)) if key in step else per_run * len(g))

    def grouped(parts: dict[object, int]) -> list[Group]:
        return [(cfg,) for cfg in alone] + [
            tuple(c) for k, n in parts.items() for c in _split(archs[k], n)]

    if mode.kind == "auto":  # split ensembles further while that shortens the whole ablation
        best = _makespan([cost(g) for g in grouped(parts)], jobs)
        while True:
            tries = [(_makespan([cost(g) for g in grouped(parts | {k: parts[k] + 1})], jobs), k)
                     for k in step if parts[k] < len(archs[k])]
            if not tries or min(tries, key=lambda t: t[0])[0] >= best:
                break
            best, k = min(tries, key=lambda t: t[0])
            parts = parts | {k: parts[k] + 1}
    return Grouping(tuple(sorted(grouped(parts), key=cost, reverse=True)), tuple(notes))


def describe_groups(grouping: Grouping, mode: EnsembleMode) -> str:
    """How the runs to train are grouped, as the dry-run shows it: the notes, then one line per
    ensemble."""
    ensembles = [g for g in grouping.groups if len(g) > 1]
    lines = [f"ensembles ({mode}): {len(ensembles)} of {sum(map(len, ensembles))} runs; "
             f"{len(grouping.groups) - len(ensembles)} runs alone (architectures named as layers x "
             "width)"]
    lines += [f"  {note}" for note in grouping.notes]
    lines += [f"  {_name(g[0])} x{len(g)}: " + " ".join(cfg.run_id for cfg in g) for g in ensembles]
    return "\n".join(lines)


def _name(cfg: RunConfig) -> str:
    """An architecture as the notes name it: its variant, and its size (layers x width: axes change
    them)."""
    return f"{cfg.group or cfg.experiment}/{cfg.variant} ({cfg.model.n_layer}x{cfg.model.n_embd})"


def _split(members: Sequence[RunConfig], parts: int) -> list[list[RunConfig]]:
    """`members` in `parts` groups whose sizes differ by at most one, in order."""
    size, extra = divmod(len(members), parts)
    bounds = [i * size + min(i, extra) for i in range(parts + 1)]
    return [list(members[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]


def _interpolated(sizes: Sequence[int], seconds: Sequence[float]) -> Callable[[int], float]:
    """Seconds per step of an ensemble of n members, between the measured sizes."""
    return lambda n: float(np.interp(n, sizes, seconds))


def _makespan(costs: Sequence[float], jobs: int) -> float:
    """When the last of `jobs` workers is done, each taking the longest task left."""
    workers = [0.0] * jobs
    for c in sorted(costs, reverse=True):
        workers[workers.index(min(workers))] += c
    return max(workers)


class Timer:
    """Times training steps on this machine for `auto`: real steps of the planned runs on the
    corpus."""

    def __init__(self, corpus: Corpus, device: torch.device, threads: int,
                 seconds: float = MEASURE_SECONDS):
        self.corpus, self.device, self.threads, self.seconds = corpus, device, threads, seconds

    def compute_bound(self, step_seconds: float) -> bool:
        """Whether a run that steps this slowly alone is compute-bound here (only ever on a CPU)."""
        return self.device.type == "cpu" and step_seconds > COMPUTE_BOUND_S

    def capacity(self, run: Group) -> int:
        """How many members of this run's architecture fit in a quarter of the free GPU memory (a
        CPU: no limit).

        A member needs its weights, gradients and two moments (16 bytes a parameter), and its
        activations: measured as one training step's peak.
        """
        if self.device.type != "cuda":
            return MAX_SIZE
        torch.cuda.reset_peak_memory_stats(self.device)
        base = torch.cuda.memory_allocated(self.device)
        self.step(run)()
        per_member = torch.cuda.max_memory_allocated(self.device) - base
        free, _ = torch.cuda.mem_get_info(self.device)
        return max(1, int(free / 4 // max(per_member, 1)))

    def __call__(self, runs: Group) -> float:
        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)  # what a worker gets
        try:
            step = self.step(runs)
            step()  # warm-up: first-call allocations
            # the quieter of two: other work shares the cores
            return min(self._window(step) for _ in range(2))
        finally:
            torch.set_num_threads(before)

    def _window(self, step: Callable[[], object]) -> float:
        """Seconds per step over at least `self.seconds` and 2 steps."""
        self._sync()
        start, n = time.perf_counter(), 0
        while n < 2 or time.perf_counter() - start < self.seconds:
            step()
            n += 1
        self._sync()
        return (time.perf_counter() - start) / n

    def step(self, runs: Group) -> Callable[[], object]:
        """One training step of these runs: alone, or as one ensemble (built fresh)."""
        models = [seeded_model(cfg).to(self.device) for cfg in runs]
        if len(runs) == 1:
            trainer = Trainer(models[0], self.corpus, runs[0].train, runs[0].seed, self.device)
            return lambda: trainer.train_step(runs[0].train.lr)
        ensemble = EnsembleTrainer(models, self.corpus, [cfg.train for cfg in runs],
                                   [cfg.seed for cfg in runs], self.device)
        lrs, live = [cfg.train.lr for cfg in runs], range(len(runs))
        return lambda: ensemble.train_step(lrs, live)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
