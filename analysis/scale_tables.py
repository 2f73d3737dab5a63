"""Tables of an experiment with a scale axis (width, depth): each variant at each model size against
the baseline at the same size, and how that comparison moves as the model grows.

- the scale table: per variant and size, the final val loss (mean ± 95% CI over completed seeds;
  with an lr axis, at the variant's own best lr of that size, analysis.lr_tables) and Δ val against
  the baseline at the same size (at the baseline's own best lr of that size), paired by seed, with
  a paired t-test's p Holm-adjusted over the table's rows;
- the trend table: per variant and scale axis (at each size of the other scale axis, where there
  are two), the slope of Δ val against log2(size) over every (size, seed) pair, its 95% CI and p,
  and a one-word reading that follows the CIs (analysis.confidence.trend); p Holm-adjusted too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from analysis import lr_tables
from analysis.confidence import holm, mean_ci, trend
from analysis.tables import (
    baseline_of,
    count_cell,
    first,
    loss_cell,
    p_cell,
    paired,
    run_counts,
    val_by_seed,
    with_holm,
)
from experiments.axes import Axis, describe

EXPLANATION = (
    "With a scale axis each variant is trained at every size; Δ val is against the baseline at the "
    "same size, paired by seed, with p a paired t-test Holm-adjusted over the table's rows{lr}. "
    "The trend is the slope of that Δ against log2(size) (per doubling) over every size and seed, "
    "with its 95% CI and p; its reading follows the CIs, never the point estimate: flat (the "
    "slope's CI holds 0), flips sign (the fitted Δ is clear of 0 on opposite sides at the smallest "
    "and the largest size), grows (clear of 0 at the largest size, on the side the slope points "
    "to: the effect moves away from 0) or shrinks (it moves towards 0)."
)
AT_BEST_LR = "; with a learning-rate axis, each variant at its own best lr of that size"
TREND_CAPTION = "How Δ val moves as the model grows (slope per doubling of the size, ± 95% CI):"
TREND_COLUMNS = ["variant", "adds", "component", "axis", "at", "sizes", "pairs", "slope_mean",
                 "slope_low", "slope_high", "slope_p", "delta_smallest_low", "delta_smallest_high",
                 "delta_largest_low", "delta_largest_high", "reading", "compared_with"]

Size = dict[str, Any]  # scale axis name -> value


def sizes(part: pd.DataFrame, scale: Sequence[Axis]) -> list[Size]:
    """The sizes one definition's runs were planned at, smallest first."""
    columns = [a.column for a in scale]
    found = part[columns].drop_duplicates().sort_values(columns)
    return [{a.name: a.typed(row[a.column]) for a in scale} for _, row in found.iterrows()]


def at_size(frame: pd.DataFrame, size: Size, columns: dict[str, str]) -> pd.DataFrame:
    """The rows of `frame` at one size; `columns` names the column of each of the size's axes."""
    return frame[np.logical_and.reduce([frame[columns[a]] == v for a, v in size.items()])]


def _at(part: pd.DataFrame, size: Size, scale: Sequence[Axis]) -> pd.DataFrame:
    return at_size(part, size, {a.name: a.column for a in scale})


def along(rows: pd.DataFrame, others: Sequence[Axis]) -> list[tuple[Size, pd.DataFrame]]:
    """The rows at each size of the other scale axes ({} and every row where there is none)."""
    if not others:
        return [({}, rows)]
    names = [a.name for a in others]
    return [(dict(zip(names, key, strict=True)), part)
            for key, part in rows.groupby(names, sort=True)]


def values_by_size(part: pd.DataFrame, scale: Sequence[Axis], with_lr: bool
                   ) -> dict[tuple[Any, ...], dict[str, tuple[dict[int, float], float]]]:
    """Per size (its values, in `scale`'s order) and variant: the final val by seed that stands for
    the variant there, and the lr it was picked at (its best lr of that size; NaN without one)."""
    out = {}
    for size in sizes(part, scale):
        runs = _at(part, size, scale)
        best = lr_tables.best_lrs(runs) if with_lr else {}
        out[tuple(size.values())] = {
            v: (val_by_seed(lr_tables.at_lr(mine, best[v]) if with_lr else mine),
                best.get(v, math.nan))
            for v, mine in runs.groupby("variant", sort=False)}
    return out


def scale_table(part: pd.DataFrame, scale: Sequence[Axis], lrs: list[float] | None) -> pd.DataFrame:
    """Per variant (manifest order) and size (smallest first): final val, and Δ val against the
    baseline at that size."""
    compare = part["compare"].iloc[0]
    variants = list(dict.fromkeys(part["variant"]))
    picked = values_by_size(part, scale, lrs is not None)
    rows = []
    for i, variant in enumerate(variants):
        baseline = baseline_of(variants, i, compare)
        for size in sizes(part, scale):
            here = picked[tuple(size.values())]
            if variant not in here:
                continue
            runs = _at(part[part["variant"] == variant], size, scale)
            values, best = here[variant]
            row: dict[str, Any] = {"variant": variant, "adds": runs["adds"].iloc[0],
                                   "component": runs["component"].iloc[0], **size,
                                   "params": first(runs, "params")}
            if lrs is not None:
                row |= {"best_lr": best,
                        "best_lr_at_edge": best in (lrs[0], lrs[-1]) and len(lrs) > 1}
            mean, low, high = mean_ci(values.values())
            row |= {"final_val_loss_mean": mean, "final_val_loss_low": low,
                    "final_val_loss_high": high}
            theirs = here.get(baseline) if baseline else None
            row |= paired(values, theirs[0] if theirs else None)
            row["compared_with"] = baseline
            if lrs is not None:
                row["compared_at_lr"] = theirs[1] if theirs else math.nan
            rows.append(row | run_counts(runs))
    return with_holm(rows)


