"""One worker: take trials one at a time until the study needs no more.

Each trial goes through `study.optimize(n_trials=1)`, the one path on which Optuna beats a
heartbeat for the running trial. Before each, the worker fails the trials whose heartbeat went
silent (their worker was killed); the storage's retry callback enqueues each again with the same
params, so the next free worker resumes its run from the checkpoint.

A worker stops when nothing is waiting, no new trial is due (the grid is drained, or the search has
its n_trials outcomes) and, where heartbeats can tell a dead worker from a slow one, nothing is
running. Two workers can both see the last free slot; a grid objective then records its extra,
empty trial as "skipped", and a search runs one trial more than n_trials.
"""

from __future__ import annotations

import time
import warnings
from collections import Counter
from typing import TYPE_CHECKING

from sweeps.objective import Objective, TrialFailed

if TYPE_CHECKING:
    import optuna

    from sweeps.kinds import Sweep


def work(study: optuna.Study, sweep: Sweep, objective: Objective, poll_sec: float | None) -> int:
    """Run trials until the study is done; returns how many this worker ran.

    `poll_sec`: how often to look at trials other workers are running; None where the storage has
    no heartbeats (a journal file), as a dead worker's trial then looks like a live one forever.
    """
    import optuna
    from optuna.storages import fail_stale_trials
    from optuna.trial import TrialState

    ran = 0
    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        states = Counter(t.state for t in trials)
        if states[TrialState.WAITING] or sweep.new_trials_left(trials) > states[TrialState.RUNNING]:
            study.optimize(objective, n_trials=1, catch=(TrialFailed,))
            ran += 1
        elif states[TrialState.RUNNING] and poll_sec is not None:
            time.sleep(poll_sec)  # a running trial may yet go stale and come back as waiting
        else:
            return ran
