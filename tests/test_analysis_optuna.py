"""Optuna trials as results frames, and the same columns from all three sources."""

from __future__ import annotations

import shutil

import optuna
import pandas as pd
import pytest

from analysis.frame import IDENTITY, METRICS
from analysis.from_optuna import load_optuna, open_storage
from analysis.from_runstore import load_runstore
from analysis.wandb_offline import load_wandb_offline
from tests.analysis_fixtures import STUDY, mirror_offline

# Tests sharing the session's trained smoke ablation and study run on one xdist worker (make test
# -n).
pytestmark = pytest.mark.xdist_group("analysis")


def test_trials_with_their_state_params_and_intermediate_values(sweep):
    _, storage = sweep
    study = optuna.load_study(study_name=STUDY, storage=storage)

    loaded = load_optuna(storage, STUDY)

    assert loaded.problems == []
    runs = loaded.runs.set_index("config.trial")
    assert runs["status"].tolist() == ["completed", "completed", "pruned", "completed", "failed"]
    for trial in study.trials:
        row = runs.loc[trial.number]
        if trial.state.name == "FAIL":  # failed before its run existed: no run id, no value
            assert "run_id" not in trial.user_attrs and pd.isna(row["run_id"]) and pd.isna(
                row["objective"])
        else:
            assert row["run_id"] == trial.user_attrs["run_id"] and row["objective"] == trial.value
        for name, value in trial.params.items():
            assert row[f"config.{name}"] == value
        evals = loaded.evals[loaded.evals["config.trial"] == trial.number].dropna(subset=["step"])
        assert dict(zip(evals["step"], evals["val_loss"], strict=True)) == trial.intermediate_values
    assert runs.loc[2, "last_step"] == 10  # the pruner stopped it at its first checked report


def test_joined_with_the_run_store_a_trial_has_its_run(sweep):
    results, storage = sweep
    loaded = load_optuna(storage, STUDY, results)
    store = load_runstore(results, STUDY)
    completed = loaded.runs[loaded.runs["status"] == "completed"].set_index("run_id")
    for run_id, run in store.runs.set_index("run_id").iterrows():
        if run["status"] == "completed":
            trial = completed.loc[run_id]
            assert trial["final_val_loss"] == run["final_val_loss"] == trial["objective"]
            assert trial["config.config_hash"] == run["config.config_hash"]
    pruned = loaded.runs[loaded.runs["status"] == "pruned"]
    assert pruned["reason"].str.contains("ThresholdPruner pruned it at step 10").all()


def test_the_three_sources_give_the_same_columns(sweep, tmp_path):
    """The sweep's runs read from the run store, from W&B offline mirrors of them, and from the
    study."""
    results, storage = sweep
    shutil.copytree(results / STUDY, tmp_path / STUDY)
    mirror_offline([run_dir.parent for run_dir in (tmp_path / STUDY).glob("*/config.json")])

    sources = [load_runstore(tmp_path, STUDY), load_wandb_offline(tmp_path / STUDY),
               load_optuna(storage, STUDY, tmp_path)]

    for loaded in sources:
        assert loaded.problems == []
        assert list(loaded.evals.columns) == list(sources[0].evals.columns)
        assert list(loaded.runs.columns) == list(sources[0].runs.columns)
        assert list(loaded.evals.columns[: len(IDENTITY) + len(METRICS)]) == [*IDENTITY, *METRICS]
    assert [set(s.evals["source"]) for s in sources] == [{"runstore"}, {"wandb"}, {"optuna"}]
    for loaded in sources[1:]:  # the same numbers too, run by run
        runs = loaded.runs.dropna(subset=["run_id"]).set_index("run_id").sort_index()
        expected = sources[0].runs.set_index("run_id").sort_index()
        assert runs["final_val_loss"].tolist() == expected["final_val_loss"].tolist()


def test_a_journal_storage_and_bad_specs(tmp_path):
    journal = tmp_path / "sweep.log"
    study = optuna.create_study(study_name="j", storage=open_storage_for_writing(journal))
    study.enqueue_trial({"lr": 0.1})
    study.optimize(lambda t: t.suggest_float("lr", 0.01, 1.0), n_trials=1)

    loaded = load_optuna(str(journal))

    assert loaded.runs["config.lr"].tolist() == [0.1] and loaded.runs["status"].tolist() == [
        "completed"]
    with pytest.raises(FileNotFoundError, match="no such SQLite file"):
        open_storage(f"sqlite:///{tmp_path / 'none.db'}")
    with pytest.raises(FileNotFoundError, match="no such journal file"):
        open_storage(str(tmp_path / "none.log"))
    with pytest.raises(ValueError, match="holds: j"):
        load_optuna(str(journal), "other")


def open_storage_for_writing(path):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(path)))
