"""Does a variant's best learning rate move as the model grows? The lr-transfer table of an
experiment with a learning-rate axis and a scale axis (width, depth). muP (Yang et al. 2022, "Tensor
Programs V") is built so that the best lr of its base width stays the best one at every width, where
the standard parametrization's moves; `mup_transfer` asks exactly that, and any such experiment gets
the same table:

- per variant and size, the best lr of that size, picked by analysis.lr_tables' rule as the scale
  table picks it (lowest mean final val among the grid lrs where every planned run completed;
  flagged at the grid's edge), and the final val there (mean ± 95% CI over seeds);
- the base size of a scale axis: the base model's own value of it (the manifest's `base_point`, the
  point whose runs are today's runs), at the row's size of the other scale axis where there are two;
  where the axis does not hold it, its smallest size (tuned small, transferred up);
- steps: the index of the row's best lr on the sorted lr grid minus that of the variant's best lr at
  the base size (> 0: a higher lr);
- a verdict per variant and scale axis (and size of the other one): the largest |steps| over its
  sizes; it transfers where that is at most one grid step, else it moves, by the size farthest off.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from analysis import lr_tables
from analysis.scale_tables import Size, along
from analysis.tables import count_cell, loss_cell
from experiments.axes import Axis, describe

CAPTION = (
    "Does the best lr move as the model grows? Each variant's best lr at each size, the final val "
    "there, and the distance in steps of the sorted lr grid from its best lr at the base size (the "
    "base model's own, whose runs are today's; at the row's size of the other scale axis where "
    "there are two; > 0: a higher lr). It transfers where the best lr stays within one grid step "
    "of the base size's at every size, else it moves:"
)
PICKED = ["params", "best_lr", "best_lr_at_edge", "final_val_loss_mean", "final_val_loss_low",
          "final_val_loss_high"]
COUNTS = ["completed", "planned", "runs", "run_ids"]


def base_sizes(scale_table: pd.DataFrame, scale: Sequence[Axis],
               base_point: dict[str, Any]) -> Size:
    """Each scale axis's base size (see the module)."""
    found = {}
    for axis in scale:
        values = sorted(scale_table[axis.name].unique())
        held = base_point.get(axis.name)
        found[axis.name] = axis.typed(held if held in values else values[0])
    return found


def steps_column(axis: Axis) -> str:
    return f"steps_from_base_{axis.name}"


def table(scale_table: pd.DataFrame, scale: Sequence[Axis], lrs: Sequence[float],
          base_point: dict[str, Any]) -> pd.DataFrame:
    """Per variant and size, in the scale table's order (analysis.scale_tables, whose best lrs these
    are): the best lr, final val there, each scale axis's base size, the best lr there and the steps
    between them, and the variant whose runs these are where they are another's (`same_runs_as`)."""
    names = [a.name for a in scale]
    index = {lr: i for i, lr in enumerate(sorted(lrs))}
    bases = base_sizes(scale_table, scale, base_point)
    best = {(r["variant"], *(r[n] for n in names)): r["best_lr"] for _, r in scale_table.iterrows()}
    owners: dict[tuple[Any, ...], str] = {}  # (size..., run ids) -> the first variant with them
    rows = []
    for _, r in scale_table.iterrows():
        row = {c: r[c] for c in ("variant", "adds", "component", *names, *PICKED)}
        for axis in scale:
            base = bases[axis.name]
            at_base = best.get((r["variant"], *(base if n == axis.name else r[n] for n in names)),
                               math.nan)
            known = not (pd.isna(r["best_lr"]) or pd.isna(at_base))
            row |= {f"base_{axis.name}": base, f"best_lr_at_base_{axis.name}": at_base,
                    steps_column(axis): index[r["best_lr"]] - index[at_base] if known else None}
        owner = owners.setdefault((*(r[n] for n in names), r["run_ids"]), r["variant"])
        row["same_runs_as"] = owner if owner != r["variant"] else None
        rows.append(row | {c: r[c] for c in COUNTS})
    found = pd.DataFrame(rows)
    for axis in scale:  # whole steps, empty where a best lr is not known yet
        found[steps_column(axis)] = found[steps_column(axis)].astype("Int64")
    return found


