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
  evaluates at step 0, so metrics.jsonl has it as `initial_val_loss`), ln(vocab size) if it has none.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from analysis.confidence import holm, mean_ci, paired_delta, paired_p
from analysis.tables import loss_cell, p_cell, same_models_note, status_counts

EXPLANATION = (
    "With a learning-rate axis each variant is shown at its own best lr (lowest mean final val over seeds among "
    "the lrs where all its runs completed); Δ val is against the baseline at the baseline's own best lr, paired "
    "by seed; p is a paired t-test, Holm-adjusted over the table's rows; LR sensitivity is Wortsman et al. "
    "(2023)'s mean over the grid of min(loss, loss at init) − best loss, mean ± 95% CI over seeds."
)
UNSTABLE = ("diverged", "failed")


def grid(planned: pd.DataFrame, definition: str) -> pd.DataFrame:
    """Per variant x grid lr: final val mean and CI over completed seeds, completed and planned counts."""
    part = planned[planned["definition"] == definition]
    rows = []
    for (variant, lr), runs in part.groupby(["variant", "grid_lr"], sort=False):
        done = runs[runs["status"] == "completed"]
        mean, low, high = mean_ci(done["final_val_loss"])
        rows.append({"variant": variant, "lr": float(lr), "final_val_loss_mean": mean, "final_val_loss_low": low,
                     "final_val_loss_high": high, "completed": len(done), "planned": len(runs),
                     "unstable": int(runs["status"].isin(UNSTABLE).sum())})
    return pd.DataFrame(rows)


def comparison(planned: pd.DataFrame, definition: str, lrs: list[float]) -> pd.DataFrame:
    """The LR-fair table of one definition: per variant its best lr and the numbers at it (see the module)."""
    part = planned[planned["definition"] == definition]
    compare = part["compare"].iloc[0]
    variants = list(dict.fromkeys(part["variant"]))
    cells = grid(planned, definition)
    best = {v: _best_lr(cells[cells["variant"] == v]) for v in variants}
    rows = []
    for i, variant in enumerate(variants):
        runs = part[part["variant"] == variant]
        baseline = (variants[i - 1] if i else None) if compare == "previous" else (
            compare if variant != compare else None)
        at_best = _val_by_seed(runs, best[variant])
        row: dict[str, Any] = {"variant": variant, "adds": runs["adds"].iloc[0], "component": runs["component"].iloc[0],
                               "best_lr": best[variant], "best_lr_at_edge": best[variant] in (lrs[0], lrs[-1])
                               and len(lrs) > 1}
        val = mean_ci(at_best.values())
        row["final_val_loss_mean"], row["final_val_loss_low"], row["final_val_loss_high"] = val
        if baseline:
            theirs = _val_by_seed(part[part["variant"] == baseline], best[baseline])
            delta, p = paired_delta(at_best, theirs), paired_p(at_best, theirs)
        else:
            delta, p = (math.nan,) * 3, math.nan
        row["delta_val_mean"], row["delta_val_low"], row["delta_val_high"] = delta
        row["delta_val_p"] = p
        row["sensitivity_mean"], row["sensitivity_low"], row["sensitivity_high"] = mean_ci(
            lr_sensitivity(runs, lrs).values())
        row |= {"compared_with": baseline, "compared_at_lr": best[baseline] if baseline else math.nan,
                "completed": int((runs["status"] == "completed").sum()), "planned": len(runs),
                "runs": status_counts(runs["status"]), "run_ids": " ".join(runs["run_id"])}
        rows.append(row)
    table = pd.DataFrame(rows)
    table["delta_val_p_holm"] = holm(table["delta_val_p"])
    return table


