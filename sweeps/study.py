"""Create a study once (before any worker starts), and open it from a worker.

Creating twice is safe and is how a sweep resumes: the stored settings must match, and every
point nobody holds any more (a grid point never run, a trial interrupted by Ctrl-C) is enqueued
again, so its run continues from its checkpoint.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from experiments.config import ConfigError
from sweeps import kinds

if TYPE_CHECKING:
    import optuna
    from optuna.storages import BaseStorage


def create(storage: BaseStorage, name: str, sweep: kinds.Sweep,
           points: list[tuple[dict, str]]) -> tuple[optuna.Study, int]:
    """The study (made now, or the existing one if its settings match) and how many trials were
    enqueued.

    `points`: (params, run_id) the study must run (a grid's every point; none for a search).
    """
    import optuna

    study = optuna.create_study(storage=storage, study_name=name, direction="minimize",
                                load_if_exists=True, sampler=sweep.sampler(), pruner=sweep.pruner())
    wanted = kinds.to_attr(sweep)
    stored = study.user_attrs.get(kinds.SPEC_ATTR)
    if stored is None:
        study.set_user_attr(kinds.SPEC_ATTR, wanted)
    elif stored != wanted:
        raise ConfigError(f"study '{name}' already exists with other settings ({stored}); "
                          "give a new --study name, or repeat the original settings to resume it")
    return study, requeue(study, points + interrupted(study))


def open_study(storage: BaseStorage, name: str) -> tuple[optuna.Study, kinds.Sweep]:
    """An existing study and its settings; ConfigError if there is none by that name."""
    import optuna

    try:
        attrs = optuna.load_study(study_name=name, storage=storage).user_attrs
    except KeyError:
        known = optuna.get_all_study_names(storage)
        raise ConfigError(f"no study '{name}' in this storage (it has: "
                          f"{', '.join(known) or 'none'}); create it first: python -m "
                          "sweeps.optuna create --study NAME ...") from None
    if kinds.SPEC_ATTR not in attrs:
        raise ConfigError(f"study '{name}' was not made by sweeps.optuna (no '{kinds.SPEC_ATTR}' "
                          "attribute)")
    sweep = kinds.from_attr(attrs[kinds.SPEC_ATTR], name)
    study = optuna.load_study(study_name=name, storage=storage, sampler=sweep.sampler(),
                              pruner=sweep.pruner())
    return study, sweep


def interrupted(study: optuna.Study) -> list[tuple[dict, str]]:
    """(params, run_id) of trials that failed with no outcome recorded: killed or stopped by
    Ctrl-C."""
    from optuna.trial import TrialState

    return [(t.params, t.user_attrs["run_id"]) for t in study.get_trials(deepcopy=False)
            if t.state == TrialState.FAIL and "outcome" not in t.user_attrs
            and "run_id" in t.user_attrs]


def requeue(study: optuna.Study, points: list[tuple[dict, str]]) -> int:
    """Enqueue each (params, run_id) that no trial holds: none waiting, running or finished with an
    outcome."""
    from optuna.trial import TrialState

    held = {t.user_attrs.get("run_id") for t in study.get_trials(deepcopy=False)
            if t.state != TrialState.FAIL or "outcome" in t.user_attrs}
    todo = {run_id: params for params, run_id in points if run_id not in held}
    for run_id, params in todo.items():
        study.enqueue_trial(params, user_attrs={"run_id": run_id})
    return len(todo)
