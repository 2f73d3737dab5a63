"""The comparison tables of an experiment without axes, and what every comparison table shares: the
planned runs of a manifest, the baseline of each row, the paired Δ, the counts of runs, the cells.

Rows follow the manifest's variant order and take their runs from the manifest's run ids (a run
shared by two experiments appears in both). Only completed runs enter a mean; a planned run that
failed, diverged, is still running or was never started is counted in `runs`, never averaged in.
Which table an experiment gets (this one, analysis.lr_tables or analysis.scale_tables) is for
analysis.comparison to say.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.confidence import holm, mean_ci, paired_delta, paired_p
from experiments.axes import AXES

LOSSES = ("initial_train_loss", "initial_val_loss", "final_train_loss", "final_val_loss")
LOSS_HEADERS = {"initial_train_loss": "initial train", "initial_val_loss": "initial val",
                "final_train_loss": "final train", "final_val_loss": "final val"}
SAMPLE_CHARS = 300
STATUS_ORDER = ("completed", "diverged", "failed", "pruned", "running", "interrupted", "damaged",
                "unreadable", "not started")
EXPLANATION = (
    "Losses are cross-entropy in nats per character, mean ± 95% CI half-width (Student's t) over "
    "the completed seeds; Δ val is the final val loss minus that of the row it is compared with, "
    "paired by seed, and p (Holm) its paired t-test p-value, Holm–Bonferroni-adjusted over the "
    "table's rows. Runs that did not complete are counted in `runs`, never averaged in."
)


def membership(manifest: dict[str, Any]) -> pd.DataFrame:
    """One row per planned run of each definition: definition, order, variant, adds, component,
    seed, run_id, and per axis (experiments.axes) its point on it: grid_width, grid_depth, grid_lr
    (NaN: not an axis of it)."""
    rows = [{"definition": e["name"], "compare": e.get("compare", "previous"), "order": i,
             "variant": v["name"], "adds": v.get("adds", ""), "component": v.get("component", ""),
             "seed": r["seed"], "run_id": r["run_id"],
             **{a.column: r.get(a.name, math.nan) for a in AXES}}
            for e in manifest["experiments"] for i, v in enumerate(e["variants"])
            for r in v["runs"]]
    return pd.DataFrame(rows, columns=["definition", "compare", "order", "variant", "adds",
                                       "component", "seed", "run_id", *(a.column for a in AXES)])


def planned_runs(manifest: dict[str, Any], runs: pd.DataFrame, folder: Path) -> pd.DataFrame:
    """`membership` joined with the runs frame; runs that have no row get status 'not started' or
    'unreadable'."""
    # A run listed twice (a W&B project with a forced rerun) counts once: its latest record.
    latest = runs.drop(columns=["variant", "seed"]).drop_duplicates("run_id", keep="last")
    planned = membership(manifest).merge(latest, on="run_id", how="left")
    absent = pd.Series(["unreadable" if (folder / r).exists() else "not started"
                        for r in planned["run_id"]],
                       index=planned.index, dtype=object)
    planned["status"] = planned["status"].where(planned["status"].notna(), absent)
    return planned


def baseline_of(variants: list[str], i: int, compare: str) -> str | None:
    """The variant row i is compared with: the row above (compare "previous") or the baseline."""
    if compare == "previous":
        return variants[i - 1] if i else None
    return compare if variants[i] != compare else None


def paired(values: dict[int, float], baseline: dict[int, float] | None) -> dict[str, float]:
    """Δ final val against the baseline's values, paired by seed: mean and 95% CI, and the paired
    t-test's p (NaN without a baseline). Holm's correction over a table's rows is `with_holm`'s."""
    if baseline is None:
        return {"delta_val_mean": math.nan, "delta_val_low": math.nan, "delta_val_high": math.nan,
                "delta_val_p": math.nan}
    mean, low, high = paired_delta(values, baseline)
    return {"delta_val_mean": mean, "delta_val_low": low, "delta_val_high": high,
            "delta_val_p": paired_p(values, baseline)}


def run_counts(runs: pd.DataFrame) -> dict[str, Any]:
    """A row's runs: how many completed, how many were planned, all of them by status, their ids."""
    return {"completed": int((runs["status"] == "completed").sum()), "planned": len(runs),
            "runs": status_counts(runs["status"]), "run_ids": " ".join(runs["run_id"])}


