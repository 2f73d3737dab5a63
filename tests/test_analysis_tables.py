"""The tables `make ablate` prints: numbers equal to the run store's, every planned run accounted
for."""

from __future__ import annotations

import json
import math
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats

from analysis import comparison, tables
from analysis.from_runstore import load_runstore
from analysis.report import main
from experiments import manifest, store
from tests.conftest import ROOT, run_module

# Tests sharing the session's trained smoke ablation and study run on one xdist worker (make test
# -n).
pytestmark = pytest.mark.xdist_group("analysis")


def summaries(experiment: Path, run_ids: list[str]) -> list[dict]:
    return [json.loads((experiment / r / "summary.json").read_text()) for r in run_ids]


def expected(values: list[float]) -> tuple[float, float]:
    """Mean and 95% CI half-width, computed here without the analysis code."""
    n = len(values)
    half = stats.t.ppf(0.975,
                       n - 1) * statistics.stdev(values) / math.sqrt(n) if n > 1 else math.nan
    return statistics.mean(values), half


def has_cell(markdown: str, text: str) -> bool:
    """Whether a Markdown table has a cell holding exactly `text` (to_markdown pads cells with
    spaces)."""
    return re.search(rf"\|\s+{re.escape(text)}\s+\|", markdown) is not None


@pytest.fixture()
def experiment(smoke_results, tmp_path) -> Path:
    """A private copy of the smoke experiment, free to damage."""
    shutil.copytree(smoke_results / "smoke", tmp_path / "smoke")
    return tmp_path / "smoke"


def diverge(run_dir: Path) -> None:
    """Make a finished run's record that of a run diverged at its last evaluation, every file
    agreeing."""
    metrics = [json.loads(line) for line in (run_dir / store.METRICS).read_text().splitlines()]
    metrics[-1]["val_loss"] = float("nan")
    store.write_atomic(run_dir / store.METRICS, "".join(json.dumps(m) + "\n" for m in metrics))
    summary = json.loads((run_dir / store.SUMMARY).read_text()) | store.loss_summary(metrics)
    store.write_json(run_dir / store.SUMMARY, summary | {"status": "diverged"})
    (run_dir / store.BEST_CHECKPOINT).unlink()  # it held the last evaluation, no longer the best


def tables_cli(experiment: Path):
    out = run_module("analysis.report", experiment, "--tables-only")
    assert out.returncode == 0, out.stderr
    return out


def test_every_number_equals_the_run_store(experiment):
    out = tables_cli(experiment)
    plan = json.loads((experiment / "experiment.json").read_text())
    printed = out.stdout
    written = (experiment / "tables.md").read_text()
    assert written.startswith(printed) and "## Samples" in written and "## Samples" not in printed
    for entry in plan["experiments"]:
        table = pd.read_csv(experiment / f"{entry['name']}.csv").set_index("variant")
        assert list(table.index) == [v["name"] for v in entry["variants"]]  # the manifest's order
        by_variant = {}
        for variant in entry["variants"]:
            runs = summaries(experiment, [r["run_id"] for r in variant["runs"]])
            row = table.loc[variant["name"]]
            by_variant[variant["name"]] = {r["seed"]: r["final_val_loss"] for r in runs}
            for key in ("initial_train_loss", "initial_val_loss", "final_train_loss",
                        "final_val_loss"):
                mean, half = expected([r[key] for r in runs])
                assert row[f"{key}_mean"] == pytest.approx(mean, rel=1e-12)
                assert row[f"{key}_high"] - row[f"{key}_mean"] == pytest.approx(half, rel=1e-9)
            assert row["params"] == runs[0]["params"] and row["flops_per_token"] == runs[0][
                "flops_per_token"]
            assert row["tokens_per_sec"] == pytest.approx(statistics.mean(r["tokens_per_sec"]
                                                                          for r in runs))
            assert row["runs"] == f"{len(runs)} completed"
            mean, half = expected([r["final_val_loss"] for r in runs])
            assert has_cell(printed, f"{mean:.3f} ± {half:.3f}")
        names = list(by_variant)
        for i, name in enumerate(names):
            baseline = names[i - 1] if entry["compare"] == "previous" else entry["compare"]
            if (entry["compare"] == "previous" and i == 0) or name == baseline:
                assert math.isnan(table.loc[name, "delta_val_mean"])
                continue
            diffs = [by_variant[name][s] - by_variant[baseline][s] for s in by_variant[name]]
            mean, half = expected(diffs)
            assert table.loc[name, "delta_val_mean"] == pytest.approx(mean, rel=1e-9, abs=1e-12)
            assert table.loc[name,
                             "delta_val_high"] - table.loc[name,
                                                           "delta_val_mean"] == pytest.approx(half)
    ladder_full = pd.read_csv(experiment / "ladder.csv").set_index("variant").loc["full", "run_ids"]
    assert ladder_full == pd.read_csv(experiment / "leave_one_out.csv").set_index("variant").loc[
        "full", "run_ids"]


