"""`python -m analysis.report`: both notebooks run headless by a real kernel; figures, report and
tables agree."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import nbformat
import optuna
import pytest

from tests.analysis_fixtures import ENV, STUDY
from tests.conftest import ROOT, run_module

# Tests sharing the session's trained smoke ablation and study run on one xdist worker (make test
# -n).
pytestmark = pytest.mark.xdist_group("analysis")

PROGRESSION_FIGURES = ("ladder_loss_curves", "ladder_final_val_loss", "ladder_loss_vs_cost",
                       "leave_one_out_delta")
SWEEP_FIGURES = ("optimization_history", "param_importances", "intermediate_values")


def assert_figures(figures: Path, names: tuple[str, ...]) -> None:
    for name in names:
        assert (figures / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert "<svg" in (figures / f"{name}.svg").read_text()[:1000], name


def assert_clean_run(executed: Path) -> None:
    notebook = nbformat.read(executed, as_version=4)
    outputs = [o for cell in notebook.cells for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert not [o for o in outputs
                if o.get("name") == "stderr"], "a notebook printed warnings or errors"


@pytest.mark.parametrize("name", ["progression", "sweep"])
def test_notebooks_are_stored_without_outputs(name):
    notebook = nbformat.read(ROOT / "analysis" / f"{name}.ipynb", as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert "parameters" in code[0].metadata.get("tags", [])
    assert 'matplotlib.use("Agg")' in code[1].source


def test_progression_report(smoke_results, tmp_path):
    experiment = tmp_path / "smoke"
    shutil.copytree(smoke_results / "smoke", experiment)

    out = run_module("analysis.report", experiment)

    assert out.returncode == 0, out.stderr
    report = experiment / "report"
    assert_figures(report / "figures", PROGRESSION_FIGURES)
    assert_clean_run(report / "progression.ipynb")
    markdown = (report / "progression.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert sorted(links) == sorted(f"figures/{n}.png" for n in PROGRESSION_FIGURES)
    # The report's tables are the printed tables, whose numbers test_analysis_tables checks against
    # the run store.
    tables = (experiment / "tables.md").read_text()
    for table in re.findall(r"(?m)^\|.*\|$(?:\n^\|.*\|$)+", tables):
        assert table in markdown
    plan = json.loads((experiment / "experiment.json").read_text())
    for variant in plan["experiments"][0]["variants"]:
        run_id = variant["runs"][0]["run_id"]
        sample = (experiment / run_id / "samples.txt").read_text()[:300]
        assert f"**{variant['name']}** (seed 0):\n\n```text\n{sample}\n```" in markdown
    assert "## Environment" in markdown and "2.13" in markdown  # torch version of the runs


def test_a_failing_notebook_exits_1_and_keeps_the_old_report(smoke_results, tmp_path):
    experiment = tmp_path / "smoke"
    shutil.copytree(smoke_results / "smoke", experiment)
    (experiment / "report").mkdir()
    (experiment / "report" / "progression.md").write_text("the previous report")
    (experiment / "report" / "figures").write_text("a file where the figures folder goes")

    out = run_module("analysis.report", experiment)

    assert out.returncode == 1
    assert "progression.ipynb failed in cell" in out.stderr and "FileExistsError" in out.stderr
    assert (f"the partly executed notebook is {experiment / 'report' / 'progression.partial.ipynb'}"
            in out.stderr)
    assert (experiment / "report" / "progression.md").read_text() == "the previous report"


def test_sweep_report(sweep, tmp_path):
    results, storage = sweep
    out = run_module("analysis.report", results / STUDY, "--storage", storage, "--study", STUDY)

    assert out.returncode == 0, out.stderr
    report = results / STUDY / "report"
    assert_figures(report / "figures", SWEEP_FIGURES)
    assert_clean_run(report / "sweep.ipynb")
    markdown = (report / "sweep.md").read_text()
    study = optuna.load_study(study_name=STUDY, storage=storage)
    best = study.best_trial
    first_row = markdown.split("## Best trials", 1)[1].strip().splitlines()[2]
    cells = [c.strip() for c in first_row.strip("|").split("|")]
    assert cells[0] == str(best.number) and float(cells[1]) == pytest.approx(best.value)
    assert "5 trials (3 completed, 1 pruned, 1 failed)" in markdown
    # no experiment.json here: only the sweep is reported
    assert not (report / "progression.md").exists()


@pytest.mark.reliability("bad input", "make report: a study with no storage of its own")
def test_report_of_a_study_finds_its_own_storage_or_says_where_it_looked(tmp_path, capsys,
                                                                         monkeypatch):
    """Exit 2 naming <results>/<study>/optuna.db; nothing written."""
    from analysis import report

    monkeypatch.delenv("NANOGPT_SWEEP_STORAGE", raising=False)
    folder = tmp_path / "results" / "grid"
    assert report.main([str(folder), "--study", "grid", "--tables-only"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(folder / "optuna.db") in err
    assert not (tmp_path / "results").exists()


def test_a_relative_storage_path_still_resolves_from_the_notebooks_folder(tmp_path, monkeypatch):
    from sweeps import storage

    monkeypatch.chdir(tmp_path)
    assert (storage.absolute("sqlite:///results/s/optuna.db")
            == f"sqlite:///{tmp_path}/results/s/optuna.db")
    assert storage.absolute("s.journal") == str(tmp_path / "s.journal")
    assert storage.absolute("postgresql://u@h/db") == "postgresql://u@h/db"


def test_modern_experiments_get_their_own_figures_coloured_by_component(tmp_path):
    """Any definition gets figures without code changes: one set per cumulative definition, a Δ
    figure per baseline."""
    out = run_module("experiments.ablate", "--preset", "smoke", "--seeds", "1", "--results",
                     tmp_path, "--experiments", "modern", "modern_leave_one_out", "--set",
                     "max_iters=10", env=ENV)
    assert out.returncode == 0, out.stderr
    plan = json.loads((tmp_path / "smoke" / "experiment.json").read_text())
    components = {v["name"]: v["component"] for e in plan["experiments"] for v in e["variants"]}
    assert components["rope"] == components["llama_learned_pos"] == "RoPE"

    out = run_module("analysis.report", tmp_path / "smoke", env=ENV)

    assert out.returncode == 0, out.stderr
    assert_figures(tmp_path / "smoke" / "report" / "figures",
                   ("modern_loss_curves", "modern_final_val_loss",
                    "modern_loss_vs_cost", "modern_leave_one_out_delta"))
    assert_clean_run(tmp_path / "smoke" / "report" / "progression.ipynb")