def lr_sensitivity(runs: pd.DataFrame, lrs: list[float]) -> dict[int, float]:
    """Wortsman et al. (2023)'s LR sensitivity of one variant, per seed that has a finished run at every grid lr:
    mean over η of min(ℓ(η), ℓ₀) − min over η of ℓ(η); a diverged run's ℓ(η) is taken as ℓ₀ (it learned nothing)."""
    out = {}
    for seed, by_seed in runs.groupby("seed"):
        points = by_seed.set_index("grid_lr")
        if not set(lrs) <= set(points.index) or not points.loc[lrs, "status"].isin(("completed", "diverged")).all():
            continue  # a seed still missing a grid point has no sensitivity yet
        init = [_loss_at_init(points.loc[lr]) for lr in lrs]
        loss = [points.loc[lr, "final_val_loss"] if points.loc[lr, "status"] == "completed" else math.inf
                for lr in lrs]
        loss = [x if math.isfinite(x) else math.inf for x in loss]
        best = min(loss)
        if math.isfinite(best):
            out[int(seed)] = float(np.mean([min(x, x0) for x, x0 in zip(loss, init, strict=True)]) - best)
    return out


def markdown(table: pd.DataFrame, compare: str) -> str:
    """The LR-fair table as a person reads it."""
    change = "adds" if compare == "previous" else "change"
    against = "previous" if compare == "previous" else compare
    shown = pd.DataFrame({
        "variant": table["variant"], change: table["adds"],
        "best lr": [_best_text(r) for _, r in table.iterrows()],
        "final val at best lr": [loss_cell(r, "final_val_loss") for _, r in table.iterrows()],
        f"Δ val vs {against} at its best lr": [loss_cell(r, "delta_val", signed=True) for _, r in table.iterrows()],
        "p (Holm)": table["delta_val_p_holm"].map(p_cell),
        "LR sensitivity": [loss_cell(r, "sensitivity") for _, r in table.iterrows()],
        "runs": table["runs"],
    })
    return shown.to_markdown(index=False, disable_numparse=True)


def grid_markdown(cells: pd.DataFrame, table: pd.DataFrame) -> str:
    """Final val per variant (rows, table order) x lr (columns); each variant's best lr in bold."""
    best = dict(zip(table["variant"], table["best_lr"], strict=True))
    lrs = sorted(cells["lr"].unique())
    rows = []
    for variant in table["variant"]:
        row = {"variant": variant}
        for lr in lrs:
            cell = cells[(cells["variant"] == variant) & (cells["lr"] == lr)]
            text = loss_cell(cell.iloc[0], "final_val_loss") if len(cell) else "—"
            if len(cell) and cell.iloc[0]["completed"] < cell.iloc[0]["planned"]:
                text += f" ({cell.iloc[0]['completed']}/{cell.iloc[0]['planned']})"
            row[f"lr {lr:g}"] = f"**{text}**" if best[variant] == lr else text
        rows.append(row)
    return pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)


def section(entry: dict[str, Any], planned: pd.DataFrame, table: pd.DataFrame) -> str:
    """One LR-axis definition's heading, description, LR-fair table and grid table."""
    lrs = " ".join(f"{lr:g}" for lr in entry["lrs"])
    return "\n\n".join(p for p in (
        f"## {entry['name']} (learning-rate axis: {lrs})", entry.get("description", ""), EXPLANATION,
        markdown(table, entry.get("compare", "previous")),
        "Final val loss at every grid lr (mean ± 95% CI; (k/n): only k of n seeds completed; bold: the best lr):",
        grid_markdown(grid(planned, entry["name"]), table), same_models_note(entry)) if p)


def _best_lr(cells: pd.DataFrame) -> float:
    eligible = cells[(cells["completed"] == cells["planned"]) & (cells["completed"] > 0)]
    if eligible.empty:
        return math.nan
    return float(eligible.loc[eligible["final_val_loss_mean"].idxmin(), "lr"])


def _val_by_seed(runs: pd.DataFrame, lr: float) -> dict[int, float]:
    done = runs[(runs["grid_lr"] == lr) & (runs["status"] == "completed")]
    return dict(zip(done["seed"].astype(int), done["final_val_loss"], strict=True))


def _loss_at_init(run: pd.Series) -> float:
    init = run.get("initial_val_loss")
    if init is not None and pd.notna(init):
        return float(init)
    return math.log(float(run["config.vocab_size"]))  # a uniform prediction over the characters


def _best_text(row: pd.Series) -> str:
    if pd.isna(row["best_lr"]):
        return "—"
    return f"{row['best_lr']:g}" + (" (grid edge: widen the grid)" if row["best_lr_at_edge"] else "")
