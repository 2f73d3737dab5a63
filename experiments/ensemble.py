"""Train runs that share a model as one ensemble (`nanogpt.ensemble`), each recorded as the ordinary run it is.

Every member keeps its run id (the same config is the same run, however it trains), its run folder, metrics,
checkpoints, W&B run, summary and samples, written by the pieces `experiments.runner.train_run` uses; its summary
adds `ensemble`: which member of how many it trained as. A member's numbers are its lone run's bit for bit
(without dropout), so how runs are grouped never changes a result, only how long they take.

A run that is already finished is a cache hit; a member resumes from its own checkpoint. Members that start
from different steps (a run half-trained alone beside fresh ones) train as separate ensembles, one per start
step; a group of one is trained by `train_run` itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from experiments import store
from experiments.config import RunConfig
from experiments.machine import Prepared, prepare
from experiments.progress import Progress
from experiments.runner import (
    close_run,
    finished_summary,
    open_run,
    sample_text,
    seeded_model,
    static_fields,
    train_run,
)
from experiments.wandb_mirror import WandbMirror, WandbSettings
from nanogpt import checkpoint
from nanogpt.ensemble import EnsembleTrainer
from nanogpt.precision import choose
from nanogpt.train import TrainResult


def train_group(cfgs: Sequence[RunConfig], results: Path, *, force: bool = False, quiet: bool = True,
                wandb: WandbSettings | None = None) -> list[dict[str, Any]]:
    """Train planned runs that share their model (experiments.grouping) as ensembles; resumes what was cut short.

    Returns one summary per run, in the order given. Locks every member's run folder for the whole group: a run
    another process trains now raises store.RunBusyError before anything is written.
    """
    if len(cfgs) == 1:
        return [train_run(cfgs[0], results, resume=True, force=force, quiet=quiet, wandb=wandb)]
    corpus = None
    ready = []
    for cfg in cfgs:
        ready.append(prepare(cfg, corpus))
        corpus = ready[-1].corpus
    runs = store.RunStore(results)
    dirs = [runs.run_dir(r.cfg.experiment, r.cfg.run_id) for r in ready]
    with contextlib.ExitStack() as locks:
        for run_dir in dirs:
            locks.enter_context(store.run_lock(run_dir))
        summaries: dict[int, dict[str, Any]] = {}
        starts: dict[int, list[int]] = {}  # start step -> the members that start there
        for i, (r, run_dir) in enumerate(zip(ready, dirs, strict=True)):
            finished = finished_summary(r, run_dir, resume=True, force=force)
            if finished is not None:
                summaries[i] = finished
            else:
                starts.setdefault(_start_step(run_dir), []).append(i)
        for members in starts.values():
            summaries |= dict(zip(members, _train_members([ready[i] for i in members], [dirs[i] for i in members],
                                                          quiet, wandb), strict=True))
    return [summaries[i] for i in range(len(cfgs))]


def _start_step(run_dir: Path) -> int:
    """The step a run folder resumes from: its checkpoint's, 0 without one (read cheaply: no weights needed)."""
    path = run_dir / store.CHECKPOINT
    return checkpoint.load(path)["step"] if path.exists() else 0


def _train_members(ready: Sequence[Prepared], dirs: Sequence[Path], quiet: bool,
                   wandb: WandbSettings | None) -> list[dict[str, Any]]:
    """Train members that start from one step as one ensemble (locked, not finished); their summaries."""
    device = ready[0].device
    models = [seeded_model(r.cfg).to(device) for r in ready]
    precision = choose(ready[0].cfg.train.dtype, device)
    ids = [r.cfg.run_id for r in ready]
    recorders, states = [], []
    for i, (r, run_dir, model) in enumerate(zip(ready, dirs, models, strict=True)):
        static = static_fields(r, model, device, precision, ensemble={"member": i, "size": len(ready), "runs": ids})
        recorder, state = open_run(r, run_dir, model, device, static)
        recorders.append(recorder)
        states.append(state)
    trainer = EnsembleTrainer(models, ready[0].corpus, [r.cfg.train for r in ready], [r.cfg.seed for r in ready],
                              device)
    if states[0] is not None:
        trainer.restore(states)
    mirrors = [WandbMirror.start(wandb, run_dir, r.cfg) for r, run_dir in zip(ready, dirs, strict=True)]
    first = ready[0].cfg
    progress = Progress(f"{first.experiment}/{first.variant} x{len(ready)}", first.train.max_iters, trainer.step,
                        quiet=quiet)
    summaries: dict[int, dict[str, Any]] = {}

    def record(i: int, result: TrainResult) -> None:  # as each member ends: the others may train on for long
        r = ready[i]
        samples = sample_text(trainer.member_model(i), r.corpus, r.cfg.seed) if result.status == "completed" else None
        summaries[i] = recorders[i].finish(result.status, result.reason, samples)
        mirrors[i].close(summaries[i], samples)

    try:
        trainer.run([[recorder, mirror] + ([progress] if i == 0 else [])
                     for i, (recorder, mirror) in enumerate(zip(recorders, mirrors, strict=True))], record)
    except BaseException as e:
        for i, (recorder, mirror) in enumerate(zip(recorders, mirrors, strict=True)):
            if i not in summaries:
                close_run(recorder, mirror, e)
        raise
    finally:
        progress.close()
    return [summaries[i] for i in range(len(ready))]
