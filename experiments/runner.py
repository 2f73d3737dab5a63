"""Train one run and record it: the one path to train anything.

The runner CLI (`experiments.run`), `make ablate`, the benchmarks and the sweeps all call
`experiments.machine.prepare` (validate against the corpus and the machine; writes nothing) and then
`train_run`.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from experiments import exits, store
from experiments.config import ConfigError, RunConfig
from experiments.definitions import DefinitionError
from experiments.machine import Prepared, prepare
from experiments.progress import Progress
from experiments.recorder import RunRecorder, environment
from experiments.wandb_mirror import WandbMirror, WandbSettings
from nanogpt import checkpoint, distributed
from nanogpt.data import Corpus, DataError
from nanogpt.model import GPT
from nanogpt.precision import Precision
from nanogpt.train import Callback, Trainer

SAMPLE_TOKENS = 500
USER_ERRORS = (ConfigError, DefinitionError, DataError, checkpoint.CheckpointError,
               store.RunFolderError, distributed.DistributedError, store.RunBusyError)


class RunExistsError(ConfigError):
    """A partial run is in the way and the user did not say whether to resume or restart."""


def load_weights(model: torch.nn.Module, state: dict[str, Any], path: Path) -> None:
    """Checkpoint weights into a model built from the run's config; CheckpointError if they do not
    fit."""
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError) as e:
        raise checkpoint.CheckpointError(
            f"checkpoint {path} does not match the run's config "
            f"({str(e).splitlines()[0].strip()}); retrain the run with --force"
        ) from None


def sample_text(model: GPT, corpus: Corpus, seed: int, tokens: int = SAMPLE_TOKENS) -> str:
    device = next(model.parameters()).device
    start = corpus.tokenizer.encode("\n") if "\n" in corpus.tokenizer.chars else [0]
    idx = torch.tensor([start], dtype=torch.long, device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    out = model.generate(idx, tokens, generator=generator)
    return corpus.tokenizer.decode(out[0, len(start):].tolist())


def train_run(cfg: RunConfig, results: Path, *, resume: bool = False, force: bool = False,
              callbacks: Sequence[Callback] = (), quiet: bool = False,
              prepared: Prepared | None = None,
              wandb: WandbSettings | None = None) -> dict[str, Any]:
    """Train `cfg` into its run folder and return the run's summary.

    A completed run is returned as is unless `force`. A run folder left by a killed run is
    resumed from its checkpoint when `resume` (else RunExistsError: nothing is touched).
    With `wandb` settings the run is mirrored to W&B (see experiments.wandb_mirror).
    `prepared` is `cfg` already prepared (`experiments.machine.prepare`), e.g. with a corpus loaded
    once.
    """
    ready = prepared or prepare(cfg)
    cfg = ready.cfg
    run_dir = store.RunStore(results).run_dir(cfg.experiment, cfg.run_id)
    # --- data-parallel (torchrun): ranks other than 0 train alongside rank 0 and write nothing
    world = distributed.world(ready.device)
    if not world.is_main:
        if not world.broadcast(None):  # rank 0 found nothing to train
            return {"run_id": cfg.run_id, "rank": world.rank, "status": "skipped"}
        trainer = make_trainer(ready, world)
        trainer.follow_main()
        return {"run_id": cfg.run_id, "rank": world.rank, "status": trainer.run().status}
    # --- end data-parallel
    with store.run_lock(run_dir):
        return train_locked(ready, run_dir, resume, force, callbacks, quiet, wandb, world)


def seeded_model(cfg: RunConfig) -> GPT:
    """The run's model as its seed builds it: the same initial weights however the run is
    trained."""
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    return GPT(cfg.model)


def make_trainer(ready: Prepared, world: distributed.SingleProcess | None = None) -> Trainer:
    """A seeded model and its trainer on the prepared device (a rank's own GPU when
    data-parallel)."""
    world = world or distributed.SingleProcess()
    cfg = ready.cfg
    return Trainer(seeded_model(cfg), ready.corpus, cfg.train, cfg.seed, world.place(ready.device),
                   compile=cfg.compile, world=world)


def finished_summary(ready: Prepared, run_dir: Path, resume: bool,
                     force: bool) -> dict[str, Any] | None:
    """A finished run's summary (nothing to train: a cache hit), or None once the folder is ready to
    train into: cleared by `force`, or holding an unfinished run that `resume` continues or repairs
    (RunExistsError without it; store.RunFolderError for damage no file can repair)."""
    # A folder a kill left before config.json was written holds nothing to check; others are.
    record = store.read_run(run_dir) if (run_dir / store.CONFIG).exists() and not force else None
    damage = record.damage if record else None
    if run_dir.exists() and force:
        shutil.rmtree(run_dir)
    elif record and record.status in store.FINISHED:
        return record.summary | {"skipped": True}
    elif damage and not (resume and damage.repair):
        raise (RunExistsError if damage.repair else store.RunFolderError)(str(damage))
    elif run_dir.exists() and not resume:
        state = f"status {record.status}" if record else f"no {store.CONFIG} yet"
        raise RunExistsError(f"{run_dir} holds an unfinished run ({state}); pass --resume to "
                             "continue it or --force to start over")
    return None


def open_run(ready: Prepared, run_dir: Path, model: GPT, static: dict[str, Any]
             ) -> tuple[RunRecorder, dict[str, Any] | None]:
    """The run's recorder, and the checkpoint it resumes from (its weights loaded into `model`) or
    None for a fresh start; what a resume repairs is said in one line each. `static` is what the
    summary records besides the losses (`static_fields`)."""
    cfg = ready.cfg
    ckpt_path = run_dir / store.CHECKPOINT
    if ckpt_path.exists():
        # before anything is changed: an edited config.json is never resumed
        store.read_config(run_dir)
        state = checkpoint.load(ckpt_path)  # on the CPU: RNG states must not move to a GPU
        load_weights(model, state["model"], ckpt_path)
        recorder = RunRecorder.reopen(run_dir, cfg, state["step"], static, state.get("metrics"))
        for fixed in recorder.repaired:
            print(f"repaired {fixed.path}: {fixed.problem} ({fixed.repair})", file=sys.stderr)
        return recorder, state
    if run_dir.exists():
        RunRecorder.check_fresh_start(run_dir)
    return RunRecorder.create(run_dir, cfg, ready.corpus.tokenizer.to_json(), static), None


def static_fields(ready: Prepared, model: GPT, device: torch.device, precision: Precision,
                  world_size: int = 1, ensemble: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a run's summary records besides its losses: its size, its machine, how it was
    trained."""
    cfg = ready.cfg
    fields = {"params": model.num_params(), "flops_per_token": model.flops_per_token(),
              "train_flops_per_token": 3 * model.flops_per_token(),
              "vocab_size": cfg.model.vocab_size, "data_sha256": cfg.data_sha256,
              "environment": environment(device), "world_size": world_size,
              "precision": precision.record() | {"reason": cfg.dtype_reason}}
    return fields | ({"ensemble": ensemble} if ensemble else {})


