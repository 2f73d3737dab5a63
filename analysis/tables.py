"""The comparison tables: one per experiment definition in the manifest (the ladder, leave-one-out, ...).

Rows follow the manifest's variant order and take their runs from the manifest's run ids (a run
shared by two experiments appears in both). Only completed runs enter a mean; a planned run that
failed, diverged, is still running or was never started is counted in `runs`, never averaged in.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.confidence import holm, mean_ci, paired_delta, paired_p

LOSSES = ("initial_train_loss", "initial_val_loss", "final_train_loss", "final_val_loss")
LOSS_HEADERS = {"initial_train_loss": "initial train", "initial_val_loss": "initial val",
                "final_train_loss": "final train", "final_val_loss": "final val"}
SAMPLE_CHARS = 300
STATUS_ORDER = ("completed", "diverged", "failed", "pruned", "running", "interrupted", "damaged",
                "unreadable", "not started")
EXPLANATION = (
    "Losses are cross-entropy in nats per character, mean ± 95% CI half-width (Student's t) over the completed "
    "seeds; Δ val is the final val loss minus that of the row it is compared with, paired by seed, and p (Holm) its "
    "paired t-test p-value, Holm–Bonferroni-adjusted over the table's rows. Runs that did not complete are counted "
    "in `runs`, never averaged in."
)


def membership(manifest: dict[str, Any]) -> pd.DataFrame:
    """One row per planned run of each definition: definition, order, variant, adds, component, seed, run_id,
    and grid_lr, its point on the definition's learning-rate axis (NaN without one; analysis.lr_tables)."""
    rows = [{"definition": e["name"], "compare": e.get("compare", "previous"), "order": i, "variant": v["name"],
             "adds": v.get("adds", ""), "component": v.get("component", ""), "seed": r["seed"], "run_id": r["run_id"],
             "grid_lr": r.get("lr", math.nan)}
            for e in manifest["experiments"] for i, v in enumerate(e["variants"]) for r in v["runs"]]
    return pd.DataFrame(rows, columns=["definition", "compare", "order", "variant", "adds", "component", "seed",
                                       "run_id", "grid_lr"])


def planned_runs(manifest: dict[str, Any], runs: pd.DataFrame, folder: Path) -> pd.DataFrame:
    """`membership` joined with the runs frame; runs that have no row get status 'not started' or 'unreadable'."""
    # A run listed twice (a W&B project with a forced rerun) counts once: its latest record.
    latest = runs.drop(columns=["variant", "seed"]).drop_duplicates("run_id", keep="last")
    planned = membership(manifest).merge(latest, on="run_id", how="left")
    absent = pd.Series(["unreadable" if (folder / r).exists() else "not started" for r in planned["run_id"]],
                       index=planned.index, dtype=object)
    planned["status"] = planned["status"].where(planned["status"].notna(), absent)
    return planned


def comparison(planned: pd.DataFrame, definition: str) -> pd.DataFrame:
    """The numeric table of one definition: per variant, means and CIs over completed seeds, Δ final val."""
    part = planned[planned["definition"] == definition]
    compare = part["compare"].iloc[0]
    variants = list(dict.fromkeys(part["variant"]))
    val_by_seed = {v: _by_seed(part[(part["variant"] == v) & (part["status"] == "completed")]) for v in variants}
    rows = []
    for i, variant in enumerate(variants):
        runs = part[part["variant"] == variant]
        done = runs[runs["status"] == "completed"]
        if compare == "previous":
            baseline = variants[i - 1] if i else None
        else:
            baseline = compare if variant != compare else None
        row: dict[str, Any] = {"variant": variant, "adds": runs["adds"].iloc[0], "component": runs["component"].iloc[0],
                               "params": _first(runs, "params"), "flops_per_token": _first(runs, "flops_per_token")}
        for loss in LOSSES:
            row[f"{loss}_mean"], row[f"{loss}_low"], row[f"{loss}_high"] = mean_ci(done[loss])
        delta = paired_delta(val_by_seed[variant], val_by_seed[baseline]) if baseline else (math.nan,) * 3
        row["delta_val_mean"], row["delta_val_low"], row["delta_val_high"] = delta
        row["delta_val_p"] = paired_p(val_by_seed[variant], val_by_seed[baseline]) if baseline else math.nan
        row |= {"compared_with": baseline, "tokens_per_sec": done["tokens_per_sec"].mean(),
                "train_flops": done["train_flops"].mean(), "completed": len(done), "planned": len(runs),
                "runs": status_counts(runs["status"]), "run_ids": " ".join(runs["run_id"])}
        rows.append(row)
    table = pd.DataFrame(rows)
    table["delta_val_p_holm"] = holm(table["delta_val_p"])
    return table


