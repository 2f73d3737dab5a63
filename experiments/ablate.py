"""Run experiment definitions over seeds: `python -m experiments.ablate --preset tutorial --seeds
3`.

The main job behind `make ablate`. It plans every (experiment, variant, point, seed) run,
records the plan in the experiment manifest (merged with what the folder already records), then
trains what is missing in parallel worker processes:

- cached: a run whose folder already holds a finished run is skipped (`--force` retrains);
- resumable: a half-finished run continues from its checkpoint, so killing this command and
  starting it again trains only what is missing;
- deduplicated: a config that two experiments share (the ladder's last rung and the
  leave-one-out baseline are both `full`; the ladder's `layernorm` rung is `no_gpt2_init`) has
  one config hash, one run folder, one training;
- shared: a run another process trains now (a second ablation on the same results folder) is waited
  for and then taken as that process finished it.

Ctrl-C or SIGTERM stops every worker's run, marked interrupted in its folder, and exits 130 once the
workers are gone (experiments.exits).

Each worker trains with `cores // jobs` torch threads so parallel runs never oversubscribe the CPU;
on a CUDA machine several workers share each GPU, pinned round-robin (experiments.placement).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from tqdm import tqdm

from experiments import axes, cli, exits, manifest, placement, store
from experiments.config import ConfigError, RunConfig, parse_assignments, with_flag
from experiments.definitions import get_experiment
from experiments.ensemble import train_group
from experiments.grouping import EnsembleMode, Group, Grouping, Timer, describe_groups, group
from experiments.machine import check_results, default_jobs
from experiments.plan import Plan, default_preset, describe_plan, kept_notes, plan, same_model_note
from experiments.presets import PRESETS
from experiments.runner import USER_ERRORS, train_run
from experiments.wandb_mirror import WandbSettings
from nanogpt.data import Corpus

DEFAULT_EXPERIMENTS = ("ladder", "leave_one_out")
OFF = EnsembleMode("off")


def _die_with_parent(parent: int) -> None:
    """Linux: ask the kernel to SIGKILL this worker when the parent dies, even by SIGKILL."""
    # Elsewhere the per-run lock still keeps an orphan from corrupting a run.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    # A parent killed while this worker was still starting (importing torch takes seconds) sent no
    # signal: the worker is already an orphan and must not wait for work that never comes.
    if os.getppid() != parent:
        os._exit(1)


# In a worker: whether it trains a run now (the one time SIGTERM has something to stop), and whether
# it was stopped.
_training = _stopped = False


def _stop_run(signum: int, frame: Any) -> None:
    """SIGTERM in a worker (from the interrupted parent, or a scheduler's to every process): the run
    in flight ends as on Ctrl-C, marked interrupted; an idle worker starts no run: the next one
    handed to it stops the ablation as the signal would have."""
    global _training, _stopped
    _stopped = True
    if _training:
        # a second SIGTERM (parent and scheduler both send one) must not cut the record short
        _training = False
        raise KeyboardInterrupt


def _init_worker(where: placement.Placement, started: Any, parent: int) -> None:
    signal.signal(signal.SIGTERM, _stop_run)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the pool
    # Started with both held (`exits.signals_held`): one that came while this worker imported is
    # delivered now, to its handler, instead of killing it and breaking the pool.
    exits.release_signals()
    _die_with_parent(parent)
    with started.get_lock():  # the i-th worker to start takes GPU i mod N
        worker, started.value = started.value, started.value + 1
    gpu = where.gpu_of(worker)
    if gpu is not None:  # before torch touches CUDA: this worker then sees one GPU, as cuda:0
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    import torch

    torch.set_num_threads(where.threads)


def _train_group(group: Group, results: Path, force: bool,
                 wandb: WandbSettings) -> list[dict[str, Any]]:
    """Train one group of planned runs (one run, or an ensemble: experiments.ensemble); a summary
    per run."""
    global _training
    if _stopped:  # stopped before this group began: the ablation stops, as on its own signal
        raise KeyboardInterrupt
    started, _training = time.perf_counter(), True
    try:
        try:
            summaries = train_group(group, results, force=force, wandb=wandb)
        # another process (a second ablation) trains one of them now: one by one
        except store.RunBusyError:
            summaries = [_train_one(cfg, results, force, wandb) for cfg in group]
    except Exception as e:  # noqa: BLE001 - one broken run must not stop the others; it is recorded
        return [{"run_id": cfg.run_id, "status": "failed", "reason": f"{type(e).__name__}: {e}"}
                for cfg in group]
    finally:
        _training = False
    return [summary | {"seconds": time.perf_counter() - started} for summary in summaries]


def _train_one(cfg: RunConfig, results: Path, force: bool, wandb: WandbSettings) -> dict[str, Any]:
    """Train one run; a run another process trains now is waited for, then taken as it finished it
    (or resumed if it stopped short). Its run is as fresh as --force asks."""
    while True:
        try:
            return train_run(cfg, results, resume=True, force=force, quiet=True, wandb=wandb)
        except store.RunBusyError:
            _wait_for_other(store.RunStore(results).run_dir(cfg.experiment, cfg.run_id))
            force = False


def _wait_for_other(run_dir: Path, poll_sec: float = 0.5) -> None:
    while store.lock_held(run_dir):
        time.sleep(poll_sec)


def execute(p: Plan, results: Path, jobs: int | None = None, force: bool = False,
            wandb: WandbSettings | None = None, ensemble: EnsembleMode = OFF,
            corpus: Corpus | None = None) -> list[dict[str, Any]]:
    """Train every planned run not yet finished; returns one summary per run, in plan order.

    `jobs` None: the machine's default (experiments.placement: one per core, or several per GPU).
    Runs that may share an ensemble train as `ensemble` says (experiments.grouping; `auto` times
    steps on `corpus`).
    """
    todo, done = _todo(p, results, force)
    where = placement.for_runs(p.runs, jobs)
    jobs = where.jobs
    grouping = plan_groups(p, todo, ensemble, where, corpus)
    for note in grouping.notes:
        print(f"ensemble ({ensemble}): {note}", file=sys.stderr)
    shared = sum(len(g) > 1 for g in grouping.groups)
    print(f"{len(p.runs)} runs planned in {p.folder}: {len(done)} already finished, {len(todo)} to "
          f"train ({where.describe()}" + (f"; {shared} ensembles" if shared else "") + ")",
          file=sys.stderr, flush=True)
    bar = tqdm(total=len(p.runs), initial=len(done), unit="run", dynamic_ncols=True,
               disable=not sys.stderr.isatty())
    # Fresh interpreters (spawn), not forks: nothing of this process (OpenMP pools, a W&B service)
    # leaks into the workers; each imports torch once and trains many runs.
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=spawn, initializer=_init_worker,
                             initargs=(where, spawn.Value("i", 0), os.getpid())) as pool:
        pending: dict[Future, Group] = {}
        queue = list(grouping.groups)
        try:
            while queue or pending:
                while queue and len(pending) < jobs:
                    g = queue.pop(0)
                    with exits.signals_held():  # a submit may start a worker: it inherits them
                        pending[pool.submit(_train_group, g, results, force, wandb)] = g
                bar.set_description(", ".join(_label(g) for g in pending.values()))
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    for cfg, summary in zip(pending.pop(future), future.result(), strict=True):
                        done[cfg.run_id] = summary
                        bar.update()
                        _report(len(done), len(p.runs), cfg, summary, bar)
        except KeyboardInterrupt:  # a signal to this process, or a stopped worker's
            exits.stopping()
            for future in pending:
                future.cancel()
            _stop_workers()  # their runs record 'interrupted'
            # before the interrupted line: the workers are gone
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        except BrokenProcessPool:
            for future in pending:
                future.cancel()
            raise
        finally:
            bar.close()
    return [done[c.run_id] for c in p.runs]


def _todo(p: Plan, results: Path, force: bool) -> tuple[list[RunConfig], dict[str, dict[str, Any]]]:
    """The planned runs to train, and a 'cached' summary of each finished one (--force: none is)."""
    runs = store.RunStore(results)
    cached = set() if force else {c.run_id for c in p.runs if runs.finished(c.experiment, c.run_id)}
    return [c for c in p.runs if c.run_id not in cached], {r: {"run_id": r, "status": "cached"}
                                                           for r in cached}


def plan_groups(p: Plan, todo: Sequence[RunConfig], mode: EnsembleMode, where: placement.Placement,
                corpus: Corpus | None = None) -> Grouping:
    """How the runs to train are grouped (auto: measured on this machine, with the threads a worker
    gets)."""
    timer = None
    if mode.kind == "auto" and todo:
        timer = Timer(corpus or Corpus.load(todo[0].data), p.device, where.threads)
    return group(todo, mode, where.jobs, timer)


def _label(g: Group) -> str:
    return f"{g[0].variant} s{g[0].seed}" if len(g) == 1 else f"{g[0].variant} x{len(g)}"


def _stop_workers() -> None:
    for worker in multiprocessing.active_children():
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, signal.SIGTERM)


def _report(n_done: int, total: int, cfg: RunConfig, summary: dict[str, Any], bar: tqdm) -> None:
    val = summary.get("final_val_loss")
    detail = f"val {val:.4f}" if isinstance(val, float) else summary.get("reason") or ""
    line = (f"[{n_done}/{total}] {cfg.group}/{cfg.variant} seed {cfg.seed}: {summary['status']} "
            f"{detail}")
    # it was not finished when planned: another process finished it meanwhile
    if summary.get("skipped"):
        line += " (trained by another process)"
    if "seconds" in summary:
        together = summary.get("ensemble") or {}
        line += (f" ({summary['seconds']:.1f}s" + (f", ensemble of {together['size']})" if together
                                                   else ")"))
    if bar.disable:
        print(line, file=sys.stderr, flush=True)
    else:
        bar.write(line, file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    p = exits.ArgumentParser(
        prog="python -m experiments.ablate",
        description="Train experiment definitions (default: the ladder and leave-one-out) over "
                    "several seeds, "
        "in parallel, skipping runs already recorded and resuming interrupted ones.",
    )
    p.add_argument("--preset", help=f"{', '.join(PRESETS)} (default: the experiments' own, "
                                    "tutorial for the "
                   "ladder and leave-one-out)")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds, 0..N-1 (default 3)")
    p.add_argument("--experiments", nargs="+", default=list(DEFAULT_EXPERIMENTS), metavar="NAME",
                   help="experiment definitions to run (default: ladder leave_one_out; see "
                   "`python -m experiments.run --list-variants`)")
    p.add_argument("--jobs", type=int, default=None,
                   help=f"parallel runs (default: the core count, {default_jobs()}; on a CUDA "
                        "machine "
                   f"{placement.RUNS_PER_GPU} per GPU, at most one per core)")
    p.add_argument("--name", help="experiment folder inside the run store (default: the preset's "
                                  "name)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="change the base model (the preset) before the variants apply; a setting a "
                        "variant sets "
                   "itself keeps the variant's value")
    axes.add_arguments(p, "train every variant (the point at the preset's value is today's run)")
    cli.add_store_arguments(p)
    p.add_argument("--force", action="store_true", help="retrain runs that are already recorded")
    p.add_argument("--ensemble", default="auto", metavar="auto|off|N",
                   help="train the runs of one architecture (its seeds, its lrs) as one batched "
                        "ensemble, each run "
                   "recorded as itself with the numbers it has alone: auto (default: where this "
                   "machine measures that it pays), off, or groups of at most N")
    cli.add_wandb_arguments(p)
    p.add_argument("--print-folder", action="store_true",
                   help="print the experiment folder these arguments use (what `make ablate` "
                        "reports on) and exit")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (every run, its config hash, how it differs from the base "
                        "model, cached or "
                   "shared) and exit; writes nothing")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return exits.run_command(lambda: _ablate(args), USER_ERRORS,
                             "finished runs are kept; run the same command again to train only "
                             "what is missing")


def _ablate(args: argparse.Namespace) -> int:
    results = args.results or cli.default_results()
    if args.seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {args.seeds}")
    if args.jobs is not None and args.jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {args.jobs}")
    if args.print_folder:
        preset = args.preset or default_preset([get_experiment(e) for e in args.experiments])
        print(store.RunStore(results).experiment_dir(args.name or preset))
        return 0
    wandb = cli.wandb_settings(args)  # a bad WANDB_MODE is refused before anything is written
    overrides = parse_assignments(args.set)
    if args.data:
        overrides = with_flag(overrides, "data", args.data, "--data")
    ensemble = EnsembleMode.parse(args.ensemble)
    p, corpus = plan(args.preset, range(args.seeds), args.experiments, results, args.name,
                     overrides, axes.given(args))
    check_results(results)
    manifest.merged_into(p.folder, p.manifest)  # a plan the folder cannot record is refused here
    if args.dry_run:
        print(describe_plan(p, results))
        todo, _ = _todo(p, results, args.force)
        where = placement.for_runs(p.runs, args.jobs)
        print(describe_groups(plan_groups(p, todo, ensemble, where, corpus), ensemble))
        return 0
    manifest.record(p.folder, p.manifest)
    # what --dry-run says, said before training too: no --set is dropped silently
    for v in p.variants:
        notes = [same_model_note(v)] if v.same_as else []
        notes += [f"{v.experiment}/{v.name}: {note}"
                  for note in kept_notes(v, p.manifest["overrides"])]
        notes += v.inert
        for note in notes:
            print(note, file=sys.stderr)
    try:
        summaries = execute(p, results, args.jobs, args.force, wandb, ensemble, corpus)
    except BrokenProcessPool:
        raise exits.CommandFailed("a worker process died (killed or out of memory); run the same "
                                  "command again to resume") from None
    counts: dict[str, int] = {}
    for s in summaries:
        counts[s["status"]] = counts.get(s["status"], 0) + 1
    print(f"{p.folder}: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())),
          file=sys.stderr)
    return 0 if set(counts) <= {"completed", "cached", "diverged"} else 1


if __name__ == "__main__":
    sys.exit(main())