def same_runs_note(table: pd.DataFrame, scale: Sequence[Axis]) -> str:
    """The sizes at which a variant's runs are its baseline's (its change is a no-op there, or it
    keeps a setting the baseline has at that size): its Δ there is 0 by construction."""
    def key(row: Any, variant: str) -> tuple[Any, ...]:
        return (variant, *(getattr(row, a.name) for a in scale))

    runs = {key(r, r.variant): r.run_ids for r in table.itertuples()}
    same = [f"{r.variant} at {describe({a.name: getattr(r, a.name) for a in scale})}"
            for r in table.itertuples()
            if isinstance(r.compared_with, str) and runs.get(key(r, r.compared_with)) == r.run_ids]
    if not same:
        return ""
    return f"Note: these are the same runs as the row they are compared with: {'; '.join(same)}."


def trend_table(part: pd.DataFrame, scale: Sequence[Axis], with_lr: bool) -> pd.DataFrame:
    """Per variant with a baseline, scale axis and size of the other scale axes: Δ val's trend."""
    compare = part["compare"].iloc[0]
    variants = list(dict.fromkeys(part["variant"]))
    picked = values_by_size(part, scale, with_lr)
    rows = []
    for i, variant in enumerate(variants):
        baseline = baseline_of(variants, i, compare)
        if baseline is None:
            continue
        labels = part[part["variant"] == variant].iloc[0]
        for k, axis in enumerate(scale):
            others = [a for a in scale if a is not axis]
            for fixed in sorted({key[:k] + key[k + 1:] for key in picked}):
                x, y, along = [], [], []
                for key in sorted(key for key in picked if key[:k] + key[k + 1:] == fixed):
                    mine, theirs = picked[key].get(variant), picked[key].get(baseline)
                    if mine is None or theirs is None:
                        continue
                    along.append(key[k])
                    for seed in sorted(mine[0].keys() & theirs[0].keys()):
                        x.append(math.log2(key[k]))
                        y.append(mine[0][seed] - theirs[0][seed])
                fit = trend(x, y)
                held = {a.name: v for a, v in zip(others, fixed, strict=True)}
                rows.append([
                    variant, labels["adds"], labels["component"], axis.name, describe(held),
                    " ".join(axis.texts(along)), len(y), fit.slope, fit.low, fit.high, fit.p,
                    *fit.smallest, *fit.largest, fit.reading, baseline])
    table = pd.DataFrame(rows, columns=TREND_COLUMNS)
    table["slope_p_holm"] = holm(table["slope_p"])
    return table


def markdown(table: pd.DataFrame, scale: Sequence[Axis], compare: str) -> str:
    """The scale table as a person reads it."""
    with_lr = "best_lr" in table
    against = "the row above" if compare == "previous" else compare
    at_best = " at its best lr" if with_lr else ""
    rows = list(table.iterrows())
    shown = pd.DataFrame({
        "variant": table["variant"], "adds" if compare == "previous" else "change": table["adds"],
        **{a.name: [a.text(v) for v in table[a.name]] for a in scale},
        "params": table["params"].map(count_cell),
        **({"best lr": [lr_tables.best_text(r) for _, r in rows]} if with_lr else {}),
        f"final val{at_best}": [loss_cell(r, "final_val_loss") for _, r in rows],
        f"Δ val vs {against}{at_best}, same size": [loss_cell(r, "delta_val", signed=True)
                                                   for _, r in rows],
        "p (Holm)": table["delta_val_p_holm"].map(p_cell), "runs": table["runs"],
    })
    return shown.to_markdown(index=False, disable_numparse=True)


def trend_markdown(table: pd.DataFrame, compare: str) -> str:
    """The trend table as a person reads it."""
    shown = pd.DataFrame({
        "variant": table["variant"], "adds" if compare == "previous" else "change": table["adds"],
        "along": table["axis"], **({"at": table["at"]} if (table["at"] != "").any() else {}),
        "sizes": table["sizes"],
        "slope of Δ val per doubling": [loss_cell(r, "slope", signed=True)
                                        for _, r in table.iterrows()],
        "p": table["slope_p"].map(p_cell), "p (Holm)": table["slope_p_holm"].map(p_cell),
        "reading": table["reading"].replace("", "—"),
    })
    return shown.to_markdown(index=False, disable_numparse=True)


def lr_grid(part: pd.DataFrame, scale: Sequence[Axis]) -> pd.DataFrame:
    """The lr grid (analysis.lr_tables.grid) at every size, the size's values first."""
    names = [a.name for a in scale]
    grid = pd.concat([lr_tables.grid(_at(part, size, scale)).assign(**size)
                      for size in sizes(part, scale)], ignore_index=True)
    return grid[names + [c for c in grid.columns if c not in names]]


def lr_grid_markdown(part: pd.DataFrame, cells: pd.DataFrame, table: pd.DataFrame,
                     scale: Sequence[Axis]) -> str:
    """Final val per variant x lr, one table per size; each row's best lr of its size in bold."""
    by_name = {a.name: a.name for a in scale}
    parts = []
    for size in sizes(part, scale):
        here = at_size(table, size, by_name)
        best = dict(zip(here["variant"], here["best_lr"], strict=True))
        rows = [{"variant": v, **{a.name: a.text(size[a.name]) for a in scale}} for v in best]
        parts.append(lr_tables.grid_markdown(at_size(cells, size, by_name), best, rows))
    return "\n\n".join(parts)