def markdown(table: pd.DataFrame, compare: str) -> str:
    """The table as a person reads it: mean ± 95% CI half-width, counts of runs by status."""
    change = "adds" if compare == "previous" else "change"
    delta = "Δ val vs previous" if compare == "previous" else f"Δ val vs {compare}"
    shown = pd.DataFrame({
        "variant": table["variant"], change: table["adds"],
        "params": table["params"].map(_count), "FLOPs/token": table["flops_per_token"].map(_count),
        **{LOSS_HEADERS[loss]: [loss_cell(r, loss) for _, r in table.iterrows()] for loss in LOSSES},
        delta: [loss_cell(r, "delta_val", signed=True) for _, r in table.iterrows()],
        "p (Holm)": table["delta_val_p_holm"].map(p_cell),
        "tokens/s": table["tokens_per_sec"].map(_count), "runs": table["runs"],
    })
    return shown.to_markdown(index=False, disable_numparse=True)


def samples(planned: pd.DataFrame, definition: str, shown: set[str]) -> str:
    """One sample per variant (its lowest completed seed), skipping runs in `shown`; adds what it shows."""
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
    """One definition's heading, description, table and its variants that are no model of their own."""
    parts = (f"## {entry['name']}", entry.get("description", ""), markdown(table, entry.get("compare", "previous")),
             same_models_note(entry))
    return "\n\n".join(p for p in parts if p)


def same_models_note(entry: dict[str, Any]) -> str:
    """The variants the plan found to be the same model as another (experiments.plan): no row, one note."""
    return " ".join(f"Note: {name} is the same model as {same} under these settings (its change is a no-op "
                    "here); it has no row of its own." for name, same in entry.get("same_models", {}).items())


def samples_section(manifest: dict[str, Any], planned: pd.DataFrame) -> str:
    """One sample per variant of every definition, each run shown once."""
    shown: set[str] = set()
    parts = []
    for entry in manifest["experiments"]:
        text = samples(planned, entry["name"], shown)
        if text:
            parts += [f"### {entry['name']}", text]
    return "\n\n".join([f"## Samples (first {SAMPLE_CHARS} characters)", *parts]) if parts else ""


def report(manifest: dict[str, Any], planned: pd.DataFrame) -> tuple[str, str, dict[str, pd.DataFrame]]:
    """The Markdown of every table (what `make ablate` prints), of one sample per rung, and the numeric tables:
    `<definition>`, and for a definition with a learning-rate axis its LR-fair table and `<definition>_lr_grid`."""
    from analysis import lr_tables  # it builds on this module's cells, so it imports this module first

    numeric, sections = {}, []
    for e in manifest["experiments"]:
        name = e["name"]
        if "lrs" in e:
            numeric[name] = lr_tables.comparison(planned, name, e["lrs"])
            numeric[f"{name}_lr_grid"] = lr_tables.grid(planned, name)
            sections.append(lr_tables.section(e, planned, numeric[name]))
        else:
            numeric[name] = comparison(planned, name)
            sections.append(section(e, numeric[name]))
    parts = [title(manifest), EXPLANATION, *sections]
    return "\n\n".join(parts) + "\n", samples_section(manifest, planned), numeric


def title(manifest: dict[str, Any]) -> str:
    seeds = ", ".join(map(str, manifest.get("seeds", [])))
    return f"# {manifest['name']}: preset {manifest.get('preset')}, seeds {seeds}"


def _by_seed(runs: pd.DataFrame) -> dict[int, float]:
    return dict(zip(runs["seed"].astype(int), runs["final_val_loss"], strict=True))


def status_counts(statuses: pd.Series) -> str:
    """'2 completed, 1 diverged': completed first, then the others in STATUS_ORDER."""
    rank = {s: i for i, s in enumerate(STATUS_ORDER)}
    counted = sorted(Counter(statuses).items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0]))
    return ", ".join(f"{n} {status}" for status, n in counted)


def _first(runs: pd.DataFrame, column: str) -> float:
    values = runs[column].dropna()
    return values.iloc[0] if len(values) else math.nan


def _count(value: float) -> str:
    return "—" if pd.isna(value) else f"{value:,.0f}"


def p_cell(p: float) -> str:
    return "—" if pd.isna(p) else f"{p:.3g}"


def loss_cell(row: pd.Series, name: str, signed: bool = False) -> str:
    mean, high = row[f"{name}_mean"], row[f"{name}_high"]
    if pd.isna(mean):
        return "—"
    text = f"{mean:+.3f}" if signed else f"{mean:.3f}"
    return text if pd.isna(high) else f"{text} ± {high - mean:.3f}"
