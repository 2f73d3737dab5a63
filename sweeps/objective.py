"""The objective: a trial's config, trained by the ordinary runner, its final val loss returned.

Every trial records an `outcome` user attr (completed, pruned, diverged, invalid, failed, skipped)
and, when it did not complete, a `reason`. A diverged or invalid trial fails with its reason and
the study goes on; the run folder keeps the whole story either way. Such an ending is told in one
line (`trial 3 skipped: n_embd (48) must be divisible by n_head (5); ...`), and Optuna's own warning
with its traceback for that trial is left out, as it is for a trial stopped by Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from experiments import store
from experiments.config import ConfigError
from experiments.runner import USER_ERRORS, train_run
from experiments.wandb_mirror import WandbSettings
from sweeps.kinds import BoundGrid, BoundSearch, NotAGridPoint
from sweeps.reporter import TrialReporter

if TYPE_CHECKING:
    import optuna


class TrialFailed(Exception):  # noqa: N818 - an outcome the worker expects, caught by study.optimize
    """The trial ended without a value, for the reason recorded in its user attrs."""


class _ToldTrials(logging.Filter):
    """Drops Optuna's "Trial N failed ..." warnings for the trials whose ending was already told."""

    def __init__(self) -> None:
        super().__init__()
        self.told: set[int] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        failed = re.match(r"Trial (\d+) failed", record.getMessage())
        return not (failed and int(failed.group(1)) in self.told)


_TOLD = _ToldTrials()  # one per process: a worker process works on one study


class Objective:
    def __init__(self, bound: BoundGrid | BoundSearch, results: Path,
                 wandb: WandbSettings | None = None, quiet: bool = False):
        self.bound, self.results, self.wandb, self.quiet = bound, results, wandb, quiet
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        # where study.optimize logs a failure
        logging.getLogger("optuna.study._optimize").addFilter(_TOLD)

    def __call__(self, trial: optuna.Trial) -> float:
        try:
            return self._train(trial)
        except TrialFailed as e:
            print(f"trial {trial.number} {e}", file=sys.stderr, flush=True)
            _TOLD.told.add(trial.number)
            raise
        except KeyboardInterrupt:  # the command's one `interrupted:` line tells it
            _TOLD.told.add(trial.number)
            raise

    def _train(self, trial: optuna.Trial) -> float:
        import optuna

        trial.set_user_attr("worker", self.worker)
        try:
            ready = self.bound.config(trial)
        except NotAGridPoint:
            self._record(trial, "skipped", "no grid point left: another worker took the last one")
            raise optuna.TrialPruned("no grid point left") from None
        except ConfigError as e:
            raise self._failed(trial, "invalid", str(e), "skipped") from None
        cfg = ready.cfg
        trial.set_user_attr("run_id", cfg.run_id)
        reporter = TrialReporter(trial)
        # A resumed (or already finished) run: report what its folder holds, so the curve is whole.
        reporter.replay(store.read_jsonl(store.RunStore(self.results).run_dir(cfg.experiment,
                                                                              cfg.run_id)
                                         / store.METRICS)[0])
        try:
            summary = train_run(cfg, self.results, resume=True, callbacks=[reporter],
                                quiet=self.quiet, prepared=ready, wandb=self.wandb)
        except USER_ERRORS as e:
            raise self._failed(trial, "failed", f"{type(e).__name__}: {e}") from None
        status, reason = summary["status"], summary.get("reason")
        if summary.get("skipped"):
            trial.set_user_attr("cached", True)  # the run store already held this finished run
        if status == "pruned":
            self._record(trial, status, reason)
            raise optuna.TrialPruned(reason)
        if status != "completed":
            raise self._failed(trial, status, reason or status)
        self._record(trial, status, None)
        return summary["final_val_loss"]

    @staticmethod
    def _record(trial: optuna.Trial, outcome: str, reason: str | None) -> None:
        trial.set_user_attr("outcome", outcome)
        if reason:
            trial.set_user_attr("reason", reason)

    @staticmethod
    def _failed(trial: optuna.Trial, outcome: str, reason: str,
                told_as: str | None = None) -> TrialFailed:
        """`told_as`: the word for the outcome in the line that tells it (an invalid trial is
        skipped)."""
        Objective._record(trial, outcome, reason)
        return TrialFailed(f"{told_as or outcome}: {reason}")
