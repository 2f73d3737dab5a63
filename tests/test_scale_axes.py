"""Width and depth axes (issue 25): planned like the lr axis (today's ids at the preset's size, the
head size kept, a variant's own n_layer kept, impossible widths refused), the scale and trend tables
against a hand computation from the runs' own summary.json files, and each reading of a trend."""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from scipy import stats

from analysis import comparison, tables
from analysis.confidence import trend
from analysis.from_runstore import load_runstore
from experiments import ablate, manifest, store
from experiments import run as run_cli
from experiments.plan import describe_plan, plan
from sweeps import optuna as sweeps_cli
from sweeps import storage
from sweeps.kinds import from_attr
from tests.conftest import run_module

# Two variants compared with the first; smoke: n_embd 16, 2 heads (head size 8), 2 layers.
PAIR = ("name: pair\njob_type: pair\ncompare: base\nvariants:\n"
        "  - {name: base, component: base, set: {}}\n"
        "  - {name: no_mlp, component: MLP, set: {mlp: false}}\n")
OWNERS = ("  - {name: one_block, component: depth, set: {n_layer: 1}}\n"
          "  - {name: narrow, component: width, set: {n_embd: 8}}\n")
WIDTHS, DEPTHS = (16, 32), (1, 2)


@pytest.fixture
def pair(tmp_path, monkeypatch) -> Path:
    definitions = tmp_path / "definitions"
    definitions.mkdir()
    (definitions / "pair.yaml").write_text(PAIR)
    monkeypatch.setenv("NANOGPT_EXPERIMENTS", str(definitions))
    return definitions


def runs_at(doc: dict) -> dict[tuple, str]:
    """(variant, width, depth, seed) -> run id, from a manifest."""
    return {(v["name"], r.get("width"), r.get("depth"), r["seed"]): r["run_id"]
            for e in doc["experiments"] for v in e["variants"] for r in v["runs"]}


