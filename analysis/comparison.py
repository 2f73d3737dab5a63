"""One experiment definition of a manifest, compared: the object that the tables, the report, the
W&B dashboard and the notebook ask, whatever axes the experiment has.

An experiment's axes (experiments.axes, from its manifest entry) decide its tables: without axes,
today's table (analysis.tables); a learning-rate axis alone, each variant at its own best lr
(analysis.lr_tables); a scale axis (width, depth; with or without an lr axis), each variant at each
size against the baseline at that size, and the trend of that Δ (analysis.scale_tables); a scale
axis and an lr axis, also how far each size's best lr is from the base size's
(analysis.lr_transfer).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import pandas as pd

from analysis import lr_tables, lr_transfer, scale_tables, tables
from experiments.axes import BY_NAME, LR, Axis

# The CSV files of one definition: `<definition><suffix>.csv`, by what they hold.
MAIN, LR_GRID, TREND, LR_TRANSFER = "", "_lr_grid", "_trend", "_lr_transfer"
SUFFIXES = (MAIN, LR_GRID, TREND, LR_TRANSFER)


@dataclass(frozen=True)
class Comparison:
    entry: dict[str, Any]  # the definition's manifest entry (experiments.manifest, format 2)
    planned: pd.DataFrame  # every planned run of the manifest (analysis.tables.planned_runs)
    # The base model's point on every axis (the manifest's `base_point`; {} in format 1, which had
    # no scale axis): a scale axis's base size.
    base_point: dict[str, Any]

    @property
    def name(self) -> str:
        return self.entry["name"]

    @property
    def compare(self) -> str:
        return self.entry.get("compare", "previous")

    @property
    def axes(self) -> dict[Axis, list[Any]]:
        return {BY_NAME[name]: values for name, values in self.entry["axes"].items()}

    @property
    def lrs(self) -> list[float] | None:
        """The learning-rate axis's values; None without one."""
        return self.entry["axes"].get(LR.name)

    @property
    def scale(self) -> list[Axis]:
        """Its scale axes (width, depth), in axis order; [] without."""
        return [a for a in self.axes if a.scale]

    @cached_property
    def part(self) -> pd.DataFrame:
        """Its planned runs."""
        return self.planned[self.planned["definition"] == self.name]

    @cached_property
    def tables(self) -> dict[str, pd.DataFrame]:
        """Its numeric tables by CSV suffix: MAIN (a row per variant, or per variant and size) and,
        where they apply, LR_GRID (final val per variant and lr), TREND (Δ against the size) and
        LR_TRANSFER (each size's best lr against the base size's)."""
        if self.scale:
            found = {MAIN: scale_tables.scale_table(self.part, self.scale, self.lrs),
                     TREND: scale_tables.trend_table(self.part, self.scale, self.lrs is not None)}
            if self.lrs:
                found[LR_GRID] = scale_tables.lr_grid(self.part, self.scale)
                found[LR_TRANSFER] = lr_transfer.table(found[MAIN], self.scale, self.lrs,
                                                       self.base_point)
            return found
        if self.lrs:
            return {MAIN: lr_tables.comparison(self.part, self.lrs),
                    LR_GRID: lr_tables.grid(self.part)}
        return {MAIN: tables.comparison(self.part)}

    @property
    def table(self) -> pd.DataFrame:
        """Its main table."""
        return self.tables[MAIN]

    def markdown(self) -> str:
        """Its tables as a person reads them (the W&B dashboard's panel): main table, trend, and
        with an lr axis too, the lr transfer with its verdicts."""
        if self.scale:
            main = scale_tables.markdown(self.table, self.scale, self.compare)
            trend = scale_tables.trend_markdown(self.tables[TREND], self.compare)
            transfer = (lr_transfer.part(self.tables[LR_TRANSFER], self.scale),) if self.lrs else ()
            return "\n\n".join((main, scale_tables.TREND_CAPTION, trend, *transfer))
        if self.lrs:
            return lr_tables.markdown(self.table, self.compare)
        return tables.markdown(self.table, self.compare)

    def section(self) -> str:
        """Its section of tables.md and of the report: heading, description, explanation, tables
        and notes."""
        if not self.scale:
            if self.lrs:
                return lr_tables.section(self.entry, self.part, self.table)
            return tables.section(self.entry, self.table)
        along = "; ".join(f"{a.axis_name}: {' '.join(a.texts(v))}" for a, v in self.axes.items())
        grid = ()
        if self.lrs:
            grid = (lr_tables.GRID_CAPTION, scale_tables.lr_grid_markdown(
                self.part, self.tables[LR_GRID], self.table, self.scale))
        explanation = scale_tables.EXPLANATION.format(
            lr=scale_tables.AT_BEST_LR if self.lrs else "")
        parts = (f"## {self.name} ({along})", self.entry.get("description", ""), explanation,
                 self.markdown(), *grid, scale_tables.same_runs_note(self.table, self.scale),
                 tables.same_models_note(self.entry))
        return "\n\n".join(p for p in parts if p)

    def delta_header(self) -> str:
        if self.compare == "previous":
            return "Δ val vs the row above"
        return f"Δ val vs {self.compare}"


def of(manifest: dict[str, Any], planned: pd.DataFrame) -> Iterator[Comparison]:
    """One comparison per definition of the manifest, in its order."""
    base_point = manifest.get("base_point", {})
    return (Comparison(entry, planned, base_point) for entry in manifest["experiments"])


def report(manifest: dict[str, Any], planned: pd.DataFrame
           ) -> tuple[str, str, dict[str, pd.DataFrame]]:
    """The Markdown of every table (what `make ablate` prints), of one sample per rung, and the
    numeric tables by CSV name (`<definition><suffix>`, SUFFIXES)."""
    comparisons = list(of(manifest, planned))
    numeric = {f"{c.name}{suffix}": table for c in comparisons
               for suffix, table in c.tables.items()}
    parts = [tables.title(manifest), tables.EXPLANATION, *(c.section() for c in comparisons)]
    return "\n\n".join(parts) + "\n", tables.samples_section(manifest, planned), numeric