def with_holm(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The rows as a table, with their Δ's p-values Holm-adjusted over the table."""
    table = pd.DataFrame(rows)
    table["delta_val_p_holm"] = holm(table["delta_val_p"])
    return table


def val_by_seed(runs: pd.DataFrame) -> dict[int, float]:
    """Final val loss by seed, of the completed runs among `runs`."""
    done = runs[runs["status"] == "completed"]
    return dict(zip(done["seed"].astype(int), done["final_val_loss"], strict=True))


def comparison(part: pd.DataFrame) -> pd.DataFrame:
    """The numeric table of one definition's planned runs: per variant, means and CIs over completed
    seeds, Δ final val."""
    compare = part["compare"].iloc[0]
    variants = list(dict.fromkeys(part["variant"]))
    values = {v: val_by_seed(part[part["variant"] == v]) for v in variants}
    rows = []
    for i, variant in enumerate(variants):
        runs = part[part["variant"] == variant]
        done = runs[runs["status"] == "completed"]
        baseline = baseline_of(variants, i, compare)
        row: dict[str, Any] = {"variant": variant, "adds": runs["adds"].iloc[0],
                               "component": runs["component"].iloc[0],
                               "params": first(runs, "params"),
                               "flops_per_token": first(runs, "flops_per_token")}
        for loss in LOSSES:
            row[f"{loss}_mean"], row[f"{loss}_low"], row[f"{loss}_high"] = mean_ci(done[loss])
        row |= paired(values[variant], values[baseline] if baseline else None)
        row |= {"compared_with": baseline, "tokens_per_sec": done["tokens_per_sec"].mean(),
                "train_flops": done["train_flops"].mean(), **run_counts(runs)}
        rows.append(row)
    return with_holm(rows)


def markdown(table: pd.DataFrame, compare: str) -> str:
    """The table as a person reads it: mean ± 95% CI half-width, counts of runs by status."""
    change = "adds" if compare == "previous" else "change"
    delta = "Δ val vs previous" if compare == "previous" else f"Δ val vs {compare}"
    shown = pd.DataFrame({
        "variant": table["variant"], change: table["adds"],
        "params": table["params"].map(count_cell),
        "FLOPs/token": table["flops_per_token"].map(count_cell),
        **{LOSS_HEADERS[loss]: [loss_cell(r, loss) for _, r in table.iterrows()]
           for loss in LOSSES},
        delta: [loss_cell(r, "delta_val", signed=True) for _, r in table.iterrows()],
        "p (Holm)": table["delta_val_p_holm"].map(p_cell),
        "tokens/s": table["tokens_per_sec"].map(count_cell), "runs": table["runs"],
    })
    return shown.to_markdown(index=False, disable_numparse=True)


def samples(planned: pd.DataFrame, definition: str, shown: set[str]) -> str:
    """One sample per variant (its lowest completed seed), skipping runs in `shown`; adds what it
    shows."""
    part = planned[(planned["definition"] == definition) & (planned["status"] == "completed")]
    blocks = []
    for variant, runs in part.sort_values(["order", "seed"]).groupby("variant", sort=False):
        run = runs.iloc[0]
        if run["run_id"] in shown or not isinstance(run["sample"], str):
            continue
        shown.add(run["run_id"])
        text = run["sample"][:SAMPLE_CHARS].replace("```", "'''")
        blocks.append(f"**{variant}** (seed {run['seed']}):\n\n```text\n{text}\n```")
    return "\n\n".join(blocks)


def section(entry: dict[str, Any], table: pd.DataFrame) -> str:
    """One definition's heading, description, table and its variants that are no model of their
    own."""
    parts = (f"## {entry['name']}", entry.get("description", ""),
             markdown(table, entry.get("compare", "previous")), same_models_note(entry))
    return "\n\n".join(p for p in parts if p)


def same_models_note(entry: dict[str, Any]) -> str:
    """The variants the plan found to be the same model as another (experiments.plan): no row, one
    note."""
    return " ".join(f"Note: {name} is the same model as {same} under these settings (its change is "
                    "a no-op here); it has no row of its "
                    "own." for name, same in entry.get("same_models", {}).items())


def samples_section(manifest: dict[str, Any], planned: pd.DataFrame) -> str:
    """One sample per variant of every definition, each run shown once."""
    shown: set[str] = set()
    parts = []
    for entry in manifest["experiments"]:
        text = samples(planned, entry["name"], shown)
        if text:
            parts += [f"### {entry['name']}", text]
    return "\n\n".join([f"## Samples (first {SAMPLE_CHARS} characters)", *parts]) if parts else ""


def title(manifest: dict[str, Any]) -> str:
    seeds = ", ".join(map(str, manifest.get("seeds", [])))
    return f"# {manifest['name']}: preset {manifest.get('preset')}, seeds {seeds}"


def status_counts(statuses: pd.Series) -> str:
    """'2 completed, 1 diverged': completed first, then the others in STATUS_ORDER."""
    rank = {s: i for i, s in enumerate(STATUS_ORDER)}
    counted = sorted(Counter(statuses).items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0]))
    return ", ".join(f"{n} {status}" for status, n in counted)


def first(runs: pd.DataFrame, column: str) -> float:
    values = runs[column].dropna()
    return values.iloc[0] if len(values) else math.nan


def count_cell(value: float) -> str:
    return "—" if pd.isna(value) else f"{value:,.0f}"


def p_cell(p: float) -> str:
    return "—" if pd.isna(p) else f"{p:.3g}"


def loss_cell(row: pd.Series, name: str, signed: bool = False) -> str:
    mean, high = row[f"{name}_mean"], row[f"{name}_high"]
    if pd.isna(mean):
        return "—"
    text = f"{mean:+.3f}" if signed else f"{mean:.3f}"
    return text if pd.isna(high) else f"{text} ± {high - mean:.3f}"
