"""Train one run and record it: `python -m experiments.run --preset P --variant V --seed S`.

The one path to train anything: the CLI, `make ablate` and the sweeps all call `train_run`.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import shutil
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from experiments import cli, store
from experiments.config import SETTABLE, ConfigError, RunConfig, parse_value, resolve, with_corpus, with_device
from experiments.definitions import DefinitionError, experiments
from experiments.presets import PRESETS
from experiments.progress import Progress
from experiments.recorder import RunRecorder, environment
from experiments.wandb_mirror import WandbMirror, WandbSettings
from nanogpt import checkpoint, distributed
from nanogpt.data import Corpus, DataError
from nanogpt.model import GPT
from nanogpt.train import Callback, Trainer

SAMPLE_TOKENS = 500
USER_ERRORS = (ConfigError, DefinitionError, DataError, checkpoint.CheckpointError, store.RunFolderError,
               distributed.DistributedError)


class RunExistsError(ValueError):
    """A partial run is in the way and the user did not say whether to resume or restart."""


def pick_device(requested: str) -> torch.device:
    if requested != "auto":
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device {requested} requested but CUDA is not available; use --device cpu")
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def prepare(cfg: RunConfig, corpus: Corpus | None = None) -> tuple[RunConfig, Corpus]:
    """Load the corpus (unless given) and finish validating the config against it. Writes nothing."""
    # Fail now, before anything is written, if the device is not there; resolve dtype=auto for it.
    cfg = with_device(cfg, pick_device(cfg.device))
    corpus = corpus or Corpus.load(cfg.data)
    cfg = with_corpus(cfg, corpus.tokenizer.vocab_size, corpus.sha256, (len(corpus.train), len(corpus.val)))
    return cfg, corpus


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


def make_trainer(cfg: RunConfig, corpus: Corpus, world: distributed.SingleProcess) -> Trainer:
    """A seeded model and its trainer on the config's device (a rank's own GPU when data-parallel)."""
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
        trainer.restore(checkpoint.load(ckpt_path))  # on the CPU: RNG states must not move to a GPU
        recorder = RunRecorder.reopen(run_dir, cfg, trainer.step)
    else:
        static = {"params": model.num_params(), "flops_per_token": model.flops_per_token(),
                  "train_flops_per_token": 3 * model.flops_per_token(), "vocab_size": cfg.model.vocab_size,
                  "data_sha256": cfg.data_sha256, "environment": environment(device), "world_size": world.size,
                  "precision": trainer.precision.record() | {"reason": cfg.precision}}
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
    summary = recorder.finish(result.status, result.reason, samples)
    mirror.finish(summary, samples)
    return summary


def disk_error(e: OSError) -> str:
    """A failed write as one line: which file, why, and what to do."""
    where = e.filename or "the results folder"
    return (f"cannot write {where} ({e.strerror or e}); free disk space or choose a writable --results folder, "
            "then rerun with --resume: nothing written so far is marked complete")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.run",
        description="Train one variant of the character-level GPT and record it in the run store.",
        epilog="Any setting can also be given as --KEY=VALUE (the form W&B sweep agents pass). "
        "Example: python -m experiments.run --preset tutorial --variant no_mlp --seed 1 --set lr=3e-4",
    )
    p.add_argument("--preset", default="tutorial", help=f"starting config: {', '.join(PRESETS)} (default tutorial)")
    p.add_argument("--variant", default="full",
                   help="which components are switched on (see --list-variants; default full)")
    p.add_argument("--seed", type=int, default=0, help="seeds init, batches and dropout (default 0)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting; repeatable (see --list-settings)")
    cli.add_store_arguments(p)
    p.add_argument("--experiment", default="adhoc", help="experiment folder inside the run store (default adhoc)")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:N")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (pays off on long GPU runs)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoint")
    p.add_argument("--force", action="store_true", help="delete an existing run with this config and retrain")
    p.add_argument("--dry-run", action="store_true", help="validate and print the resolved config; train nothing")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    cli.add_wandb_arguments(p)
    p.add_argument("--list-settings", action="store_true", help="print every setting with its default and exit")
    p.add_argument("--list-variants", action="store_true", help="print every variant by experiment and exit")
    return p


def parse_overrides(pairs: Sequence[str], extras: Sequence[str]) -> dict[str, Any]:
    """--set KEY=VALUE pairs and --KEY=VALUE extras, parsed to each setting's type."""
    items = []
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set {pair}: expected KEY=VALUE, e.g. --set lr=3e-4")
        items.append(pair)
    for extra in extras:
        if not extra.startswith("--") or "=" not in extra:
            raise ConfigError(f"unrecognized argument '{extra}'; see --help")
        key, value = extra[2:].split("=", 1)
        items.append(f"{key.replace('-', '_')}={value}")
    overrides = {}
    for item in items:
        key, value = item.split("=", 1)
        overrides[key.strip()] = parse_value(key.strip(), value.strip())
    return overrides


def config_from_args(args: argparse.Namespace, extras: Sequence[str]) -> RunConfig:
    overrides = parse_overrides(args.set, extras)
    if args.data:
        overrides["data"] = args.data
    if args.compile:  # the flag adds to --set compile=true, never overrides it with false
        overrides["compile"] = True
    return resolve(args.preset, args.variant, args.seed, overrides, experiment=args.experiment,
                   device=args.device)


def _print_lists(args: argparse.Namespace) -> None:
    if args.list_settings:
        for key, f in SETTABLE.items():
            print(f"{key:22} default {f.default!r}")
    if args.list_variants:
        for name, exp in experiments().items():
            print(f"{name}:")
            for v in exp.variants:
                print(f"  {v.name:16} {v.adds}")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM (kill, a W&B agent's early termination) ends the run like Ctrl-C


def main(argv: Sequence[str] | None = None) -> int:
    args, extras = build_parser().parse_known_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        if args.list_settings or args.list_variants:
            _print_lists(args)
            return 0
        cfg, corpus = prepare(config_from_args(args, extras))
        results = args.results or cli.default_results()
        if args.dry_run:
            print(cfg.to_json())
            print(f"run folder: {store.RunStore(results).run_dir(cfg.experiment, cfg.run_id)}", file=sys.stderr)
            return 0
        summary = train_run(cfg, results, resume=args.resume, force=args.force, quiet=args.quiet,
                            prepared=(cfg, corpus), wandb=cli.wandb_settings(args))
    except (*USER_ERRORS, RunExistsError, store.RunBusyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the run folder keeps the last checkpoint; rerun with --resume", file=sys.stderr)
        return 130
    except OSError as e:
        print(f"error: {disk_error(e)}", file=sys.stderr)
        return 1
    if not distributed.is_main_process():
        return 0 if summary["status"] in ("completed", "skipped") else 1
    verb = "already recorded" if summary.get("skipped") else summary["status"]
    print(f"{summary['run_id']}: {verb}; val {summary.get('final_val_loss', float('nan')):.4f} "
          f"(best {summary.get('best_val_loss', float('nan')):.4f}) in {summary.get('wall_time_sec', 0):.1f}s "
          f"-> {store.RunStore(results).run_dir(cfg.experiment, cfg.run_id)}")
    return 0 if summary["status"] in ("completed",) else 1


if __name__ == "__main__":
    sys.exit(main())
