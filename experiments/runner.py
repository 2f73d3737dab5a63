"""Train one run and record it: the one path to train anything.

The runner CLI (`experiments.run`), `make ablate`, the benchmarks and the sweeps all call
`prepare` (validate against the corpus and the machine; writes nothing) and then `train_run`.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from experiments import store
from experiments.config import ConfigError, RunConfig, with_corpus, with_device
from experiments.definitions import DefinitionError
from experiments.progress import Progress
from experiments.recorder import RunRecorder, environment
from experiments.wandb_mirror import WandbMirror, WandbSettings
from nanogpt import checkpoint, distributed
from nanogpt.data import Corpus, DataError
from nanogpt.model import GPT
from nanogpt.train import Callback, Trainer

SAMPLE_TOKENS = 500
USER_ERRORS = (ConfigError, DefinitionError, DataError, checkpoint.CheckpointError, store.RunFolderError,
               distributed.DistributedError, store.RunBusyError)
DEVICE_TYPES = ("cpu", "cuda", "mps")
TRAINING_BYTES_PER_PARAM = 16  # fp32 weights, gradients and AdamW's two moments


class RunExistsError(ConfigError):
    """A partial run is in the way and the user did not say whether to resume or restart."""


def check_results(results: Path) -> None:
    """A run store must be a folder (or not exist yet): say so before anything is written."""
    for path in (results, *results.parents):
        if path.exists():
            if not path.is_dir():
                raise ConfigError(f"results path {results}: {path} is a file, not a folder; "
                                  "give --results a folder (RESULTS= for make)")
            return


def pick_device(requested: str) -> torch.device:
    """The device a run trains on. auto never picks MPS: nobody has measured here that it beats a Mac's CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        device = None
    if device is None or device.type not in DEVICE_TYPES:
        raise ConfigError(f"device '{requested}' is not a device name; use auto, cpu, cuda, cuda:N or mps")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {requested} requested but CUDA is not available; use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"device {requested}: this machine has {torch.cuda.device_count()} CUDA device(s); "
                          "use cuda:0 .. cuda:N-1")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {requested} requested but MPS is not available; use --device cpu")
    return device


def _memory(device: torch.device) -> int:
    """Bytes of memory the device has in all (a model larger than that can never train there)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[1]
    if device.type == "mps":  # unified memory: what Metal lets this process allocate
        return torch.mps.recommended_max_memory()
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _check_fits(cfg: RunConfig, device: torch.device) -> None:
    """A model too large to train is refused here, before any folder is made (built on the meta device)."""
    with torch.device("meta"):
        params = GPT(cfg.model).num_params()
    needed, memory = params * TRAINING_BYTES_PER_PARAM, _memory(device)
    if needed > memory:
        raise ConfigError(f"the model has {params:,} parameters and needs about {needed / 2**30:.1f} GiB to train, "
                          f"but the {device.type} has {memory / 2**30:.1f} GiB; use a smaller n_embd or n_layer")


def prepare(cfg: RunConfig, corpus: Corpus | None = None) -> tuple[RunConfig, Corpus]:
    """Load the corpus (unless given) and finish validating the config against it and the machine.

    Writes nothing. Values that depend on the hardware are resolved here.
    """
    device = pick_device(cfg.device)  # fail now, before anything is written, if the device is not there
    cfg = with_device(cfg, device)  # dtype=auto becomes the dtype this device computes fast
    corpus = corpus or Corpus.load(cfg.data)
    cfg = with_corpus(cfg, corpus.tokenizer.vocab_size, corpus.sha256, (len(corpus.train), len(corpus.val)))
    _check_fits(cfg, device)
    return cfg, corpus


def load_weights(model: torch.nn.Module, state: dict[str, Any], path: Path) -> None:
    """Checkpoint weights into a model built from the run's config; CheckpointError if they do not fit."""
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError) as e:
        raise checkpoint.CheckpointError(
            f"checkpoint {path} does not match the run's config ({str(e).splitlines()[0].strip()}); "
            "retrain the run with --force"
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
              prepared: tuple[RunConfig, Corpus] | None = None,
              wandb: WandbSettings | None = None) -> dict[str, Any]:
    """Train `cfg` into its run folder and return the run's summary.

    A completed run is returned as is unless `force`. A run folder left by a killed run is
    resumed from its checkpoint when `resume` (else RunExistsError: nothing is touched).
    With `wandb` settings the run is mirrored to W&B (see experiments.wandb_mirror).
    """
    cfg, corpus = prepared or prepare(cfg)
    run_dir = store.RunStore(results).run_dir(cfg.experiment, cfg.run_id)
    # --- data-parallel (torchrun): ranks other than 0 train alongside rank 0 and write nothing
    world = distributed.world(pick_device(cfg.device))
    if not world.is_main:
        if not world.broadcast(None):  # rank 0 found nothing to train
            return {"run_id": cfg.run_id, "rank": world.rank, "status": "skipped"}
        trainer = make_trainer(cfg, corpus, world)
        trainer.follow_main()
        return {"run_id": cfg.run_id, "rank": world.rank, "status": trainer.run().status}
    # --- end data-parallel
    with store.run_lock(run_dir):
        return _train_locked(cfg, corpus, run_dir, resume, force, callbacks, quiet, wandb, world)


