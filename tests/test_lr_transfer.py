"""Tune once, transfer up (issue 26): an experiment with an lr axis and a scale axis gets the
lr-transfer table (each size's best lr, its distance in grid steps from the base size's, a verdict
per variant) and figure (final val against lr, a panel per variant, a line per size), through the
one Comparison, on a synthetic folder with fixed numbers; nothing trained."""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib
import pandas as pd
import pytest
from scipy import stats

from analysis import comparison, figures, lr_transfer, report, tables, wandb_dashboard
from experiments import manifest, store
from tests.synthetic_runs import lr_transfer_manifest

matplotlib.use("Agg")

# By hand from tests/synthetic_runs.py's parabolas: the grid lr with the lowest mean among those
# where both seeds completed (muP's 1.0 at width 128, lr 0.03 has a diverged twin: not eligible).
BEST = {("sp", 32): 0.03, ("sp", 64): 0.01, ("sp", 128): 0.001,
        ("mup", 32): 0.01, ("mup", 64): 0.01, ("mup", 128): 0.003}
STEPS = {("sp", 32): 1, ("sp", 64): 0, ("sp", 128): -2,  # on 0.001 0.003 0.01 0.03, from width 64
         ("mup", 32): 0, ("mup", 64): 0, ("mup", 128): -1}
SP_MOVES = ("largest distance 2 grid steps: moves (2 steps by width 128); best lr at the grid's "
            "edge at width 32 128: widen the grid to be sure")
MUP_TRANSFERS = "largest distance 1 grid step: transfers (within one grid step at every width)"


def compared(tmp_path: Path, depths: tuple[int, ...] = (), base_width: int = 64
             ) -> tuple[comparison.Comparison, dict, pd.DataFrame]:
    written, runs = lr_transfer_manifest(depths)
    written["base_point"]["width"] = base_width
    tmp_path.mkdir(exist_ok=True)
    store.write_json(tmp_path / manifest.MANIFEST, written)
    doc = manifest.read(tmp_path)
    planned = tables.planned_runs(doc, runs, tmp_path)
    (found,) = comparison.of(doc, planned)
    return found, doc, planned


def test_best_lrs_steps_and_verdicts_equal_a_hand_computation(tmp_path):
    found, doc, planned = compared(tmp_path)
    table = found.tables[comparison.LR_TRANSFER]
    by_row = table.set_index(["variant", "width"])
    for (variant, width), best in BEST.items():
        row = by_row.loc[(variant, width)]
        assert row["best_lr"] == best and row["steps_from_base_width"] == STEPS[variant, width]
        assert (row["base_width"], row["best_lr_at_base_width"]) == (64, 0.01)
        assert row["best_lr_at_edge"] == (best in (0.001, 0.03))
        floor = 2.0 if variant == "sp" or width == 64 else 1.95  # width 64: sp's runs for both
        vals = [floor - 0.1 * math.log2(width) + 0.01 * seed for seed in (0, 1)]
        half = stats.t.ppf(0.975, 1) * stats.sem(vals)
        assert (row["final_val_loss_mean"], row["final_val_loss_high"]) == pytest.approx(
            (sum(vals) / 2, sum(vals) / 2 + half), rel=1e-12)
    # muP at its base width has SP's runs, and says so.
    assert list(table["same_runs_as"].fillna("")) == ["", "", "", "", "sp", ""]
    # One rule for the best lr: the scale table's, row for row.
    assert list(table["best_lr"]) == list(found.table["best_lr"])
    assert lr_transfer.verdicts(table, found.scale) == [
        f"**sp** along the width: {SP_MOVES}", f"**mup** along the width: {MUP_TRANSFERS}"]
    # tables.md and the CSV, as `make ablate` and `make report` write them.
    text, files = report.table_files(doc, planned)
    csv = pd.read_csv(io.StringIO(files["mup_transfer_lr_transfer.csv"]))
    assert list(csv["steps_from_base_width"]) == [STEPS[k] for k in BEST]
    assert list(csv["same_runs_as"].fillna("")) == list(table["same_runs_as"].fillna(""))
    for said in (lr_transfer.CAPTION, f"- **sp** along the width: {SP_MOVES}",
                 f"- **mup** along the width: {MUP_TRANSFERS}", "mup at width 64 has sp's runs",
                 "grid steps from width 64's best lr"):
        assert said in text
    # The W&B dashboard's panel shows the same tables.
    (panel,) = [p for p in wandb_dashboard.panels(found) if hasattr(p, "markdown")]
    assert f"**sp** along the width: {SP_MOVES}" in panel.markdown


def test_two_scale_axes_give_steps_and_a_verdict_per_size_of_the_other(tmp_path):
    found, _, _ = compared(tmp_path, depths=(2, 4))
    table = found.tables[comparison.LR_TRANSFER].set_index(["variant", "width", "depth"])
    for (variant, width), steps in STEPS.items():
        for depth in (2, 4):  # the parabolas do not move with depth
            row = table.loc[(variant, width, depth)]
            assert (row["steps_from_base_width"], row["steps_from_base_depth"]) == (steps, 0)
    lines = lr_transfer.verdicts(found.tables[comparison.LR_TRANSFER], found.scale)
    assert len(lines) == 2 * (2 + 3)  # per variant: along the width at 2 depths, the depth at 3
    assert f"**sp** along the width at depth 4: {SP_MOVES}" in lines
    assert "**mup** along the depth at width 128: largest distance 0 grid steps: transfers " \
        "(within one grid step at every depth)" in lines


def test_a_base_size_off_the_axis_counts_from_the_smallest_size(tmp_path):
    found, _, _ = compared(tmp_path, base_width=16)
    table = found.tables[comparison.LR_TRANSFER]
    assert set(table["base_width"]) == {32}
    assert list(table["steps_from_base_width"]) == [0, -1, -3, 0, 0, -1]
    assert lr_transfer.verdicts(table, found.scale)[0].startswith(
        "**sp** along the width: largest distance 3 grid steps: moves (3 steps by width 128)")


def test_the_figure_has_a_panel_per_variant_and_a_line_per_width(tmp_path):
    found, _, _ = compared(tmp_path)
    made = dict(figures.of(found, pd.DataFrame()))
    assert list(made) == ["mup_transfer_delta_vs_size", "mup_transfer_scaling",
                          "mup_transfer_lr_transfer"]
    fig = made["mup_transfer_lr_transfer"]
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["sp", "mup"]
    for ax in panels:
        lines = [line.get_label() for line in ax.get_lines()
                 if not line.get_label().startswith("_")]
        assert lines == ["width 32", "width 64 (base)", "width 128"]
        stars = [line for line in ax.get_lines() if line.get_marker() == "*"]
        assert len(stars) == 3  # each width's best lr
        assert ax.get_xscale() == "log" and ax.get_ylim() == panels[0].get_ylim()
    # muP's lone seed at 1.0 (its twin diverged) lies below every complete mean: cut, and said.
    assert panels[0].get_ylim()[0] > 1.0
    assert any("what lies beyond is cut" in t.get_text() for t in fig.texts)
    two, _, _ = compared(tmp_path / "two", depths=(2, 4))
    assert len([ax for ax in dict(figures.of(two, pd.DataFrame()))[
        "mup_transfer_lr_transfer"].axes if ax.get_title()]) == 2 * (2 + 3)
