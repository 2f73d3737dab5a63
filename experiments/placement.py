"""Where `make ablate`'s workers run: how many runs at once, which GPU each, how many CPU threads
each.

On a CPU machine: one worker per core, `cores // jobs` torch threads each (parallel runs never
oversubscribe the CPU). On a CUDA machine: RUNS_PER_GPU workers per visible GPU (capped at one per
core: each worker's Python loop keeps a core busy launching kernels), worker i pinned to GPU i mod
N, and the cores shared out as threads. `--jobs` (JOBS=) overrides the count; the pinning and the
thread split follow it.

Why several runs per GPU: the ablation's runs are tiny (the tutorial preset: a 3-layer, 32-wide
model on 32 x 8 tokens), so one run cannot fill a GPU: its step time is kernel launches and Python,
a few microseconds of GPU work each. Runs in other processes fill the gaps. Why 4, not more: each
process holds its own CUDA context (typically a few hundred MiB, so memory is no limit even on a 16
GiB T4) and a core; kernels of different processes do not overlap (the GPU time-slices the
contexts), so extra workers only fill idle gaps. 4 is a conservative guess, NOT MEASURED yet: `make
gpu-check` times the default `make ablate` on a GPU, and docs/gpu.md says how to try other JOBS=.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from experiments.config import RunConfig
from experiments.machine import default_jobs

RUNS_PER_GPU = 4  # not measured yet (see the module docstring and docs/gpu.md)


@dataclass(frozen=True)
class Placement:
    jobs: int  # concurrent worker processes
    threads: int  # torch CPU threads per worker
    gpus: tuple[str, ...]  # the CUDA devices workers are pinned to, round-robin; empty: no pinning

    def gpu_of(self, worker: int) -> str | None:
        """The CUDA_VISIBLE_DEVICES entry of the `worker`-th worker started (None: leave it as it
        is)."""
        return self.gpus[worker % len(self.gpus)] if self.gpus else None

    def describe(self) -> str:
        where = f", pinned round-robin to {len(self.gpus)} GPU(s)" if self.gpus else ""
        return f"{self.jobs} parallel jobs x {self.threads} torch threads{where}"


def visible_gpus(count: int) -> tuple[str, ...]:
    """The `count` GPUs torch sees, as CUDA_VISIBLE_DEVICES names them (so pinning respects a
    narrowed list)."""
    named = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return tuple(named[:count]) if len(named) >= count else tuple(str(i) for i in range(count))


def place(jobs: int | None, cores: int, gpus: int, devices: set[str]) -> Placement:
    """The placement for runs on `devices` (their device settings) with `gpus` CUDA GPUs visible.

    Pinning needs runs that let the worker choose their GPU: device auto or a bare `cuda`. A run
    that names `cuda:1` or `cpu` keeps its own device, and then workers are only counted, as on a
    CPU machine.
    """
    pin = gpus > 0 and devices <= {"auto", "cuda"}
    if jobs is None:
        jobs = min(gpus * RUNS_PER_GPU, cores) if pin else cores
    return Placement(jobs, max(1, cores // jobs), visible_gpus(gpus) if pin else ())


def for_runs(runs: Iterable[RunConfig], jobs: int | None) -> Placement:
    """The placement on this machine for planned runs."""
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return place(jobs, default_jobs(), gpus, {cfg.device for cfg in runs})
