"""The learning-rate axis: planning (ids as `--set lr=X` makes them), the LR-fair tables against a
hand computation from the runs' own files, Holm-adjusted paired t-tests, the Optuna grid with the
same axis."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from analysis import lr_tables, tables
from analysis.confidence import holm, mean_ci, paired_p
from analysis.from_runstore import load_runstore
from experiments import ablate, manifest, store
from experiments.plan import describe_plan, plan
from sweeps import optuna as sweeps_cli
from sweeps import storage
from tests.conftest import ROOT, run_module
from tests.wandb_records import of_type, records

# What `make ablate` planned before the LR axis existed (main at 7f86f7c: tutorial preset, Tiny
# Shakespeare, ladder + leave_one_out, seeds 0..2), in training order.
TODAYS_RUN_IDS = (
    "bigram-s0-16060bc9", "embeddings-s0-274fbe3e", "single_head-s0-c2811c05",
                  "multi_head-s0-5f1f2347",
    "mlp-s0-429c673c", "stacked-s0-874ff241", "residual-s0-a22e1b38", "layernorm-s0-b9455fe3",
    "full-s0-b0032094", "no_attention-s0-829e588f", "no_multi_head-s0-bb3af935",
                  "no_mlp-s0-a79eade0",
    "no_residual-s0-ea34fed3", "no_layernorm-s0-4e36c501", "no_pos_emb-s0-8260d899",
                  "bigram-s1-f9d3e8c7",
    "embeddings-s1-aa6d7385", "single_head-s1-fd0ac614", "multi_head-s1-5ea7c312",
                  "mlp-s1-ac158958",
    "stacked-s1-fd4d9d0b", "residual-s1-ffa7c4a7", "layernorm-s1-d18f77c3", "full-s1-786bef0d",
    "no_attention-s1-9fcfd4a2", "no_multi_head-s1-0fe43c0b", "no_mlp-s1-0850027c",
                  "no_residual-s1-3d3338bd",
    "no_layernorm-s1-a1a93fc1", "no_pos_emb-s1-8f1796ab", "bigram-s2-1135554d",
                  "embeddings-s2-8c0bda49",
    "single_head-s2-788bd616", "multi_head-s2-2f905afc", "mlp-s2-f8446180", "stacked-s2-2303d7a9",
    "residual-s2-e9145cbe", "layernorm-s2-5073c3d7", "full-s2-4aac79c5", "no_attention-s2-5cf1ca67",
    "no_multi_head-s2-4c6978bd", "no_mlp-s2-aa24ff19", "no_residual-s2-96425c82",
                  "no_layernorm-s2-d6610da7",
    "no_pos_emb-s2-acdbefaa",
)
# Two variants compared with the first; smoke's lr is 1e-2, the middle of the grid below.
PAIR = ("name: pair\njob_type: pair\ncompare: base\nvariants:\n"
        "  - {name: base, component: base, set: {}}\n  - {name: narrow, component: narrow, set: "
        "{n_embd: 8}}\n")
GRID = ["3e-3", "1e-2", "3e-2"]


@pytest.fixture
def pair(tmp_path, monkeypatch) -> Path:
    definitions = tmp_path / "definitions"
    definitions.mkdir()
    (definitions / "pair.yaml").write_text(PAIR)
    monkeypatch.setenv("NANOGPT_EXPERIMENTS", str(definitions))
    return definitions


def run_ids(doc: dict) -> list[tuple[str, float | None, int, str]]:
    return [(v["name"], r.get("lr"), r["seed"], r["run_id"]) for e in doc["experiments"]
            for v in e["variants"]
            for r in v["runs"]]


def test_default_make_ablate_plans_exactly_todays_run_ids(tmp_path):
    dry = subprocess.run(["make", "-s", "-C", str(ROOT), "-o", sys.executable,
                          f"PY={sys.executable}", "ablate", "DRY_RUN=1", f"RESULTS={tmp_path}"],
                         capture_output=True, text=True, timeout=300)
    assert dry.returncode == 0, dry.stderr
    # per variant, shared ones twice
    shown = re.findall(r"^  seed \d+ +[0-9a-f]{16}  (\S+)", dry.stdout, re.M)
    assert set(shown) == set(TODAYS_RUN_IDS) and "45 runs: 0 cached, 45 to train" in dry.stdout
    assert " axis " not in dry.stdout and " @ " not in dry.stdout
    p, _ = plan(None, range(3), ablate.DEFAULT_EXPERIMENTS, tmp_path)
    assert tuple(c.run_id for c in p.runs) == TODAYS_RUN_IDS
    assert all(e["axes"] == {} for e in p.manifest["experiments"])
    assert all(set(r) == {"seed", "run_id"} for e in p.manifest["experiments"]
               for v in e["variants"]
               for r in v["runs"])


def test_a_2_variant_3_lr_2_seed_grid_plans_12_runs_the_preset_lr_keeping_todays_ids(pair, tmp_path,
                                                                                     tiny_corpus):
    data = {"data": str(tiny_corpus)}
    lrs = [3e-3, 1e-2, 3e-2]
    p, _ = plan("smoke", range(2), ["pair"], tmp_path, overrides=data, grid={"lr": tuple(lrs)})
    assert len(p.runs) == len({c.run_id for c in p.runs}) == 12
    (entry,) = p.manifest["experiments"]
    assert entry["axes"] == {"lr": lrs}
    planned = run_ids(p.manifest)
    assert sorted((v, lr, s) for v, lr, s, _ in planned) == sorted(
        (v, lr, s) for v in ("base", "narrow") for lr in lrs for s in (0, 1))
    assert {r for *_, r in planned} == {c.run_id for c in p.runs}
    today, _ = plan("smoke", range(2), ["pair"], tmp_path, overrides=data)
    assert today.manifest["experiments"][0]["axes"] == {}
    at_preset = {(v, s): r for v, lr, s, r in planned if lr == 1e-2}
    assert at_preset == {(v, s): r for v, _, s, r in run_ids(today.manifest)}
    # Every other point is the run `--set lr=X` trains.
    for lr in (3e-3, 3e-2):
        set_lr, _ = plan("smoke", range(2), ["pair"], tmp_path, overrides=data | {"lr": lr})
        assert {(v, s): r for v, g, s, r in planned if g == lr} == {(v, s): r for v, _, s, r in
                                                                  run_ids(set_lr.manifest)}
    assert {c.train.lr for c in p.runs} == set(lrs)


def test_dry_run_shows_the_axis_and_a_definitions_own_lrs_is_typed_and_overridden(pair, tmp_path,
                                                                                  tiny_corpus,
                                                                                  capsys):
    (pair / "pair.yaml").write_text(PAIR.replace("compare: base\n",
                                                 "compare: base\nlrs: [0.001, '2e-3']\n"))
    args = ["--preset", "smoke", "--seeds", "1", "--experiments", "pair", "--data",
            str(tiny_corpus), "--results", str(tmp_path), "--dry-run"]
    assert ablate.main(args) == 0
    out = capsys.readouterr().out
    assert "pair: learning-rate axis 0.001 0.002" in out
    assert re.search(r"^pair/narrow @ lr 0.002: n_embd=8$", out, re.M)
    assert "4 runs: 0 cached, 4 to train; nothing written" in out
    assert ablate.main([*args, "--lrs", "5e-3"]) == 0  # --lrs replaces the definition's grid
    assert "pair: learning-rate axis 0.005 (" in capsys.readouterr().out
    assert not (tmp_path / "smoke").exists()


BAD = [("lrs: 0.001\n", "the learning rates must be a non-empty list"),
       ("lrs: [1e-3, fast]\n", "lr=fast"), ("lrs: [1e-3, 0.001]\n", "is given twice"),
       ("lrs: [0, 1e-3]\n", "must be a finite number > 0")]


@pytest.mark.parametrize(("line", "says"), BAD, ids=[s for _, s in BAD])
def test_a_bad_lrs_key_names_the_file_and_line(pair, tmp_path, capsys, line, says):
    (pair / "pair.yaml").write_text(PAIR.replace("compare: base\n", f"compare: base\n{line}"))
    assert ablate.main(["--preset", "smoke", "--experiments", "pair", "--results", str(tmp_path),
                        "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert (err.startswith(f"error: {pair / 'pair.yaml'} line 4: 'lrs': ") and says in err
            and err.count("\n") == 1)


def test_bad_lrs_on_the_command_line_exit_2_with_one_line(pair, tmp_path, tiny_corpus, capsys):
    base = ["--preset", "smoke", "--experiments", "pair", "--data", str(tiny_corpus), "--results",
            str(tmp_path)]
    assert ablate.main([*base, "--lrs", "1e-3", "-1"]) == 2
    assert (capsys.readouterr().err
            == "error: --lrs: learning rate -1.0 must be a finite number > 0\n")
    assert ablate.main([*base, "--lrs", "1e-3", "--set", "lr=1e-3"]) == 2
    assert ("lr is given twice: by --set lr=0.001 and by the learning-rate axis of pair"
            in capsys.readouterr().err)
    assert not (tmp_path / "smoke").exists()


def test_a_variant_with_its_own_lr_moves_along_the_grid(tmp_path, shakespeare):
    """The tutorial's bigram trains at 10x the preset's lr; on the grid it keeps that ratio."""
    p, _ = plan("tutorial", range(1), ["ladder"], tmp_path, grid={"lr": (5e-4, 1e-3, 2e-3)})
    bigram = [v for v in p.variants if v.name == "bigram"]
    assert [(v.point, v.runs[0].train.lr) for v in bigram] == [
        ({"lr": 5e-4}, 5e-3), ({"lr": 1e-3}, 1e-2), ({"lr": 2e-3}, 2e-2)]
    today, _ = plan("tutorial", range(1), ["ladder"], tmp_path)
    assert bigram[1].runs[0].run_id == today.variants[0].runs[0].run_id == "bigram-s0-16060bc9"
    assert ("fixes its own lr=0.01: scaled with the grid (x 0.002 / base lr), trains at lr=0.02"
            in describe_plan(p, tmp_path))


def test_holm_adjusted_p_values_equal_statsmodels_and_a_hand_computation():
    p = [0.01, 0.04, 0.03, math.nan, 0.2]
    adjusted = holm(p)
    expected = multipletests([0.01, 0.04, 0.03, 0.2], method="holm")[1]
    assert np.allclose([adjusted[i] for i in (0, 1, 2, 4)], expected) and math.isnan(adjusted[3])
    # By hand: sorted 0.01, 0.03, 0.04, 0.2 times 4, 3, 2, 1, made non-decreasing.
    assert np.allclose([adjusted[i] for i in (0, 2, 1, 4)], [0.04, 0.09, 0.09, 0.2])
    a, b = {0: 2.0, 1: 2.1, 2: 2.3, 3: 9.0}, {0: 1.9, 1: 2.05, 2: 2.1}
    assert paired_p(a, b) == pytest.approx(stats.ttest_rel([2.0, 2.1, 2.3],
                                                           [1.9, 2.05, 2.1]).pvalue)
    assert math.isnan(paired_p({0: 1.0}, {0: 2.0})) and math.isnan(paired_p({0: 2.0, 1: 3.0},
                                                                            {0: 1.0, 1: 2.0}))


def test_single_lr_tables_get_holm_adjusted_paired_p_values():
    rows = [{"definition": "d", "compare": "base", "order": i, "variant": v, "adds": "",
             "component": "", "seed": s, "run_id": f"{v}-{s}", "grid_lr": math.nan,
             "status": "completed", "final_val_loss": val,
             **{k: 1.0 for k in ("initial_train_loss", "initial_val_loss", "final_train_loss",
                                 "params", "flops_per_token", "tokens_per_sec", "train_flops")}}
            for i, (v, vals) in enumerate([("base", [2.0, 2.1, 2.2]), ("a", [2.3, 2.5, 2.4]),
                                           ("b", [2.0, 2.2, 2.1])])
            for s, val in enumerate(vals)]
    table = tables.comparison(pd.DataFrame(rows))
    raw = [stats.ttest_rel([2.3, 2.5, 2.4], [2.0, 2.1, 2.2]).pvalue,
           stats.ttest_rel([2.0, 2.2, 2.1],
                           [2.0, 2.1, 2.2]).pvalue]
    assert np.allclose(table["delta_val_p_holm"][1:], multipletests(raw, method="holm")[1])
    assert math.isnan(table["delta_val_p_holm"][0])
    assert "| p (Holm) |" in tables.markdown(table,
                                             "base").splitlines()[0].replace("   ",
                                                                             " ").replace("  ", " ")


def hand_tables(folder: Path, doc: dict) -> dict[str, dict]:
    """Best lr, final val at it, Δ vs the baseline at its own best lr and LR sensitivity, straight
    from the run folders' summary.json (final val) and metrics.jsonl (the step-0 evaluation, the
    loss at init)."""
    (entry,) = doc["experiments"]
    lrs = entry["axes"]["lr"]
    final, init = {}, {}
    for v in entry["variants"]:
        for r in v["runs"]:
            summary = json.loads((folder / r["run_id"] / store.SUMMARY).read_text())
            first = json.loads((folder / r["run_id"] / store.METRICS).read_text().splitlines()[0])
            assert first["step"] == 0 and summary["status"] == "completed"
            final[v["name"], r["lr"], r["seed"]] = summary["final_val_loss"]
            init[v["name"], r["lr"], r["seed"]] = first["val_loss"]
    out = {}
    for v in ("base", "narrow"):
        means = {lr: np.mean([final[v, lr, s] for s in (0, 1)]) for lr in lrs}
        best = min(means, key=means.get)
        sens = [np.mean([min(final[v, lr, s], init[v, lr, s])
                         for lr in lrs]) - min(final[v, lr, s] for lr in lrs)
                for s in (0, 1)]
        out[v] = {"best": best, "val": means[best], "sens": np.mean(sens), "sens_ci": mean_ci(sens)}
    for v in ("base", "narrow"):
        out[v]["delta"] = np.mean([final[v, out[v]["best"],
                                         s] - final["base", out["base"]["best"], s]
                                   for s in (0, 1)])
    return out


@pytest.mark.xdist_group("lr-grid")
def test_lr_fair_tables_and_figure_equal_a_hand_computation_from_the_runs(pair, tmp_path,
                                                                          tiny_corpus):
    results = tmp_path / "results"
    out = run_module("experiments.ablate", "--preset", "smoke", "--seeds", "2", "--experiments",
                     "pair", "--lrs", *GRID, "--data", tiny_corpus, "--results", results, "--jobs",
                     "2", "--set", "max_iters=30")
    assert out.returncode == 0, out.stderr
    assert "12 runs planned" in out.stderr and "12 completed" in out.stderr
    folder = results / "smoke"
    doc = manifest.read(folder)
    loaded = load_runstore(results, "smoke")
    planned = tables.planned_runs(doc, loaded.runs, folder)
    part = planned[planned["definition"] == "pair"]
    table = lr_tables.comparison(part, doc["experiments"][0]["axes"]["lr"]).set_index("variant")
    hand = hand_tables(folder, doc)
    for v in ("base", "narrow"):
        assert table.loc[v, "best_lr"] == hand[v]["best"]
        assert table.loc[v, "final_val_loss_mean"] == pytest.approx(hand[v]["val"], rel=1e-12)
        assert table.loc[v, "sensitivity_mean"] == pytest.approx(hand[v]["sens"], rel=1e-9,
                                                                 abs=1e-12)
        assert table.loc[v, "sensitivity_high"] == pytest.approx(hand[v]["sens_ci"][2], rel=1e-9,
                                                                 abs=1e-12)
        assert table.loc[v, "best_lr_at_edge"] == (hand[v]["best"] in (3e-3, 3e-2))
    assert table.loc["narrow", "delta_val_mean"] == pytest.approx(hand["narrow"]["delta"], rel=1e-9)
    assert math.isnan(table.loc["base", "delta_val_mean"])
    # Again through the report: every run is cached, the tables and the figure are written.
    report = run_module("analysis.report", folder, timeout=600)
    assert report.returncode == 0, report.stderr
    assert ("pair (learning-rate axis: 0.003 0.01 0.03)" in report.stdout and "LR sensitivity"
            in report.stdout)
    lr_grid = pd.read_csv(folder / "pair_lr_grid.csv")
    assert len(lr_grid) == 6 and set(lr_grid["completed"]) == {2}
    for ext in ("png", "svg"):
        assert (folder / "report" / "figures" / f"pair_lr_curves.{ext}").stat().st_size > 1000
    assert "pair_lr_curves.png" in (folder / "report" / "progression.md").read_text()


def test_an_optuna_grid_study_takes_the_same_axis_and_mirrors_lr_to_wandb(pair, tmp_path,
                                                                          tiny_corpus, capsys,
                                                                          monkeypatch):
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    args = ["--study", "lrgrid", "--grid", "pair", "--seeds", "1", "--lrs", "3e-3", "1e-2",
            "--results", str(tmp_path), "--preset", "smoke", "--data", str(tiny_corpus), "--set",
            "max_iters=10"]
    assert sweeps_cli.main(["create", *args]) == 0
    assert sweeps_cli.main(["worker", "--study", "lrgrid", "--results", str(tmp_path), "--threads",
                            "1", "--quiet", "--wandb", "offline", "--wandb-project",
                            "lr-axis"]) == 0
    capsys.readouterr()
    study = optuna.load_study(study_name="lrgrid",
                              storage=storage.default_storage(tmp_path / "lrgrid"))
    trials = study.get_trials()
    p, _ = plan("smoke", range(1), ["pair"], tmp_path, "lrgrid",
                {"data": str(tiny_corpus), "max_iters": 10}, {"lr": (3e-3, 1e-2)})
    assert sorted(t.user_attrs["run_id"] for t in trials) == sorted(c.run_id for c in p.runs)
    assert {(t.params["variant"], t.params["lr"]) for t in trials} == {
        (v, lr) for v in ("base", "narrow") for lr in (3e-3, 1e-2)}
    assert all(t.state.name == "COMPLETE" for t in trials)
    assert manifest.read(tmp_path / "lrgrid")["experiments"][0]["axes"] == {"lr": [3e-3, 1e-2]}
    for t in trials:  # each grid point's W&B run shows the lr it trained at
        (header,) = of_type(records(tmp_path / "lrgrid" / t.user_attrs["run_id"] / "wandb"), "run")
        assert header["config"]["update"]["lr"] == t.params["lr"]
