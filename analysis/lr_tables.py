"""Tables that compare every variant at its own best learning rate: experiments with an LR axis.

An experiment planned with a learning-rate axis (`make ablate LRS=...`, or its definition's `lrs:`)
trains every variant at every grid lr; its manifest entry lists the grid as `lrs` and each run its
`lr`. Comparing variants at one shared lr favours whichever variant that lr suits, so here:

- the grid table: final val loss per variant x lr (mean ± 95% CI over completed seeds);
- the best lr of a variant: the grid lr with the lowest mean final val loss, among the lrs where
  every planned run completed (an lr where a seed diverged, failed or has not run is not eligible);
  a best lr at either end of the grid is flagged: the optimum may lie outside it;
- Δ val: the variant at its best lr minus the baseline at *the baseline's own* best lr, paired by
  seed, with a paired t-test p-value Holm-adjusted over the table's rows (analysis.confidence);
- LR sensitivity (Wortsman et al. 2023, "Small-scale proxies for large-scale Transformer training
  instabilities", arXiv:2309.14322): E_η[min(ℓ(η), ℓ₀) − min_η ℓ(η)] over the grid, computed per
  seed and reported as mean ± 95% CI over seeds. ℓ(η) is the run's final val loss (a diverged run
  counts as ℓ₀), ℓ₀ the loss at initialization: the run's own step-0 evaluation (the training loop
  evaluates at step 0, so metrics.jsonl has it as `initial_val_loss`), ln(vocab size) if it has
  none.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from analysis.confidence import mean_ci
from analysis.tables import (
    baseline_of,
    loss_cell,
    p_cell,
    paired,
    run_counts,
    same_models_note,
    val_by_seed,
    with_holm,
)
from experiments.axes import LR

EXPLANATION = (
    "With a learning-rate axis each variant is shown at its own best lr (lowest mean final val "
    "over seeds among the lrs where all its runs completed); Δ val is against the baseline at the "
    "baseline's own best lr, paired by seed; p is a paired t-test, Holm-adjusted over the table's "
    "rows; LR sensitivity is Wortsman et al. (2023)'s mean over the grid of min(loss, loss at "
    "init) − best loss, mean ± 95% CI over seeds."
)
UNSTABLE = ("diverged", "failed")


def grid(part: pd.DataFrame) -> pd.DataFrame:
    """Per variant x grid lr of one definition's planned runs: final val mean and CI over completed
    seeds, completed and planned counts."""
    rows = []
    for (variant, lr), runs in part.groupby(["variant", LR.column], sort=False):
        done = runs[runs["status"] == "completed"]
        mean, low, high = mean_ci(done["final_val_loss"])
        rows.append({"variant": variant, "lr": float(lr), "final_val_loss_mean": mean,
                     "final_val_loss_low": low, "final_val_loss_high": high, "completed": len(done),
                     "planned": len(runs), "unstable": int(runs["status"].isin(UNSTABLE).sum())})
    return pd.DataFrame(rows)


def best_lrs(part: pd.DataFrame) -> dict[str, float]:
    """Each variant's best lr among one definition's planned runs (see the module)."""
    cells = grid(part)
    return {v: _best_lr(cells[cells["variant"] == v]) for v in dict.fromkeys(part["variant"])}


def at_lr(runs: pd.DataFrame, lr: float) -> pd.DataFrame:
    """The runs at one grid lr."""
    return runs[runs[LR.column] == lr]


def comparison(part: pd.DataFrame, lrs: list[float]) -> pd.DataFrame:
    """The LR-fair table of one definition's planned runs: per variant its best lr and the numbers
    at it (see the module)."""
    compare = part["compare"].iloc[0]
    variants = list(dict.fromkeys(part["variant"]))
    best = best_lrs(part)
    at_best = {v: val_by_seed(at_lr(part[part["variant"] == v], best[v])) for v in variants}
    rows = []
    for i, variant in enumerate(variants):
        runs = part[part["variant"] == variant]
        baseline = baseline_of(variants, i, compare)
        row: dict[str, Any] = {"variant": variant, "adds": runs["adds"].iloc[0],
                               "component": runs["component"].iloc[0], "best_lr": best[variant],
                               "best_lr_at_edge": best[variant] in (lrs[0], lrs[-1])
                               and len(lrs) > 1}
        val = mean_ci(at_best[variant].values())
        row["final_val_loss_mean"], row["final_val_loss_low"], row["final_val_loss_high"] = val
        row |= paired(at_best[variant], at_best[baseline] if baseline else None)
        row["sensitivity_mean"], row["sensitivity_low"], row["sensitivity_high"] = mean_ci(
            lr_sensitivity(runs, lrs).values())
        row |= {"compared_with": baseline,
                "compared_at_lr": best[baseline] if baseline else math.nan, **run_counts(runs)}
        rows.append(row)
    return with_holm(rows)


def lr_sensitivity(runs: pd.DataFrame, lrs: list[float]) -> dict[int, float]:
    """Wortsman et al. (2023)'s LR sensitivity of one variant, per seed that has a finished run at
    every grid lr: mean over η of min(ℓ(η), ℓ₀) − min over η of ℓ(η); a diverged run's ℓ(η) is taken
    as ℓ₀ (it learned nothing)."""
    out = {}
    for seed, by_seed in runs.groupby("seed"):
        points = by_seed.set_index(LR.column)
        if (not set(lrs) <= set(points.index)
            or not points.loc[lrs, "status"].isin(("completed", "diverged")).all()):
            continue  # a seed still missing a grid point has no sensitivity yet
        init = [_loss_at_init(points.loc[lr]) for lr in lrs]
        loss = [points.loc[lr, "final_val_loss"] if points.loc[lr, "status"] == "completed"
                else math.inf
                for lr in lrs]
        loss = [x if math.isfinite(x) else math.inf for x in loss]
        best = min(loss)
        if math.isfinite(best):
            out[int(seed)] = float(
                np.mean([min(x, x0) for x, x0 in zip(loss, init, strict=True)]) - best)
    return out


def markdown(table: pd.DataFrame, compare: str) -> str:
    """The LR-fair table as a person reads it."""
    change = "adds" if compare == "previous" else "change"
    against = "previous" if compare == "previous" else compare
    shown = pd.DataFrame({
        "variant": table["variant"], change: table["adds"],
        "best lr": [best_text(r) for _, r in table.iterrows()],
        "final val at best lr": [loss_cell(r, "final_val_loss") for _, r in table.iterrows()],
        f"Δ val vs {against} at its best "
        "lr": [loss_cell(r, "delta_val", signed=True) for _, r in table.iterrows()],
        "p (Holm)": table["delta_val_p_holm"].map(p_cell),
        "LR sensitivity": [loss_cell(r, "sensitivity") for _, r in table.iterrows()],
        "runs": table["runs"],
    })
    return shown.to_markdown(index=False, disable_numparse=True)


def grid_markdown(cells: pd.DataFrame, best: dict[str, float],
                  rows: list[dict[str, Any]] | None = None) -> str:
    """Final val per row x lr (columns), each row's best lr in bold. Rows: `{"variant": v}` per
    variant of `best` (in its order), or the given rows, each naming its variant and any columns of
    its own before the lrs."""
    lrs = sorted(cells["lr"].unique())
    columns = [f"lr {text}" for text in LR.texts(lrs)]
    shown = []
    for row in rows or [{"variant": v} for v in best]:
        line = dict(row)
        for lr, column in zip(lrs, columns, strict=True):
            cell = cells[(cells["variant"] == row["variant"]) & (cells["lr"] == lr)]
            text = loss_cell(cell.iloc[0], "final_val_loss") if len(cell) else "—"
            if len(cell) and cell.iloc[0]["completed"] < cell.iloc[0]["planned"]:
                text += f" ({cell.iloc[0]['completed']}/{cell.iloc[0]['planned']})"
            line[column] = f"**{text}**" if best[row["variant"]] == lr else text
        shown.append(line)
    return pd.DataFrame(shown).to_markdown(index=False, disable_numparse=True)


GRID_CAPTION = ("Final val loss at every grid lr (mean ± 95% CI; (k/n): only k of n seeds "
                "completed; bold: the best lr):")


def section(entry: dict[str, Any], part: pd.DataFrame, table: pd.DataFrame) -> str:
    """One LR-axis definition's heading, description, LR-fair table and grid table."""
    lrs = " ".join(LR.texts(entry["axes"]["lr"]))
    best = dict(zip(table["variant"], table["best_lr"], strict=True))
    return "\n\n".join(p for p in (
        f"## {entry['name']} ({LR.axis_name}: {lrs})", entry.get("description", ""), EXPLANATION,
        markdown(table, entry.get("compare", "previous")), GRID_CAPTION,
        grid_markdown(grid(part), best), same_models_note(entry)) if p)


def _best_lr(cells: pd.DataFrame) -> float:
    eligible = cells[(cells["completed"] == cells["planned"]) & (cells["completed"] > 0)]
    if eligible.empty:
        return math.nan
    return float(eligible.loc[eligible["final_val_loss_mean"].idxmin(), "lr"])


def _loss_at_init(run: pd.Series) -> float:
    init = run.get("initial_val_loss")
    if init is not None and pd.notna(init):
        return float(init)
    return math.log(float(run["config.vocab_size"]))  # a uniform prediction over the characters


def best_text(row: pd.Series) -> str:
    if pd.isna(row["best_lr"]):
        return "—"
    return (f"{row['best_lr']:g}" + (" (grid edge: widen the grid)" if row["best_lr_at_edge"]
                                     else ""))
