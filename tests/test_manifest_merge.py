"""One results folder, one manifest (issue 24, class 2): every plan recorded in a folder is merged
into its experiment.json under a lock, per experiment and per axis, so no command's tables lose
another's; and grid values that differ but print the same (class 3) are refused, or printed
distinctly where an old manifest has them."""

from __future__ import annotations

import fcntl
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from analysis import comparison, report, tables
from experiments import ablate, manifest, store
from experiments.plan import plan
from experiments.settings import ConfigError
from tests.conftest import ROOT
from tests.synthetic_runs import run

DEFINITIONS = {
    "first": "name: first\ncompare: a\nvariants:\n  - {name: a, set: {}}\n"
             "  - {name: b, set: {mlp: false}}\n",
    "second": "name: second\ncompare: c\nvariants:\n  - {name: c, set: {n_embd: 8}}\n"
              "  - {name: d, set: {n_embd: 8, mlp: false}}\n",
}


@pytest.fixture
def definitions(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "definitions"
    folder.mkdir()
    for name, text in DEFINITIONS.items():
        (folder / f"{name}.yaml").write_text(text)
    monkeypatch.setenv("NANOGPT_EXPERIMENTS", str(folder))
    return folder


def record(results: Path, experiments: list[str], corpus: Path, **kwargs) -> dict:
    """What `make ablate` records before it trains anything: its plan, merged into the manifest."""
    p, _ = plan("smoke", range(kwargs.pop("seeds", 1)), experiments, results,
                overrides={"data": str(corpus)}, **kwargs)
    return manifest.record(p.folder, p.manifest)


@pytest.mark.slow
@pytest.mark.reliability("fault", "two ablations of different experiments at once on one folder")
def test_two_ablations_with_different_experiments_on_one_folder_both_end_with_complete_tables(
        definitions, tmp_path, tiny_corpus):
    """Started together, each trains its experiment and then writes the folder's tables, as `make
    ablate` does: both exit 0, the manifest has both experiments, and the tables written last have
    every run of both."""
    results = tmp_path / "results"
    common = (f"--preset smoke --seeds 1 --data {tiny_corpus} --results {results} --jobs 1 "
              "--wandb off --set max_iters=10")
    ablations = [subprocess.Popen(
        f"{sys.executable} -m experiments.ablate --experiments {name} {common} && "
        f"{sys.executable} -m analysis.report {results / 'smoke'} --tables-only", shell=True,
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name in DEFINITIONS]
    outs = [p.communicate(timeout=300) for p in ablations]
    assert [p.returncode for p in ablations] == [0, 0], [err for _, err in outs]
    for (out, _), name in zip(outs, DEFINITIONS, strict=True):  # each command's own tables
        assert f"## {name}\n" in out
    doc = manifest.read(results / "smoke")
    assert sorted(e["name"] for e in doc["experiments"]) == ["first", "second"]
    written = (results / "smoke" / "tables.md").read_text()
    for name in DEFINITIONS:
        assert f"## {name}\n" in written
        assert (pd.read_csv(results / "smoke" / f"{name}.csv")["runs"] == "1 completed").all()


def test_an_experiment_recorded_after_another_keeps_it(definitions, tmp_path, tiny_corpus):
    first = record(tmp_path, ["first"], tiny_corpus)
    both = record(tmp_path, ["second"], tiny_corpus)
    assert [e["name"] for e in both["experiments"]] == ["first", "second"]
    assert both["experiments"][0] == first["experiments"][0]
    assert record(tmp_path, ["second"], tiny_corpus) == both  # the same plan again changes nothing
    assert manifest.read(tmp_path / "smoke") == both


def test_a_rerun_without_the_lr_axis_keeps_the_lr_fair_tables_and_their_grid(definitions, tmp_path,
                                                                              tiny_corpus):
    record(tmp_path, ["first"], tiny_corpus, grid={"lr": (3e-3, 3e-2)})
    doc = record(tmp_path, ["first"], tiny_corpus, seeds=2)  # no axis: runs at smoke's lr, 1e-2
    (entry,) = doc["experiments"]
    assert entry["axes"] == {"lr": [3e-3, 1e-2, 3e-2]} and doc["seeds"] == [0, 1]
    runs = {(v["name"], r["lr"], r["seed"]) for v in entry["variants"] for r in v["runs"]}
    assert runs == ({(v, lr, 0) for v in "ab" for lr in (3e-3, 3e-2)}
                    | {(v, 1e-2, s) for v in "ab" for s in (0, 1)})
    text = report.write_tables(tmp_path / "smoke")
    assert "## first (learning-rate axis: 0.003 0.01 0.03)" in text
    grid = pd.read_csv(tmp_path / "smoke" / "first_lr_grid.csv")
    assert sorted(set(grid["lr"])) == [3e-3, 1e-2, 3e-2]


def test_a_table_a_definition_no_longer_has_is_removed(definitions, tmp_path, tiny_corpus):
    record(tmp_path, ["first"], tiny_corpus)
    folder = tmp_path / "smoke"
    for stale in ("first_lr_grid.csv", "first_trend.csv", "mine.csv"):
        (folder / stale).write_text("x\n1\n")
    report.write_tables(folder)
    assert sorted(p.name for p in folder.glob("*.csv")) == ["first.csv", "mine.csv"]  # mine: kept


@pytest.mark.reliability("bad input", "an ablation with another base model into a results folder")
def test_a_folder_holds_one_base_model(definitions, tmp_path, tiny_corpus, capsys):
    """Exit 2, one line naming both base models and what to do; the folder's manifest unchanged."""
    record(tmp_path, ["first"], tiny_corpus)
    before = (tmp_path / "smoke" / manifest.MANIFEST).read_text()
    args = ["--preset", "smoke", "--experiments", "second", "--data", str(tiny_corpus), "--results",
            str(tmp_path)]
    assert ablate.main([*args, "--set", "lr=3e-3", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {tmp_path / 'smoke'} records preset smoke, set "
                   f"data={tiny_corpus}; this plan has preset smoke, set lr=0.003 "
                   f"data={tiny_corpus}: a results folder holds one base model, so give the same "
                   "PRESET= and SET= (to train several learning rates, give them as an axis: "
                   "--lrs, LRS=), another NAME= for this plan, or delete its experiment.json to "
                   "record this plan afresh (the run folders stay)\n")
    assert ablate.main([*args, "--set", "lr=3e-3", "--name", "other", "--dry-run"]) == 0
    assert (tmp_path / "smoke" / manifest.MANIFEST).read_text() == before


def test_a_point_the_folder_records_as_another_run_is_refused(definitions, tmp_path, tiny_corpus):
    doc = record(tmp_path, ["first"], tiny_corpus)
    doc["experiments"][0]["variants"][1]["runs"][0]["run_id"] = "b-s0-00000000"  # an older b's
    store.write_json(tmp_path / "smoke" / manifest.MANIFEST, doc)
    with pytest.raises(ConfigError, match=r"records first/b seed 0 as run b-s0-00000000, but this "
                       r"plan makes it b-s0-[0-9a-f]{8} \(the definition, the corpus or the code "
                       r"changed since\)"):
        record(tmp_path, ["first"], tiny_corpus)


def test_a_format_1_manifest_is_read_and_merged(definitions, tmp_path, tiny_corpus):
    """As today's code wrote it: the lr grid as `lrs`, no axes, no base point."""
    p, _ = plan("smoke", range(1), ["first"], tmp_path, overrides={"data": str(tiny_corpus)},
                grid={"lr": (3e-3, 3e-2)})
    old = {k: v for k, v in p.manifest.items() if k != "base_point"} | {"format": 1}
    old["experiments"] = [{k: v for k, v in e.items() if k != "axes"} | {"lrs": e["axes"]["lr"]}
                          for e in p.manifest["experiments"]]
    (tmp_path / "smoke").mkdir()
    store.write_json(tmp_path / "smoke" / manifest.MANIFEST, old)
    assert manifest.read(tmp_path / "smoke")["experiments"] == p.manifest["experiments"]
    doc = record(tmp_path, ["first"], tiny_corpus)
    assert doc["format"] == 2 and doc["experiments"][0]["axes"] == {"lr": [3e-3, 1e-2, 3e-2]}


# --- class 3: values that differ but print the same ---------------------------------------------
@pytest.mark.reliability("bad input", "grid values that differ but print the same")
def test_grid_values_that_print_the_same_are_refused(definitions, tmp_path, tiny_corpus, capsys):
    """Exit 2, one line naming both values, on the command line and against the folder's record."""
    args = ["--preset", "smoke", "--experiments", "first", "--data", str(tiny_corpus), "--results",
            str(tmp_path)]
    assert ablate.main([*args, "--lrs", "0.001", "0.0010000000000001"]) == 2
    assert capsys.readouterr().err == (
        "error: --lrs: learning rates 0.001 and 0.0010000000000001 are closer than 0.01% (both "
        "read 0.001): one grid point; give distinct values\n")
    assert not (tmp_path / "smoke").exists()
    record(tmp_path, ["first"], tiny_corpus, grid={"lr": (1e-3, 3e-3)})
    # Against what the folder records.
    assert ablate.main([*args, "--lrs", "0.0010000000000001", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "learning rates 0.001 and 0.0010000000000001 are closer than 0.01%" in err
    assert err.count("\n") == 1


def test_an_old_manifest_with_two_close_lrs_shows_both_columns_distinctly(tmp_path):
    lrs = [0.001, 0.0010000000000001]
    variants = [{"name": v, "adds": v, "component": v,
                 "runs": [{"seed": s, "lr": lr, "run_id": f"{v}-{i}-{s}"}
                          for i, lr in enumerate(lrs) for s in (0, 1)]}
                for v in ("base", "other")]
    doc = {"format": 1, "name": "old", "preset": "smoke", "seeds": [0, 1], "overrides": {},
           "experiments": [{"name": "grid", "compare": "base", "lrs": lrs, "variants": variants}]}
    store.write_json(tmp_path / manifest.MANIFEST, doc)
    doc = manifest.read(tmp_path)
    frame = pd.DataFrame([run(r["run_id"], v["name"], r["seed"],
                              2.0 + 0.1 * r["seed"] + 0.01 * (v["name"] == "other"))
                          for v in variants for r in v["runs"]])
    (compared,) = comparison.of(doc, tables.planned_runs(doc, frame, tmp_path))
    section = compared.section()
    header = next(line for line in section.splitlines()
                  if line.startswith("| variant") and "| lr " in line)
    assert "lr 0.001 " in header and "lr 0.0010000000000001" in header
    grid_rows = [line for line in section.splitlines()
                 if line.startswith(("| base", "| other")) and "**" in line]
    assert len(grid_rows) == 2 and not any("—" in line for line in grid_rows)


def test_the_manifest_lock_is_released_when_its_holder_dies(tmp_path):
    """An flock: a killed ablation never blocks the next one's record."""
    code = ("import os, signal; from pathlib import Path; from experiments import manifest\n"
            f"with manifest.lock(Path({str(tmp_path)!r})):\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == -9
    with (tmp_path / manifest.LOCK).open() as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError if the dead still held it