def test_runs_that_did_not_complete_are_shown_never_averaged(experiment):
    plan = json.loads((experiment / "experiment.json").read_text())
    ladder = {v["name"]: {r["seed"]: r["run_id"] for r in v["runs"]}
              for v in plan["experiments"][0]["variants"]}
    diverged, kept = ladder["mlp"][0], ladder["mlp"][1]
    diverge(experiment / diverged)
    shutil.rmtree(experiment / ladder["stacked"][1])
    (experiment / ladder["residual"][0] / "config.json").write_text("{")

    out = tables_cli(experiment)

    table = pd.read_csv(experiment / "ladder.csv").set_index("variant")
    assert table.loc["mlp", "runs"] == "1 completed, 1 diverged"
    assert table.loc["stacked", "runs"] == "1 completed, 1 not started"
    assert table.loc["residual", "runs"] == "1 completed, 1 unreadable"
    kept_val = summaries(experiment, [kept])[0]["final_val_loss"]
    assert table.loc["mlp", "final_val_loss_mean"] == kept_val and math.isnan(
        table.loc["mlp", "final_val_loss_high"])
    assert has_cell(out.stdout, f"{kept_val:.3f}")  # one completed seed: a mean, no interval
    assert str(experiment / ladder["residual"][0] / "config.json") in out.stderr  # reported by path
    # mlp against the rung before it (multi_head) pairs only the seed both completed.
    previous = summaries(experiment, [ladder["multi_head"][1]])[0]
    assert table.loc["mlp",
                     "delta_val_mean"] == pytest.approx(kept_val - previous["final_val_loss"])


@pytest.mark.reliability("fault", "a finished run's files disagree (evaluations, summary, "
                         "checkpoint): every reader")
def test_a_run_whose_files_disagree_is_counted_damaged_never_tabled(experiment, capsys):
    """Its last evaluation removed: the table counts it damaged and averages the other seed alone,
    with one warning naming the file (it used to table the step-10 value as the final val)."""
    plan = json.loads((experiment / "experiment.json").read_text())
    ladder = {v["name"]: {r["seed"]: r["run_id"] for r in v["runs"]}
              for v in plan["experiments"][0]["variants"]}
    damaged, kept = experiment / ladder["mlp"][0], ladder["mlp"][1]
    lines = (damaged / store.METRICS).read_text().splitlines(keepends=True)
    (damaged / store.METRICS).write_text("".join(lines[:-1]))

    assert main([str(experiment), "--tables-only"]) == 0

    table = pd.read_csv(experiment / "ladder.csv").set_index("variant")
    assert table.loc["mlp", "runs"] == "1 completed, 1 damaged"
    kept_val = summaries(experiment, [kept])[0]["final_val_loss"]
    assert table.loc["mlp", "final_val_loss_mean"] == kept_val
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if line.startswith("warning: ")] == [
        f"warning: {damaged / store.METRICS}: ends at step 10, but summary.json records step 20; "
        "--resume repairs it (ckpt.pt holds the evaluation of step 20; make ablate resumes too)"]


@pytest.mark.reliability("bad input", "make tables, report: the folder when NAME= is not given")
def test_make_tables_without_a_name_reads_the_folder_make_ablate_wrote(experiment, tmp_path,
                                                                      capsys):
    """As `make ablate PRESET=smoke` wrote results/smoke, `make tables PRESET=smoke` reads it (it
    read results/ and said to run make ablate first); a folder without a plan names those there."""
    make = ["make", "-s", "-C", str(ROOT), "-o", sys.executable, f"PY={sys.executable}"]
    done = subprocess.run([*make, "tables", "PRESET=smoke", f"RESULTS={experiment.parent}"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (experiment / "tables.md").read_text().startswith(done.stdout)
    assert main([str(tmp_path / "cpu"), "--tables-only"]) == 2
    assert capsys.readouterr().err == (
        f"error: {tmp_path / 'cpu' / 'experiment.json'} not found; the experiment folders in "
        f"{tmp_path} are smoke (NAME= for make); run `make ablate` first, or give --storage to "
        "report an Optuna study\n")


def test_usage_errors_exit_2_with_a_message(tmp_path, experiment, capsys):
    def report(*args) -> tuple[int, str]:
        """analysis.report's CLI, in this process: (exit code, stderr)."""
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # argparse's usage errors
            code = e.code
        return code, capsys.readouterr().err

    code, err = report(tmp_path / "nothing")
    assert code == 2 and "experiment.json not found" in err and "make ablate" in err
    (experiment / "experiment.json").write_text("{oops")
    code, err = report(experiment, "--tables-only")
    assert code == 2 and "unreadable" in err
    assert not (experiment / "tables.md").exists()  # nothing half-written
    code, err = report(tmp_path, "--storage", f"sqlite:///{tmp_path / 'missing.db'}")
    assert code == 2 and "no such SQLite file" in err
    code, err = report(tmp_path, "--study", "s")  # the study's own storage, which is not there
    assert code == 2 and str(tmp_path.parent / "s" / "optuna.db") in err


def test_a_plan_with_nothing_trained_yet(experiment):
    for run_dir in experiment.glob("*/config.json"):
        shutil.rmtree(run_dir.parent)
    plan = manifest.read(experiment)

    planned = tables.planned_runs(plan, load_runstore(experiment.parent, experiment.name).runs,
                                  experiment)
    text, samples, numeric = comparison.report(plan, planned)

    assert set(planned["status"]) == {"not started"}
    assert ((numeric["ladder"]["runs"] == "2 not started").all()
            and (numeric["ladder"]["completed"] == 0).all())
    assert not has_cell(text, "nan") and samples == ""
