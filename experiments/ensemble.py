"""Train runs that share a model as one ensemble (`nanogpt.ensemble`), each recorded as the ordinary
run it is.

Every member keeps its run id (the same config is the same run, however it trains), its run folder,
metrics, checkpoints, W&B run, summary and samples, written by the pieces
`experiments.runner.train_run` uses; its summary adds `ensemble`: which member of how many it
trained as. A member's numbers are its lone run's bit for bit (without dropout), so how runs are
grouped never changes a result, only how long they take.

A run that is already finished is a cache hit; a member resumes from its own checkpoint. Members
that start from different steps (a run half-trained alone beside fresh ones) train as separate
ensembles, one per start step; a group of one is trained by `train_run` itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from experiments import exits, store
from experiments.config import RunConfig
from experiments.machine import Prepared, prepare
from experiments.progress import Progress
from experiments.recorder import RunRecorder
from experiments.runner import (
    USER_ERRORS,
    close_run,
    finished_summary,
    open_run,
    sample_text,
    seeded_model,
    static_fields,
    train_locked,
    train_run,
)
from experiments.wandb_mirror import WandbMirror, WandbSettings
from nanogpt import checkpoint
from nanogpt.ensemble import EnsembleTrainer
from nanogpt.model import GPT
from nanogpt.precision import choose
from nanogpt.train import TrainResult


def train_group(cfgs: Sequence[RunConfig], results: Path, *, force: bool = False,
                quiet: bool = True, wandb: WandbSettings | None = None) -> list[dict[str, Any]]:
    """Train planned runs that share their model (experiments.grouping) as ensembles; resumes what
    was cut short.

    Returns one summary per run, in the order given. Locks every member's run folder for the whole
    group: a run another process trains now raises store.RunBusyError before anything is written.
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
            if len(members) == 1:  # e.g. a run half-trained alone: it resumes alone
                i = members[0]
                summaries[i] = train_locked(ready[i], dirs[i], resume=True, force=False,
                                            quiet=quiet, wandb=wandb)
            else:
                trained = _train_members([ready[i] for i in members], [dirs[i] for i in members],
                                         quiet, wandb)
                summaries |= dict(zip(members, trained, strict=True))
    return [summaries[i] for i in range(len(cfgs))]


def _start_step(run_dir: Path) -> int:
    """The step a run folder resumes from: its checkpoint's, 0 without one (read cheaply: no weights
    needed)."""
    path = run_dir / store.CHECKPOINT
    return checkpoint.load(path)["step"] if path.exists() else 0


def _train_members(ready: Sequence[Prepared], dirs: Sequence[Path], quiet: bool,
                   wandb: WandbSettings | None) -> list[dict[str, Any]]:
    """Train members that start from one step as one ensemble (locked, not finished); their
    summaries.

    A member whose folder cannot be resumed (damaged: `open_run` refuses it) fails alone, as its
    lone run would; a stop (Ctrl-C, SIGTERM) or a failure of the ensemble itself ends every member
    still training, recorded.
    """
    device = ready[0].device
    precision = choose(ready[0].cfg.train.dtype, device)
    ids = [r.cfg.run_id for r in ready]
    summaries: dict[int, dict[str, Any]] = {}
    opened: dict[int, tuple[GPT, RunRecorder, dict[str, Any] | None]] = {}
    # off until they start
    mirrors = {i: WandbMirror.start(None, dirs[i], r.cfg) for i, r in enumerate(ready)}
    progress = None
    try:
        for i, (r, run_dir) in enumerate(zip(ready, dirs, strict=True)):
            model = seeded_model(r.cfg).to(device)
            static = static_fields(r, model, device, precision,
                                   ensemble={"member": i, "size": len(ready), "runs": ids})
            try:
                # a stop while its summary turns 'running' is raised once it is opened
                with exits.signals_held():
                    opened[i] = (model, *open_run(r, run_dir, model, static))
            except USER_ERRORS as e:
                summaries[i] = {"run_id": r.cfg.run_id, "status": "failed",
                                "reason": f"{type(e).__name__}: {e}"}
        members = list(opened)
        if not members:
            return [summaries[i] for i in range(len(ready))]
        trainer = EnsembleTrainer([opened[i][0] for i in members], ready[0].corpus,
                                  [ready[i].cfg.train for i in members],
                                  [ready[i].cfg.seed for i in members], device)
        if opened[members[0]][2] is not None:
            trainer.restore([opened[i][2] for i in members])
        mirrors |= {i: WandbMirror.start(wandb, dirs[i], ready[i].cfg) for i in members}
        first = ready[members[0]].cfg
        progress = Progress(f"{first.experiment}/{first.variant} x{len(members)}",
                            first.train.max_iters, trainer.step, quiet=quiet)

        # as each member ends: the others may train on for long
        def record(k: int, result: TrainResult) -> None:
            i, r = members[k], ready[members[k]]
            samples = (sample_text(trainer.member_model(k), r.corpus, r.cfg.seed)
                       if result.status == "completed"
                       else None)
            summaries[i] = opened[i][1].finish(result.status, result.reason, samples,
                                               skipped_steps=result.skipped_steps)
            mirrors[i].close(summaries[i], samples)

        trainer.run([[opened[i][1],
                      mirrors[i]] + ([progress] if k == 0 else []) for k, i in enumerate(members)],
                    record)
    except BaseException as e:
        for i, (_, recorder, _) in opened.items():
            if i not in summaries:
                close_run(recorder, mirrors[i], e)
        raise
    finally:
        if progress is not None:
            progress.close()
    return [summaries[i] for i in range(len(ready))]
