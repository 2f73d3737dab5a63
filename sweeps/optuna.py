"""Optuna studies over the runner: `python -m sweeps.optuna run --study NAME --space
sweeps/search_space.yaml`.

    run     create the study (or resume it) and train it with --workers local worker processes
    create  create the study once, before workers elsewhere start (a fresh database's tables and
            the grid queue are made here, not raced for by several workers)
    worker  one more worker on an existing study, on any machine that reaches its storage

Every trial is an ordinary run in `<results>/<study>/`; the study's best goes to best.json there.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from experiments import axes, cli, exits, store
from experiments.config import ConfigError, parse_assignments, with_flag
from experiments.definitions import DefinitionError, get_experiment
from experiments.machine import check_results, default_jobs
from experiments.plan import default_preset
from experiments.presets import PRESETS
from experiments.runner import USER_ERRORS
from experiments.settings import check_name
from sweeps import best, kinds, space, storage, study
from sweeps.objective import Objective
from sweeps.worker import work

EXPECTED_ERRORS = (*USER_ERRORS, DefinitionError, space.SpaceError, storage.StorageError)


def build_parser() -> argparse.ArgumentParser:
    p = exits.ArgumentParser(prog="python -m sweeps.optuna", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Storage: --storage URL or $NANOGPT_SWEEP_STORAGE; default "
                                       "a SQLite file "
                                "in the study's results folder. sqlite:///FILE, "
                                "postgresql://USER@HOST:PORT/DB (password in PGPASSWORD or "
                                "~/.pgpass), or a journal file path.")
    commands = p.add_subparsers(dest="command", required=True)
    for name, help_text in (("run", "create or resume a study and train it with local workers"),
                            ("create", "create a study (and its queue) before starting workers"),
                            ("worker", "work on an existing study until it is done")):
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--study", required=True,
                         help="study name; also its folder in the run store")
        sub.add_argument("--storage", help="study storage (default: $NANOGPT_SWEEP_STORAGE, else "
                         "<results>/<study>/optuna.db)")
        cli.add_results_argument(sub)
        if name != "worker":
            _add_study_settings(sub)
        if name != "create":
            _add_worker_settings(sub, run=name == "run")
        if name == "worker":  # `run` speaks for the workers it starts: one interrupted line in all
            sub.add_argument("--started-by-run", action="store_true", help=argparse.SUPPRESS)
    return p


def _add_study_settings(sub: argparse.ArgumentParser) -> None:
    kind = sub.add_mutually_exclusive_group(required=True)
    kind.add_argument("--grid", nargs="+", metavar="EXPERIMENT",
                      help="ablation grid: every variant x seed of these experiment definitions "
                           "(e.g. ladder)")
    kind.add_argument("--space", type=Path, metavar="FILE",
                      help="hyperparameter search over a search-space YAML (e.g. "
                           "sweeps/search_space.yaml)")
    sub.add_argument("--preset", help=f"{', '.join(PRESETS)} (grid: the experiments' own; search: "
                                      "the space file's)")
    sub.add_argument("--seeds", type=int, default=3, help="grid: seeds 0..N-1 (default 3)")
    axes.add_arguments(sub, "grid: every variant x seed")
    sub.add_argument("--n-trials", type=int, help="search: number of trials (default: the space "
                                                  "file's)")
    sub.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="fix a setting for every trial; repeatable")
    cli.add_data_argument(sub)


def _add_worker_settings(sub: argparse.ArgumentParser, run: bool) -> None:
    if run:
        sub.add_argument("--workers", type=int, default=default_jobs(),
                         help=f"local worker processes (default: the core count, {default_jobs()})")
    sub.add_argument("--threads", type=int, help="torch threads per worker (default: run shares "
                                                 "the cores "
                     "among its workers; a lone worker keeps torch's default)")
    sub.add_argument("--heartbeat", type=int, default=storage.Heartbeat.interval, metavar="SEC",
                     help="database storages: heartbeat interval (default "
                          f"{storage.Heartbeat.interval})")
    sub.add_argument("--grace", type=int, default=storage.Heartbeat.grace, metavar="SEC",
                     help="database storages: a running trial silent this long is failed and "
                          "retried "
                     f"(default {storage.Heartbeat.grace})")
    cli.add_wandb_arguments(sub)  # each trial's run: group = the study, job_type sweep
    sub.add_argument("--quiet", action="store_true", help="no per-eval progress lines")


def sweep_from_args(args: argparse.Namespace) -> kinds.Sweep:
    overrides = parse_assignments(args.set)
    if args.data:
        overrides = with_flag(overrides, "data", args.data, "--data")
    if args.grid:
        if args.seeds < 1:
            raise ConfigError(f"--seeds must be at least 1, got {args.seeds}")
        preset = args.preset or default_preset([get_experiment(e) for e in args.grid])
        return kinds.GridSweep(preset, tuple(args.grid), tuple(range(args.seeds)), overrides,
                               axes.given(args))
    given = [a for a in axes.AXES if getattr(args, a.plural)]
    if given:
        raise ConfigError(f"{given[0].flag} is an axis of a --grid study; a --space search tunes "
                          f"{given[0].setting} in its space file")
    raw = space.load(args.space).to_dict()
    raw["set"] |= overrides
    raw["preset"] = args.preset or raw["preset"]
    raw["n_trials"] = args.n_trials or raw["n_trials"]
    return kinds.SearchSweep(space.parse(raw, str(args.space)))


def create(args: argparse.Namespace, spec: str, results: Path) -> None:
    sweep = sweep_from_args(args)
    # a grid plans (and so validates) every run before any storage
    points = sweep.points(args.study, results)
    made, enqueued = study.create(storage.open_storage(spec), args.study, sweep, points)
    print(f"study '{args.study}' ({sweep.kind}) in {storage.display_name(spec)}: "
          f"{len(made.trials)} trials, {enqueued} enqueued now", file=sys.stderr, flush=True)


def worker(args: argparse.Namespace, spec: str, results: Path, folder: Path) -> None:
    beats = storage.Heartbeat(args.heartbeat, args.grace) if storage.is_url(spec) else None
    opened, sweep = study.open_study(storage.open_storage(spec, beats), args.study)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    objective = Objective(sweep.bind(args.study, results), results, cli.wandb_settings(args),
                          args.quiet)
    ran = work(opened, sweep, objective, beats.interval if beats else None)
    doc = best.write(opened, sweep, folder)
    top = doc["best"]
    print(f"worker {objective.worker} ran {ran} trials; study '{args.study}': {doc['outcomes']}; "
          "best "
          + (f"trial {top['trial']} val {top['value']:.4f} ({top['run_id']})" if top
             else "none yet")
          + f" -> {folder / best.BEST}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace, spec: str, results: Path) -> int:
    """Create or resume the study, then train it with local worker processes sharing the cores."""
    if args.workers < 1 or (args.threads or 1) < 1:
        raise ConfigError("--workers and --threads must be at least 1")
    create(args, spec, results)
    threads = args.threads or max(1, default_jobs() // args.workers)
    command = [sys.executable, "-m", "sweeps.optuna", "worker", "--study", args.study, "--results",
               str(results), "--threads", str(threads), "--heartbeat", str(args.heartbeat),
               "--grace", str(args.grace)]
    command += ["--started-by-run"]
    command += ["--wandb", args.wandb,
                *(["--wandb-project", args.wandb_project] if args.wandb_project else [])]
    command += ["--quiet"] if args.quiet else []
    # The storage goes in the environment: a password in it stays off every command line (ps).
    env = os.environ | {storage.STORAGE_ENV: spec}
    workers = [subprocess.Popen(command, env=env) for _ in range(args.workers)]
    try:
        codes = [w.wait() for w in workers]
    except KeyboardInterrupt:
        for w in workers:  # a terminal's Ctrl-C reached them too, a SIGTERM to this process did not
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        codes = [w.wait() for w in workers]  # each records its trial as interrupted first
        raise
    return 0 if not any(codes) else 1  # a worker killed by a signal has a negative code


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats
    spec = [args.storage or ""]  # known once chosen: every message is redacted with it
    # An OSError (a full disk, a read-only results folder) ends with exit 1: the trial is requeued
    # on a rerun.
    resume = ("run the same command again to resume; interrupted trials continue from their "
              "checkpoints")
    return exits.run_command(lambda: _sweep(args, spec), EXPECTED_ERRORS,
                             None if getattr(args, "started_by_run", False) else resume,
                             lambda text: storage.redact(text, spec[0]))


def _sweep(args: argparse.Namespace, spec: list[str]) -> int:
    import sqlalchemy.exc

    results = args.results or cli.default_results()
    check_name("study", args.study)
    check_results(results)
    folder = store.RunStore(results).experiment_dir(args.study)
    spec[0] = storage.choose(args.storage, folder)
    storage.check(spec[0], folder)
    try:
        if args.command == "create":
            create(args, spec[0], results)
        elif args.command == "worker":
            worker(args, spec[0], results, folder)
        else:
            return run(args, spec[0], results)
    except sqlalchemy.exc.SQLAlchemyError as e:  # the database went away mid-study
        raise exits.CommandFailed(f"storage {storage.display_name(spec[0])}: "
                                  f"{str(e).splitlines()[0]}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
