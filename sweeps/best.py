"""`<results>/<study>/best.json`: the study's best trial, its config and value, and trial counts.

Written atomically by every worker as it finishes, so the last one out leaves the final word.
A pruned trial's value is only its last report, so the best comes from completed trials only.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from experiments import store

if TYPE_CHECKING:
    import optuna

    from sweeps.kinds import Sweep

BEST = "best.json"


def summarize(study: optuna.Study, sweep: Sweep) -> dict[str, Any]:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    doc: dict[str, Any] = {
        "study": study.study_name, "kind": sweep.kind,
        "states": dict(Counter(t.state.name for t in trials)),
        "outcomes": dict(Counter(t.user_attrs.get("outcome", "none") for t in trials)),
        "best": None,
    }
    if any(t.state == TrialState.COMPLETE for t in trials):
        best = study.best_trial
        run_id = best.user_attrs["run_id"]
        doc["best"] = {"trial": best.number, "value": best.value, "params": best.params,
                       "run_id": run_id, "run_dir": f"{study.study_name}/{run_id}",
                       "command": sweep.command(best.params)}
    return doc


def write(study: optuna.Study, sweep: Sweep, folder: Path) -> dict[str, Any]:
    """Write best.json into the study's results folder, with the best run's full config when it is
    here."""
    doc = summarize(study, sweep)
    if doc["best"]:
        config = folder / doc["best"]["run_id"] / store.CONFIG
        if config.exists():
            doc["best"]["config"] = store.read_run(config.parent).config
    folder.mkdir(parents=True, exist_ok=True)
    store.write_json(folder / BEST, doc)
    return doc
