"""Train one run and record it: `python -m experiments.run --preset P --variant V --seed S`.

The command line of the runner; the training itself is `experiments.runner.train_run`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from experiments import cli, exits, store
from experiments.config import (
    ConfigError,
    RunConfig,
    inert_notes,
    parse_assignments,
    resolve,
    shown,
    with_flag,
)
from experiments.definitions import experiments
from experiments.machine import check_results, prepare
from experiments.presets import PRESETS
from experiments.runner import USER_ERRORS, train_run
from experiments.settings import DEFAULTS, LABELS, canonical
from nanogpt import distributed


def build_parser() -> argparse.ArgumentParser:
    p = exits.ArgumentParser(
        prog="python -m experiments.run",
        description="Train one variant of the character-level GPT and record it in the run store.",
        epilog="Any setting can also be given as --KEY=VALUE (the form W&B sweep agents pass). "
               "--set changes the "
        "preset; the variant's own switches apply on top. Example: python -m experiments.run "
        "--preset tutorial --variant no_mlp --seed 1 --set lr=3e-4",
    )
    p.add_argument("--preset", default="tutorial",
                   help=f"starting config: {', '.join(PRESETS)} (default tutorial)")
    p.add_argument("--variant",
                   help="EXPERIMENT/VARIANT, or a bare variant name where it is unambiguous (see "
                        "--list-variants); "
                   "default: the preset's full model, run as `full`. A variant that sets a --set "
                   "setting itself refuses the --set")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds init, batches and dropout (default 0)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting; repeatable (see --list-settings)")
    cli.add_store_arguments(p)
    p.add_argument("--experiment", help="experiment folder inside the run store (default adhoc)")
    p.add_argument("--device", help="auto (default: CUDA if available, else the CPU, also on Apple "
                                    "Silicon), cpu, "
                   "cuda, cuda:N, mps (Apple Silicon GPU)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model (pays off on long GPU runs)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from its checkpoint, or repair a run whose "
                   "files disagree where another file proves them; a config with no recorded run "
                   "is refused (nothing to resume)")
    p.add_argument("--resume-or-start", action="store_true",
                   help="continue the run if its folder holds one, else train it from step 0 (what "
                        "a W&B agent "
                   "passes: it starts each run with the same command it would rerun a crashed one "
                   "with)")
    p.add_argument("--force", action="store_true",
                   help="delete an existing run with this config and retrain")
    p.add_argument("--dry-run", action="store_true",
                   help="validate and print the resolved config; train nothing")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    cli.add_wandb_arguments(p)
    p.add_argument("--list-settings", action="store_true",
                   help="print every setting with its default and exit")
    p.add_argument("--list-variants", action="store_true",
                   help="print every variant by experiment and exit")
    return p


def flag_assignments(extras: Sequence[str]) -> list[str]:
    """--KEY=VALUE extras (W&B agents) as KEY=VALUE items."""
    items = []
    for extra in extras:
        if not extra.startswith("--") or "=" not in extra:
            raise ConfigError(f"unrecognized argument '{extra}'; see --help")
        key, value = extra[2:].split("=", 1)
        items.append(f"{key.replace('-', '_')}={value}")
    return items


def config_from_args(args: argparse.Namespace, extras: Sequence[str]) -> RunConfig:
    overrides = parse_assignments([*args.set, *flag_assignments(extras)])
    if args.data:
        overrides = with_flag(overrides, "data", args.data, "--data")
    # the flag and --set compile=false disagree: refused like any setting given twice
    if args.compile:
        overrides = with_flag(overrides, "compile", "true", "--compile")
    # A label given both as a flag and by --set must agree (resolve says so); one given once just
    # works.
    labels = {k: v for k, v in (("experiment", args.experiment),
                                ("device", args.device)) if v is not None}
    cfg = resolve(args.preset, args.variant, args.seed, overrides, **labels)
    flat = cfg.flat()
    for note in inert_notes(flat | {k: v for k, v in overrides.items() if k in flat}, overrides):
        print(note, file=sys.stderr)
    return cfg


def check_resumable(cfg: RunConfig, results: Path) -> None:
    """--resume of a config no run was recorded for: ConfigError naming its run id and the variant's
    nearest recorded runs (fewest settings that differ), instead of silently training it from step
    0."""
    runs = store.RunStore(results)
    if runs.run_dir(cfg.experiment, cfg.run_id).exists():
        return
    ours = json.loads(json.dumps(cfg.flat()))  # as config.json holds it
    near = []
    for path in runs.experiment_dir(cfg.experiment).glob(f"{cfg.variant}-s*/{store.CONFIG}"):
        try:
            theirs = {
                canonical(k): v for k, v in json.loads(path.read_text(encoding="utf-8")).items()}
        except (OSError, ValueError, AttributeError):
            continue
        differ = [
            f"{k}={shown(theirs.get(k))}" for k, v in ours.items()
            if k not in LABELS and theirs.get(k) != v]
        near.append((len(differ), path.parent.name, differ))
    recorded = "; ".join(f"{run_id} has {', '.join(differ[:3]) or 'only other labels'}"
                         for _, run_id, differ in sorted(near)[:3])
    where = runs.experiment_dir(cfg.experiment)
    raise ConfigError(f"--resume: nothing to resume for this config: run {cfg.run_id} has no "
                      f"folder in {where}"
                      + (f"; recorded runs of {cfg.variant} there: {recorded}" if recorded else "")
                      + "; give the settings of the run to resume, or drop --resume to train this "
                        "one from step 0")


def _print_lists(args: argparse.Namespace) -> None:
    if args.list_settings:
        for key, default in DEFAULTS.items():
            print(f"{key:22} default {default!r}")
    if args.list_variants:
        for name, exp in experiments().items():
            print(f"{name}:")
            for v in exp.variants:
                print(f"  {name}/{v.name:16} {v.adds}")


def main(argv: Sequence[str] | None = None) -> int:
    args, extras = build_parser().parse_known_args(argv)
    return exits.run_command(lambda: _run(args, extras), USER_ERRORS,
                             "the run folder keeps the last checkpoint; rerun with --resume")


def _run(args: argparse.Namespace, extras: Sequence[str]) -> int:
    results = args.results or cli.default_results()
    if args.list_settings or args.list_variants:
        _print_lists(args)
        return 0
    if args.force and (args.resume or args.resume_or_start):
        given = "--resume" if args.resume else "--resume-or-start"
        raise ConfigError(f"{given} and --force contradict each other: {given} keeps the "
                          "recorded run (continuing or repairing it), --force deletes it and "
                          "trains it again; give one")
    wandb = cli.wandb_settings(args)  # a bad WANDB_MODE is refused before anything is written
    ready = prepare(config_from_args(args, extras))
    cfg = ready.cfg
    check_results(results)
    if args.dry_run:
        print(cfg.to_json())
        print(f"run folder: {store.RunStore(results).run_dir(cfg.experiment, cfg.run_id)}",
              file=sys.stderr)
        return 0
    if args.resume:
        check_resumable(cfg, results)
    summary = train_run(cfg, results, resume=args.resume or args.resume_or_start, force=args.force,
                        quiet=args.quiet, prepared=ready, wandb=wandb)
    if not distributed.is_main_process():
        return 0 if summary["status"] in ("completed", "skipped") else 1
    verb = "already recorded" if summary.get("skipped") else summary["status"]
    print(f"{summary['run_id']}: {verb}; val {summary.get('final_val_loss', float('nan')):.4f} "
          f"(best {summary.get('best_val_loss', float('nan')):.4f}) in "
          f"{summary.get('wall_time_sec', 0):.1f}s -> "
          f"{store.RunStore(results).run_dir(cfg.experiment, cfg.run_id)}")
    return 0 if summary["status"] in ("completed",) else 1


if __name__ == "__main__":
    sys.exit(main())
