"""The run-store frames: every run and evaluation, partial and running runs marked, bad files
reported."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from analysis.frame import IDENTITY, METRICS, SUMMARY
from analysis.from_runstore import load_runstore
from experiments import store
from tests.analysis_fixtures import ENV
from tests.conftest import ROOT

# Tests sharing the session's trained smoke ablation and study run on one xdist worker (make test
# -n).
pytestmark = pytest.mark.xdist_group("analysis")


def run_folders(experiment: Path) -> list[Path]:
    return sorted(p.parent for p in experiment.glob("*/config.json"))


def test_one_row_per_run_and_evaluation_with_the_recorded_numbers(smoke_results):
    loaded = load_runstore(smoke_results, "smoke")
    folders = run_folders(smoke_results / "smoke")
    assert loaded.problems == []
    assert len(loaded.runs) == len(folders) == 30
    assert list(loaded.evals.columns[: len(IDENTITY) + len(METRICS)]) == [*IDENTITY, *METRICS]
    assert list(loaded.runs.columns[: len(IDENTITY) + len(SUMMARY)]) == [*IDENTITY, *SUMMARY]
    for folder in folders:
        summary = json.loads((folder / "summary.json").read_text())
        config = json.loads((folder / "config.json").read_text())
        metrics = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        evals = loaded.evals[loaded.evals["run_id"] == folder.name]
        assert evals["val_loss"].tolist() == [m["val_loss"] for m in metrics]
        assert evals["step"].tolist() == [m["step"] for m in metrics]
        assert ((evals["config.n_layer"] == config["n_layer"]).all()
                and (evals["variant"] == config["variant"]).all())
        run = loaded.runs.set_index("run_id").loc[folder.name]
        for key in ("status", "params", "flops_per_token", "initial_train_loss", "initial_val_loss",
                    "final_train_loss", "final_val_loss", "best_val_loss", "best_val_step",
                    "wall_time_sec"):
            assert run[key] == summary[key], (folder.name, key)
        assert run["tokens_per_sec"] == pytest.approx(summary["tokens_per_sec"])
        assert run["env.torch"] == summary["environment"]["torch"]
        assert run["sample"] == (folder / "samples.txt").read_text()


def test_malformed_files_are_reported_by_path_and_skipped(smoke_results, tmp_path):
    experiment = tmp_path / "smoke"
    shutil.copytree(smoke_results / "smoke", experiment)
    bad_config, bad_summary, torn, no_config, bad_sample = run_folders(experiment)[:5]
    (bad_config / "config.json").write_text("{not json")
    (bad_summary / "summary.json").write_text("[1, 2]")
    with (torn / "metrics.jsonl").open("a") as f:
        f.write('{"step": 30, "train_lo')
    (no_config / "config.json").unlink()
    (bad_sample / "samples.txt").write_bytes(b"\xff\xfe not utf-8")

    loaded = load_runstore(tmp_path, "smoke")

    text = "\n".join(loaded.problems)
    for path in (bad_config / "config.json", bad_summary / "summary.json", torn / "metrics.jsonl",
                 no_config / "config.json", bad_sample / "samples.txt"):
        assert str(path) in text
    assert set(loaded.runs["run_id"]) == {p.name for p in run_folders(experiment)} - {
        bad_config.name}
    statuses = loaded.runs.set_index("run_id")["status"]
    assert statuses[bad_summary.name] == "damaged"  # listed, never tabled
    torn_evals = loaded.evals[loaded.evals["run_id"] == torn.name]
    assert torn_evals["step"].tolist() == [0, 10, 20]  # the torn line is dropped, the rest kept
    assert pd.isna(loaded.runs.set_index("run_id").loc[bad_sample.name, "sample"])


def test_a_live_run_is_running_and_a_killed_one_interrupted(tmp_path):
    """A real training process: loaded while it trains, then after SIGKILL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "experiments.run", "--preset", "smoke", "--experiment", "live",
         "--results", tmp_path, "--set", "max_iters=1000000", "--set", "eval_interval=5",
         "--quiet"],
        cwd=ROOT, env={**os.environ, **ENV}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not any(len(p.read_text().splitlines()) >= 2
                      for p in tmp_path.glob("live/*/metrics.jsonl")):
            assert (proc.poll() is None
                    and time.monotonic() < deadline), "the training run did not start"
            time.sleep(0.1)
        running = load_runstore(tmp_path, "live")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed = load_runstore(tmp_path, "live")

    assert running.runs["status"].tolist() == ["running"]
    assert killed.runs["status"].tolist() == ["interrupted"]
    assert killed.runs["evals"].iloc[0] >= 2
    assert killed.runs["final_val_loss"].iloc[0] == killed.evals["val_loss"].iloc[-1]


def test_a_run_without_evaluations_keeps_one_row(smoke_results, tmp_path):
    experiment = tmp_path / "smoke"
    shutil.copytree(smoke_results / "smoke", experiment)
    fresh = run_folders(experiment)[0]
    (fresh / "metrics.jsonl").write_text("")
    for name in (store.CHECKPOINT, store.BEST_CHECKPOINT):  # saved at the first evaluation
        (fresh / name).unlink(missing_ok=True)
    summary = json.loads((fresh / "summary.json").read_text())
    store.write_json(fresh / "summary.json", {k: v for k, v in summary.items() if "loss" not in k} |
                     {"status": "running"})

    loaded = load_runstore(tmp_path, "smoke")

    rows = loaded.evals[loaded.evals["run_id"] == fresh.name]
    assert len(rows) == 1 and rows["step"].isna().all() and rows["status"].tolist() == [
        "interrupted"]
    assert loaded.runs.set_index("run_id").loc[fresh.name, "evals"] == 0


def test_a_missing_experiment_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_runstore(tmp_path, "nope")


def test_analysis_does_not_import_torch():
    code = ("import sys, analysis.report, analysis.figures, analysis.sweep_figures, "
            "analysis.from_wandb, "
            "analysis.from_optuna, analysis.wandb_offline, analysis.wandb_dashboard, "
            "analysis.wandb_layout; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
