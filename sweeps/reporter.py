"""The training-loop callback that reports each eval's val loss to an Optuna trial and prunes."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nanogpt.train import Callback, StopTraining

if TYPE_CHECKING:
    import optuna


class TrialReporter(Callback):
    """Runs after the run recorder, so a pruned run keeps its last eval and checkpoint on disk."""

    def __init__(self, trial: optuna.Trial):
        self.trial = trial
        self.reported: set[int] = set()

    def replay(self, metrics: list[dict[str, Any]]) -> None:
        """Report evals a run folder already holds (a run resumed, or finished before this
        trial)."""
        for m in metrics:
            self._report(m)

    def _report(self, metrics: dict[str, Any]) -> None:
        step, val = metrics["step"], metrics["val_loss"]
        # A non-finite loss is not reported: the loop ends that run as diverged, with its own
        # reason. A step replayed from the folder can come again: a kill between the metrics line
        # and the checkpoint.
        if math.isfinite(val) and step not in self.reported:
            self.trial.report(val, step)
            self.reported.add(step)

    def on_eval(self, metrics: dict[str, Any],
                checkpoint_state: Callable[[], dict[str, Any]]) -> None:
        step, val = metrics["step"], metrics["val_loss"]
        self._report(metrics)
        if math.isfinite(val) and self.trial.should_prune():
            pruner = type(self.trial.study.pruner).__name__
            raise StopTraining("pruned", f"{pruner} pruned it at step {step} (val loss {val:.4f})")