def verdict(line: pd.DataFrame, axis: Axis) -> str:
    """One variant's verdict along one axis (see the module), from its rows at every size of it."""
    steps = line[steps_column(axis)]
    known = line[steps.notna()]
    if known.empty:
        return f"— (no best lr at {axis.label(line[f'base_{axis.name}'].iloc[0])} yet)"
    largest = int(steps.abs().max())
    farthest = known.loc[known[steps_column(axis)].abs() == largest, axis.name].max()
    said = (f"transfers (within one grid step at every {axis.title})" if largest <= 1 else
            f"moves ({largest} steps by {axis.label(farthest)})")
    text = f"largest distance {largest} grid step{'' if largest == 1 else 's'}: {said}"
    missing = line.loc[steps.isna(), axis.name]
    if len(missing):
        text += f"; no best lr yet at {axis.title} {' '.join(axis.texts(list(missing)))}"
    edge = line.loc[line["best_lr_at_edge"].astype(bool), axis.name]
    if len(edge):
        text += (f"; best lr at the grid's edge at {axis.title} {' '.join(axis.texts(list(edge)))}"
                 ": widen the grid to be sure")
    return text


def verdicts(found: pd.DataFrame, scale: Sequence[Axis]) -> list[str]:
    """Per variant (in order) and scale axis (and size of the other one): its verdict line."""
    lines = []
    for variant, mine in found.groupby("variant", sort=False):
        for axis in scale:
            for fixed, line in along(mine, [a for a in scale if a is not axis]):
                at = f" at {describe(fixed)}" if fixed else ""
                lines.append(f"**{variant}** along the {axis.title}{at}: {verdict(line, axis)}")
    return lines


def markdown(found: pd.DataFrame, scale: Sequence[Axis]) -> str:
    """The table as a person reads it."""
    rows = list(found.iterrows())
    shown = pd.DataFrame({
        "variant": found["variant"],
        **{a.name: [a.text(v) for v in found[a.name]] for a in scale},
        "params": found["params"].map(count_cell),
        "best lr": [lr_tables.best_text(r) for _, r in rows],
        "final val at best lr": [loss_cell(r, "final_val_loss") for _, r in rows],
        **{f"grid steps from {a.label(found[f'base_{a.name}'].iloc[0])}'s best lr":
           [_steps_cell(r, a) for _, r in rows] for a in scale},
        "runs": found["runs"],
    })
    return shown.to_markdown(index=False, disable_numparse=True)


def same_runs_note(found: pd.DataFrame, scale: Sequence[Axis]) -> str:
    """The rows whose runs are another variant's (muP at its base width is SP): that variant's best
    lr there, by construction."""
    shared = [f"{r['variant']} at {describe({a.name: r[a.name] for a in scale})} has "
              f"{r['same_runs_as']}'s runs"
              for _, r in found.iterrows() if pd.notna(r["same_runs_as"])]
    if not shared:
        return ""
    return ("Note: where a variant is another's model, it has that variant's runs, so its best lr "
            f"there is that variant's: {'; '.join(shared)}.")


def part(found: pd.DataFrame, scale: Sequence[Axis]) -> str:
    """The table's part of a section: caption, table, a verdict a line, the note on shared runs."""
    lines = "\n".join(f"- {v}" for v in verdicts(found, scale))
    return "\n\n".join(p for p in (CAPTION, markdown(found, scale), lines,
                                    same_runs_note(found, scale)) if p)


def _steps_cell(row: pd.Series, axis: Axis) -> str:
    steps = row[steps_column(axis)]
    if pd.isna(steps):
        return "—"
    if row[axis.name] == row[f"base_{axis.name}"]:
        return "0 (base)"
    return f"{steps:+d}" if steps else "0"
