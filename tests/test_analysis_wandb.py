"""W&B runs, read back from real offline run files through W&B's own CLI and public `Run` class."""

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

from analysis.from_runstore import load_runstore
from analysis.from_wandb import from_wandb_runs
from analysis.wandb_offline import load_wandb_offline, offline_runs
from tests.analysis_fixtures import ENV, mirror_offline
from tests.conftest import ROOT, run_module

# Tests sharing the session's trained smoke ablation and study run on one xdist worker (make test
# -n).
pytestmark = pytest.mark.xdist_group("analysis")

MIRRORED = ("bigram", "mlp", "full")  # the last one is interrupted and resumed: two W&B segments


def comparable(frame: pd.DataFrame) -> pd.DataFrame:
    """A frame without what says where a run was read from, in a fixed row order."""
    keys = [c for c in ("run_id", "step") if c in frame]
    return frame.drop(columns=["source", "location", "sample"], errors="ignore").sort_values(keys) \
        .reset_index(drop=True)


@pytest.fixture(scope="module")
def mirrored(smoke_results, tmp_path_factory) -> Path:
    """results/ with three smoke runs mirrored to W&B offline by the real mirror; `full` was
    SIGKILLed and resumed, so W&B holds it in two segments."""
    results = tmp_path_factory.mktemp("mirrored")
    for variant in MIRRORED[:-1]:
        source = next((smoke_results / "smoke").glob(f"{variant}-s0-*"))
        shutil.copytree(source, results / "smoke" / source.name)
    mirror_offline([p for p in (results / "smoke").iterdir()])
    args = ["--preset", "smoke", "--experiment", "smoke", "--results", str(results), "--wandb",
            "offline", "--quiet", "--set", "max_iters=600", "--set", "eval_interval=100", "--set",
            "log_interval=100"]
    proc = subprocess.Popen([sys.executable, "-m", "experiments.run", *args], cwd=ROOT,
                            env={**os.environ, **ENV}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    while proc.poll() is None and not any(json.loads(p.read_text())["last_step"] >= 200
                                          for p in results.glob("smoke/full-*/wandb/mirror.json")):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = run_module("experiments.run", *args, "--resume", env=ENV)
    assert resumed.returncode == 0, resumed.stderr
    return results


def test_offline_runs_read_back_equal_the_run_store(mirrored):
    from wandb.apis.public import Run

    runs, problems = offline_runs(mirrored / "smoke")
    assert problems == [] and len(runs) == len(MIRRORED)
    # W&B's own client class, as `wandb.Api().runs()` gives
    assert all(isinstance(run, Run) for run in runs)
    for run in runs:
        assert run.state == "finished"
        expected = ("smoke", "adhoc") if run.config["variant"] == "full" else ("ladder", "ladder")
        assert (run.group, run.job_type) == expected
        assert "_wandb" not in run.config
    resumed = next(run for run in runs if run.config["variant"] == "full")
    assert len(resumed.log_files) == 2

    from_wandb, from_store = from_wandb_runs(runs), load_runstore(mirrored, "smoke")

    assert from_wandb.problems == []
    assert list(from_wandb.evals.columns) == list(from_store.evals.columns)
    assert list(from_wandb.runs.columns) == list(from_store.runs.columns)
    # W&B's JSON writes 0.0 as 0, so compare values, not dtypes.
    pd.testing.assert_frame_equal(comparable(from_wandb.evals), comparable(from_store.evals),
                                  check_dtype=False)
    pd.testing.assert_frame_equal(comparable(from_wandb.runs), comparable(from_store.runs),
                                  check_dtype=False)
    assert set(from_wandb.runs["source"]) == {"wandb"}


def test_the_segment_of_a_killed_run_holds_what_it_logged(mirrored):
    first = sorted((mirrored / "smoke").glob("full-*/wandb/offline-run-*"))[0]
    loaded = load_wandb_offline(first)
    # Offline, W&B never learns the process died (its server would call the run crashed later).
    assert loaded.runs["status"].tolist() == ["running"]
    # The kill came right after step 200 was logged, and wandb-core writes its file every
    # FLUSH_INTERVAL_S, so on a loaded machine that last row may still have been in its buffer.
    # Everything logged earlier is there, in order, with the run store's values.
    steps = loaded.evals["step"].tolist()
    stored = load_runstore(mirrored, "smoke").evals
    stored = stored[stored["variant"] == "full"].set_index("step").loc[steps]
    assert steps[:2] == [0, 100] and steps == sorted(steps), steps
    assert loaded.evals["val_loss"].tolist() == stored["val_loss"].tolist()


def test_unreadable_logs_are_reported_by_path_and_skipped(mirrored, tmp_path):
    shutil.copytree(next((mirrored / "smoke").glob("bigram-*")), tmp_path / "smoke" / "bigram")
    garbage = tmp_path / "smoke" / "wandb" / "offline-run-20260101_000000-junk" / "run-junk.wandb"
    empty = tmp_path / "smoke" / "wandb" / "offline-run-20260101_000001-empty" / "run-empty.wandb"
    for log, data in ((garbage, b"\x11\x108\xfa not a log"), (empty, b"")):
        log.parent.mkdir(parents=True)
        log.write_bytes(data)

    loaded = load_wandb_offline(tmp_path / "smoke")

    text = "\n".join(loaded.problems)
    assert (f"{garbage}: `wandb leet inspect` cannot read it" in text and f"{empty}: no run record"
            in text)
    assert loaded.runs["variant"].tolist() == ["bigram"]