def close_run(recorder: RunRecorder, mirror: WandbMirror, error: BaseException) -> None:
    """Record a run that an exception ended: interrupted (Ctrl-C, SIGTERM) or failed."""
    status, reason = ("interrupted", "interrupted") if isinstance(error, KeyboardInterrupt) else \
        ("failed", f"{type(error).__name__}: {error}")
    # On a full or read-only disk even this may fail: the summary then still says 'running', never
    # 'completed', and the checkpoint of the last evaluation is intact for --resume.
    with contextlib.suppress(OSError):
        mirror.close(recorder.finish(status, reason))


def train_locked(ready: Prepared, run_dir: Path, resume: bool, force: bool,
                 callbacks: Sequence[Callback] = (), quiet: bool = True,
                 wandb: WandbSettings | None = None,
                 world: distributed.SingleProcess | None = None) -> dict[str, Any]:
    """`train_run` for a caller that holds the run's lock already."""
    world = world or distributed.SingleProcess()
    cfg, corpus = ready.cfg, ready.corpus
    try:
        finished = finished_summary(ready, run_dir, resume, force)
    except (RunExistsError, store.RunFolderError):
        world.broadcast(False)
        raise
    world.broadcast(finished is None)  # data-parallel: the other ranks train only if rank 0 does
    if finished is not None:
        return finished
    trainer = make_trainer(ready, world)
    model, device = trainer.model, trainer.device
    static = static_fields(ready, model, device, trainer.precision, world.size)
    # the mirror is off until started
    mirror, recorder, progress = WandbMirror(run_dir, cfg), None, None
    try:
        # Opening writes the summary 'running': a stop that comes meanwhile waits, and is raised as
        # the block ends, here in the try, where it is recorded; so is one anywhere below (while W&B
        # starts).
        with exits.signals_held():
            recorder, state = open_run(ready, run_dir, model, static)
        if state is not None:
            trainer.restore(state)
        progress = Progress(f"{cfg.experiment}/{cfg.run_id}", cfg.train.max_iters, trainer.step,
                            quiet=quiet)
        trainer.follow_main()  # data-parallel: the other ranks start from this state
        mirror = WandbMirror.start(wandb, run_dir, cfg)  # after the recorder: it mirrors the record
        result = trainer.run([recorder, progress, mirror, *callbacks])
    except BaseException as e:
        if recorder is not None:
            close_run(recorder, mirror, e)
        raise
    finally:
        if progress is not None:
            progress.close()
    samples = sample_text(model, corpus, cfg.seed) if result.status == "completed" else None
    summary = recorder.finish(result.status, result.reason, samples,
                              skipped_steps=result.skipped_steps)
    mirror.close(summary, samples)
    return summary