def test_a_2_variant_2_width_2_depth_2_seed_grid_plans_16_runs_keeping_todays_ids(pair, tmp_path,
                                                                                 tiny_corpus):
    data = {"data": str(tiny_corpus)}
    p, _ = plan("smoke", range(2), ["pair"], tmp_path, overrides=data,
                grid={"width": WIDTHS, "depth": DEPTHS})
    assert len(p.runs) == len({c.run_id for c in p.runs}) == 16
    assert p.manifest["experiments"][0]["axes"] == {"width": [16, 32], "depth": [1, 2]}
    planned = runs_at(p.manifest)
    assert sorted(planned) == sorted((v, w, d, s) for v in ("base", "no_mlp") for w in WIDTHS
                                     for d in DEPTHS for s in (0, 1))
    assert {c.model.n_embd // c.model.n_head for c in p.runs} == {8}  # smoke's head size: all
    assert {(c.model.n_embd, c.model.n_head) for c in p.runs} == {(16, 2), (32, 4)}
    today, _ = plan("smoke", range(2), ["pair"], tmp_path, overrides=data)
    assert {(v, s): r for (v, w, d, s), r in planned.items() if (w, d) == (16, 2)} == {
        (v, s): r for (v, _, _, s), r in runs_at(today.manifest).items()}
    # Every other point is the run --set trains: depth as n_layer, width as n_embd and n_head.
    for width, depth in ((32, 2), (16, 1), (32, 1)):
        at, _ = plan("smoke", range(2), ["pair"], tmp_path,
                     overrides=data | {"n_embd": width, "n_head": width // 8, "n_layer": depth})
        assert {(v, s): r for (v, w, d, s), r in planned.items() if (w, d) == (width, depth)} == {
            (v, s): r for (v, _, _, s), r in runs_at(at.manifest).items()}


def test_a_variant_that_sets_the_axis_setting_keeps_it_and_the_plan_says_so(pair, tmp_path,
                                                                            tiny_corpus):
    (pair / "pair.yaml").write_text(PAIR + OWNERS)
    p, _ = plan("smoke", range(1), ["pair"], tmp_path, overrides={"data": str(tiny_corpus)},
                grid={"width": WIDTHS, "depth": (1, 2, 4)})
    planned = runs_at(p.manifest)
    one_block = {planned["one_block", w, d, 0] for w in WIDTHS for d in (1, 2, 4)}
    assert len(one_block) == 2  # one run per width: the same at every depth
    assert {c.model.n_layer for c in p.runs if c.run_id in one_block} == {1}
    narrow = {planned["narrow", w, d, 0] for w in WIDTHS for d in (1, 2, 4)}
    assert len(narrow) == 3  # one run per depth
    assert {(c.model.n_embd, c.model.n_head) for c in p.runs if c.run_id in narrow} == {(8, 2)}
    shown = describe_plan(p, tmp_path)
    assert ("pair/one_block @ width 32, depth 4: n_layer=1\n  keeps its own n_layer=1: the "
            "variant sets it, so depth 4 does not apply to it\n  same runs as pair/base @ width "
            "32, depth 1: trained once\n") in shown
    assert ("pair/narrow @ width 32, depth 1: n_embd=8\n  keeps its own n_embd=8: the variant sets "
            "it, so width 32 does not apply to it") in shown
    # At depth 1 the one-block variant is the base model: the same runs, said so, and still a row.
    assert ("note: pair/one_block is the same model as pair/base under these settings; trained "
            "once") in shown
    assert planned["one_block", 16, 1, 0] == planned["base", 16, 1, 0]
    assert [v["name"] for v in p.manifest["experiments"][0]["variants"]] == [
        "base", "no_mlp", "one_block", "narrow"]


def test_the_tutorial_ladders_one_block_rungs_keep_one_block_on_a_depth_axis(shakespeare,
                                                                             tmp_path):
    p, _ = plan("tutorial", range(1), ["ladder"], tmp_path, grid={"depth": (1, 4)})
    planned = runs_at(p.manifest)
    for rung in ("bigram", "embeddings", "single_head", "multi_head", "mlp"):
        assert planned[rung, None, 1, 0] == planned[rung, None, 4, 0]
    layers = {c.run_id: c.model.n_layer for c in p.runs}
    assert layers[planned["stacked", None, 4, 0]] == layers[planned["full", None, 4, 0]] == 4
    assert ("keeps its own n_layer=1: the variant sets it, so depth 4 does not apply to it"
            in describe_plan(p, tmp_path))


def test_a_variant_that_fixes_a_setting_width_moves_keeps_it_and_the_plan_says_so(shakespeare,
                                                                                 tmp_path):
    """The Llama variants set n_kv_head 2: off the base width the plan says they keep it (a GQA
    share that changes with the head count), and at the base width it says nothing."""
    p, _ = plan("modern", range(1), ["modern_leave_one_out"], tmp_path,
                grid={"width": (64, 128)})
    kv = {(c.model.n_embd, c.model.n_head, c.model.n_kv_head) for c in p.runs
          if c.run_id in {r for (v, *_), r in runs_at(p.manifest).items() if v == "llama"}}
    assert kv == {(64, 4, 2), (128, 8, 2)}
    shown = describe_plan(p, tmp_path)
    at_128 = shown.split("modern_leave_one_out/llama @ width 128:")[1].split("seed 0")[0]
    at_64 = shown.split("modern_leave_one_out/llama @ width 64:")[1].split("seed 0")[0]
    assert ("keeps its own n_kv_head=2: the variant sets it, so width 128's n_kv_head=0 does "
            "not apply to it") in at_128
    assert "keeps its own" not in at_64


BAD = [(["--widths", "36"], "error: --widths: width 36 is not a multiple of the head size 8 "
        "(n_embd 16 / n_head 2 of the base model, kept at every width); give multiples of 8\n"),
       (["--depths", "2", "2"], "error: --depths: depth 2 is given twice\n"),
       (["--depths", "0"], "error: --depths: depth 0 must be a whole number >= 1\n"),
       (["--widths", "32.5"], "error: --widths: width=32.5: expected a whole number\n"),
       (["--depths", "2", "--set", "n_layer=3"], "error: n_layer is given twice: by --set "
        "n_layer=3 and by the depth axis of pair (--depths, DEPTHS= or its depths:); give one\n")]


@pytest.mark.parametrize(("args", "says"), BAD, ids=[a[0] + " " + a[1] for a, _ in BAD])
def test_impossible_points_are_refused_before_anything_is_written(pair, tmp_path, tiny_corpus,
                                                                   capsys, args, says):
    code = ablate.main(["--preset", "smoke", "--experiments", "pair", "--data", str(tiny_corpus),
                        "--results", str(tmp_path), *args])
    assert (code, capsys.readouterr().err) == (2, says)
    assert not (tmp_path / "smoke").exists()


def test_a_definition_has_depths_and_widths_of_its_own(pair, tmp_path, tiny_corpus, capsys):
    (pair / "pair.yaml").write_text(PAIR.replace("compare: base\n",
                                                 "compare: base\ndepths: [2, '1']\n"))
    args = ["--preset", "smoke", "--experiments", "pair", "--data", str(tiny_corpus), "--results",
            str(tmp_path), "--seeds", "1", "--dry-run"]
    assert ablate.main(args) == 0
    out = capsys.readouterr().out
    assert ("pair: depth axis 1 2 (every variant at each depth, as --set n_layer=DEPTH sets it)"
            in out)
    assert "4 runs: 0 cached, 4 to train" in out
    # --depths replaces the definition's; --widths adds an axis.
    assert ablate.main([*args, "--depths", "4", "--widths", "32"]) == 0
    out = capsys.readouterr().out
    assert "pair: width axis 32 (every variant at each width, n_embd at head size 8" in out
    assert "pair: depth axis 4 (" in out and "pair/no_mlp @ width 32, depth 4: mlp=False" in out


def hand_trend(x: list[float], y: list[float]) -> dict:
    """The slope of y on x, its 95% CI and p (scipy.stats.linregress), the 95% CI of the fitted line
    at the smallest and largest x by the textbook formula, and the reading as the docs define it."""
    fit = stats.linregress(x, y)
    n, t = len(x), stats.t.ppf(0.975, len(x) - 2)
    x_, y_ = np.array(x), np.array(y)
    s = math.sqrt(((y_ - fit.intercept - fit.slope * x_) ** 2).sum() / (n - 2))
    sxx = ((x_ - x_.mean()) ** 2).sum()

    def band(at: float) -> tuple[float, float]:
        half = t * s * math.sqrt(1 / n + (at - x_.mean()) ** 2 / sxx)
        return fit.intercept + fit.slope * at - half, fit.intercept + fit.slope * at + half

    low, high = fit.slope - t * fit.stderr, fit.slope + t * fit.stderr
    small, large = band(min(x)), band(max(x))
    if low <= 0 <= high:
        reading = "flat"
    elif (small[0] > 0 > large[1]) or (small[1] < 0 < large[0]):
        reading = "flips sign"
    elif (low > 0 and large[0] > 0) or (high < 0 and large[1] < 0):
        reading = "grows"
    else:
        reading = "shrinks"
    return {"slope": fit.slope, "low": low, "high": high, "p": fit.pvalue, "small": small,
            "large": large, "reading": reading}


# log2 sizes 0, 1, 2, 3 x 3 seeds, with seed noise that is not a multiple of anything.
SIZES = [0.0, 1.0, 2.0, 3.0]
NOISE = [0.011, -0.007, -0.004]
CASES = {"grows": lambda x: 0.02 + 0.03 * x, "shrinks": lambda x: 0.12 - 0.03 * x,
         "flat": lambda x: 0.05, "flips sign": lambda x: -0.09 + 0.06 * x}


@pytest.mark.parametrize("word", CASES)
def test_each_reading_of_a_trend_follows_the_cis(word):
    x = [size for size in SIZES for _ in NOISE]
    y = [CASES[word](size) + noise for size in SIZES for noise in NOISE]
    fit, hand = trend(x, y), hand_trend(x, y)
    assert fit.reading == hand["reading"] == word
    assert (fit.slope, fit.low, fit.high, fit.p) == pytest.approx(
        (hand["slope"], hand["low"], hand["high"], hand["p"]), rel=1e-9, abs=1e-12)
    assert fit.smallest == pytest.approx(hand["small"])
    assert fit.largest == pytest.approx(hand["large"])


def test_a_slope_clear_of_zero_whose_largest_size_is_not_reads_shrinks():
    """The CIs, not the point estimate: a negative effect rising to about 0 shrinks (slope > 0)."""
    x = [size for size in SIZES for _ in NOISE]
    y = [-0.08 + 0.025 * size + 3 * noise for size in SIZES for noise in NOISE]
    fit = trend(x, y)
    assert fit.low > 0 and fit.largest[0] < 0 < fit.largest[1] and fit.reading == "shrinks"
    assert trend([0.0, 1.0], [0.1, 0.2]).reading == ""  # two pairs: no CI
    assert math.isnan(trend([0.0, 0.0, 0.0], [1, 2, 3]).slope)  # one size: no slope


@pytest.mark.xdist_group("scale-grid")
def test_scale_and_trend_tables_equal_a_hand_computation_from_the_runs(pair, tmp_path,
                                                                       tiny_corpus):
    results = tmp_path / "results"
    out = run_module("experiments.ablate", "--preset", "smoke", "--seeds", "2", "--experiments",
                     "pair", "--widths", *map(str, WIDTHS), "--depths", *map(str, DEPTHS), "--data",
                     tiny_corpus, "--results", results, "--jobs", "2", "--wandb", "off", "--set",
                     "max_iters=30")
    assert out.returncode == 0, out.stderr
    assert "16 runs planned" in out.stderr and "16 completed" in out.stderr
    folder = results / "smoke"
    doc = manifest.read(folder)
    final = {key: json.loads((folder / run_id / store.SUMMARY).read_text())["final_val_loss"]
             for key, run_id in runs_at(doc).items()}
    planned = tables.planned_runs(doc, load_runstore(results, "smoke").runs, folder)
    compared = next(comparison.of(doc, planned))
    table = compared.table.set_index(["variant", "width", "depth"])

    def delta(width: int, depth: int, seed: int) -> float:
        return final["no_mlp", width, depth, seed] - final["base", width, depth, seed]

    for width in WIDTHS:
        for depth in DEPTHS:
            deltas = [delta(width, depth, s) for s in (0, 1)]
            row = table.loc[("no_mlp", width, depth)]
            assert row["delta_val_mean"] == pytest.approx(np.mean(deltas), rel=1e-9)
            assert row["delta_val_high"] - row["delta_val_mean"] == pytest.approx(
                stats.t.ppf(0.975, 1) * stats.sem(deltas), rel=1e-9)
            assert row["final_val_loss_mean"] == pytest.approx(
                np.mean([final["no_mlp", width, depth, s] for s in (0, 1)]), rel=1e-12)
            assert math.isnan(table.loc[("base", width, depth), "delta_val_mean"])
    trends = compared.tables[comparison.TREND].set_index(["variant", "axis", "at"])
    for axis, other, fixed_values in (("depth", "width", WIDTHS), ("width", "depth", DEPTHS)):
        for fixed in fixed_values:
            x, y = [], []
            for size in DEPTHS if axis == "depth" else WIDTHS:
                width, depth = (fixed, size) if axis == "depth" else (size, fixed)
                x += [math.log2(size)] * 2
                y += [delta(width, depth, s) for s in (0, 1)]
            hand, row = hand_trend(x, y), trends.loc[("no_mlp", axis, f"{other} {fixed}")]
            assert (row["slope_mean"], row["slope_low"], row["slope_high"], row["slope_p"]) == \
                pytest.approx((hand["slope"], hand["low"], hand["high"], hand["p"]), rel=1e-9,
                              abs=1e-12)
            assert row["reading"] == hand["reading"] and row["pairs"] == 4
    # Through the report: tables.md, the CSVs and both figures.
    report = run_module("analysis.report", folder, timeout=600)
    assert report.returncode == 0, report.stderr
    assert "## pair (width axis: 16 32; depth axis: 1 2)" in report.stdout
    assert "slope of Δ val per doubling" in report.stdout
    assert len(pd.read_csv(folder / "pair.csv")) == 8
    assert len(pd.read_csv(folder / "pair_trend.csv")) == 4
    assert not (folder / "pair_lr_grid.csv").exists()
    for name in ("pair_delta_vs_size", "pair_scaling"):
        for ext in ("png", "svg"):
            assert (folder / "report" / "figures" / f"{name}.{ext}").stat().st_size > 1000
        assert f"{name}.png" in (folder / "report" / "progression.md").read_text()


def test_an_optuna_grid_takes_the_scale_axes_and_each_point_reruns_as_one_command(pair, tmp_path,
                                                                                  tiny_corpus,
                                                                                  capsys):
    """The grid's trials train the plan's runs; a trial's command (best.json's) trains that run."""
    (pair / "pair.yaml").write_text(PAIR + OWNERS.splitlines(keepends=True)[1])  # narrow
    data = ["--data", str(tiny_corpus), "--set", "max_iters=10"]
    args = ["--study", "sizes", "--grid", "pair", "--seeds", "1", "--widths", "16", "32",
            "--depths", "1", "2", "--results", str(tmp_path), "--preset", "smoke", *data]
    assert sweeps_cli.main(["create", *args]) == 0
    assert sweeps_cli.main(["worker", "--study", "sizes", "--results", str(tmp_path), "--threads",
                            "1", "--quiet", "--wandb", "off"]) == 0
    study = optuna.load_study(study_name="sizes",
                              storage=storage.default_storage(tmp_path / "sizes"))
    trials = study.get_trials()
    p, _ = plan("smoke", range(1), ["pair"], tmp_path, "sizes",
                {"data": str(tiny_corpus), "max_iters": 10}, {"width": WIDTHS, "depth": DEPTHS})
    assert sorted(t.user_attrs["run_id"] for t in trials) == sorted(c.run_id for c in p.runs)
    assert len(trials) == 10 and all(t.state.name == "COMPLETE" for t in trials)  # narrow: 2
    assert {t.params["n_embd"] for t in trials} == {8, 16, 32}
    assert {t.params["n_layer"] for t in trials} == {1, 2}
    sweep = from_attr(study.user_attrs["sweep"], "sizes")
    capsys.readouterr()
    for trial in trials:
        command = shlex.split(sweep.command(trial.params))
        assert command[:3] == ["python", "-m", "experiments.run"]
        assert run_cli.main([*command[3:], "--results", str(tmp_path), "--dry-run"]) == 0
        assert trial.user_attrs["run_id"] in capsys.readouterr().out
