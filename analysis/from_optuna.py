"""Load the trials of an Optuna study: state, params, intermediate values, objective.

Without a run store, a trial's evaluations are its intermediate values (in the column of the study's
metric, `val_loss` unless the study names another) and its config columns are its params plus
`trial` and `study`. Given the run store (`results`), each trial is joined with its run folder,
found by the `run_id` in the trial's user_attrs: the full config, every metric and the run-level
facts then come from the run, so the columns equal those of the other sources.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from analysis.frame import Results, RunData, build
from analysis.from_runstore import run_data
from experiments import store

TRIAL_STATUS = {"COMPLETE": "completed", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running",
                "WAITING": "waiting"}


def open_storage(spec: str) -> Any:
    """An existing Optuna storage: a database URL (sqlite:///sweep.db, postgresql://...) or a
    journal file's path, opened the way the sweeps open it (one place knows the drivers and hides
    passwords)."""
    from sweeps import storage

    return storage.open_existing(spec)


def load_study(storage: Any, study: str | None = None) -> Any:
    """The named study, or the only one in the storage."""
    import optuna

    names = optuna.get_all_study_names(storage)
    if study is None and len(names) == 1:
        study = names[0]
    if study not in names:
        raise ValueError(f"study {study!r} is not in the storage; it holds: "
                         f"{', '.join(names) or 'no study'}")
    return optuna.load_study(study_name=study, storage=storage)


def load_optuna(storage: Any, study: str | None = None, results: Path | str | None = None,
                metric: str | None = None) -> Results:
    """One frame row per trial x reported step; `storage` is a spec for `open_storage` or a storage
    object."""
    if isinstance(storage, str):
        storage = open_storage(storage)
    loaded = load_study(storage, study)
    metric = metric or (loaded.metric_names[0] if loaded.metric_names else "val_loss")
    data, problems = [], []
    for trial in loaded.get_trials(deepcopy=False):
        run_id = trial.user_attrs.get("run_id")
        where = f"study {loaded.study_name} trial {trial.number}"
        config = trial.params | {"trial": trial.number, "study": loaded.study_name}
        objective = trial.values[0] if trial.values else None
        run = _linked_run(Path(results), run_id, problems) if results and run_id else None
        if run:
            data.append(RunData("optuna", f"{where} ({run.location})", config | run.config,
                                run.summary | {"objective": objective}, run.history, run.sample,
                                run.fallback))
            continue
        status = TRIAL_STATUS.get(trial.state.name, trial.state.name.lower())
        history = [{"step": step,
                    metric: value} for step, value in sorted(trial.intermediate_values.items())]
        data.append(RunData("optuna", where, config, {"status": status, "objective": objective},
                            history, None, {"run_id": run_id, "experiment": loaded.study_name}))
    return build(data, problems)


def _linked_run(results: Path, run_id: str, problems: list[str]) -> RunData | None:
    folders = sorted(results.glob(f"*/{run_id}"))
    if not folders:
        problems.append(f"{results}: no run folder for trial run {run_id}; showing the trial's own "
                        "record")
        return None
    try:
        return run_data(store.read_run(folders[0]), problems)
    except ValueError as e:
        problems.append(f"{e}; showing the trial's own record")
        return None