def make_trainer(cfg: RunConfig, corpus: Corpus, world: distributed.SingleProcess | None = None) -> Trainer:
    """A seeded model and its trainer on the config's device (a rank's own GPU when data-parallel)."""
    world = world or distributed.SingleProcess()
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    device = world.place(pick_device(cfg.device))
    return Trainer(GPT(cfg.model), corpus, cfg.train, cfg.seed, device, compile=cfg.compile, world=world)


def _train_locked(cfg: RunConfig, corpus: Corpus, run_dir: Path, resume: bool, force: bool,
                  callbacks: Sequence[Callback], quiet: bool, wandb: WandbSettings | None,
                  world: distributed.SingleProcess) -> dict[str, Any]:
    runs = store.RunStore(run_dir.parent.parent)
    status = runs.status(run_dir) if run_dir.exists() else None
    if run_dir.exists() and force:
        shutil.rmtree(run_dir)
    elif status in ("completed", "diverged"):
        world.broadcast(False)  # data-parallel: the other ranks have nothing to train either
        return runs.read(run_dir).summary | {"skipped": True}
    elif run_dir.exists() and not resume:
        world.broadcast(False)
        raise RunExistsError(
            f"{run_dir} holds an unfinished run (status {status}); pass --resume to continue it "
            "or --force to start over"
        )

    world.broadcast(True)
    trainer = make_trainer(cfg, corpus, world)
    model, device = trainer.model, trainer.device
    ckpt_path = run_dir / store.CHECKPOINT
    if ckpt_path.exists():
        state = checkpoint.load(ckpt_path)  # on the CPU: RNG states must not move to a GPU
        load_weights(model, state["model"], ckpt_path)
        trainer.restore(state)
        recorder = RunRecorder.reopen(run_dir, cfg, trainer.step)
    else:
        static = {"params": model.num_params(), "flops_per_token": model.flops_per_token(),
                  "train_flops_per_token": 3 * model.flops_per_token(), "vocab_size": cfg.model.vocab_size,
                  "data_sha256": cfg.data_sha256, "environment": environment(device), "world_size": world.size,
                  "precision": trainer.precision.record() | {"reason": cfg.dtype_reason}}
        recorder = RunRecorder.create(run_dir, cfg, corpus.tokenizer.to_json(), static)
    trainer.follow_main()  # data-parallel: the other ranks start from this state

    mirror = WandbMirror.start(wandb, run_dir, cfg)  # after the recorder: it mirrors what is recorded
    progress = Progress(f"{cfg.experiment}/{cfg.run_id}", cfg.train.max_iters, trainer.step, quiet=quiet)
    try:
        result = trainer.run([recorder, progress, mirror, *callbacks])
    except BaseException as e:
        status, reason = ("interrupted", "interrupted") if isinstance(e, KeyboardInterrupt) else \
            ("failed", f"{type(e).__name__}: {e}")
        # On a full or read-only disk even this may fail: the summary then still says 'running', never
        # 'completed', and the checkpoint of the last evaluation is intact for --resume.
        with contextlib.suppress(OSError):
            mirror.finish(recorder.finish(status, reason))
        raise
    finally:
        progress.close()
    samples = sample_text(model, corpus, cfg.seed) if result.status == "completed" else None
    summary = recorder.finish(result.status, result.reason, samples, skipped_steps=result.skipped_steps)
    mirror.finish(summary, samples)
    return summary


def disk_error(e: OSError) -> str:
    """A failed write as one line: which file, why, and what to do."""
    where = e.filename or "the results folder"
    return (f"cannot write {where} ({e.strerror or e}); free disk space or choose a writable --results folder, "
            "then rerun with --resume: nothing written so far is marked complete")
