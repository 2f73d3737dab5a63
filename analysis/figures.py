"""The progression figures, drawn for a README: labelled axes with units, rung order kept, one
colour per component (analysis.palette, from the tables' `component` column), saved as PNG and SVG
by `show`. `of` picks a definition's figures from its comparison (analysis.comparison)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from IPython.display import Image, display
from matplotlib import ticker
from matplotlib.figure import Figure

from analysis.comparison import LR_GRID, LR_TRANSFER, Comparison
from analysis.confidence import t_interval
from analysis.palette import colours
from analysis.scale_tables import along, at_size
from experiments.axes import LR, Axis, describe

LOSS_UNIT = "loss (nats/char)"
Colour = tuple[float, float, float]
DODGE = 1.04


def setup() -> None:
    """seaborn's theme at a size that stays readable when a README shrinks the figure."""
    sns.set_theme(style="whitegrid", context="notebook", font_scale=1.05,
                  rc={"figure.dpi": 100, "savefig.dpi": 150, "savefig.bbox": "tight",
                      "svg.fonttype": "none"})


def show(fig: Figure, name: str, out_dir: Path | str) -> None:
    """Write `figures/<name>.png` and `.svg` under `out_dir` and display the PNG in the notebook.

    The output's `filename` metadata makes nbconvert's Markdown export link that same file.
    """
    folder = Path(out_dir) / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    png = folder / f"{name}.png"
    fig.savefig(png)
    fig.savefig(folder / f"{name}.svg")
    plt.close(fig)
    display(Image(filename=str(png)), metadata={"filename": png.name})


def loss_curves(evals: pd.DataFrame, table: pd.DataFrame, title: str) -> Figure:
    """Train and val loss against step, one line per rung (in `table`'s order), the 95% CI over
    seeds as a band."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    order = list(table["variant"])
    for ax, split in zip(axes, ("train", "val"), strict=True):
        sns.lineplot(data=evals, x="step", y=f"{split}_loss", hue="variant", hue_order=order,
                     palette=colours(table), errorbar=t_interval, ax=ax, legend=split == "val")
        ax.set(xlabel="training step", ylabel=LOSS_UNIT, title=f"{split} loss")
    sns.move_legend(axes[1], "upper left", bbox_to_anchor=(1.02, 1), title="rung (in order)",
                    frameon=False)
    fig.suptitle(title)
    return fig


def final_loss(table: pd.DataFrame, title: str) -> Figure:
    """Final val loss per variant, mean and 95% CI over seeds, in table order from the top."""
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(table) + 1.4))
    palette = colours(table)
    for i, row in enumerate(table.itertuples()):
        if pd.notna(row.final_val_loss_mean):
            ax.errorbar(row.final_val_loss_mean, i, xerr=_xerr(row, "final_val_loss"), fmt="o",
                        ms=7, capsize=4, color=palette[row.variant])
    ax.set_yticks(range(len(table)), [_label(r) for r in table.itertuples()])
    ax.set_ylim(len(table) - 0.5, -0.5)
    ax.set(xlabel=f"final val {LOSS_UNIT}, mean and 95% CI", title=title)
    return fig


def delta(table: pd.DataFrame, baseline: str, title: str) -> Figure:
    """Each variant's final val loss minus the baseline's (paired by seed), with 95% CIs."""
    rows = table[table["variant"] != baseline].reset_index(drop=True)
    palette = colours(rows)
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.4))
    for i, row in enumerate(rows.itertuples()):
        if pd.notna(row.delta_val_mean):
            ax.barh(i, row.delta_val_mean, xerr=_xerr(row, "delta_val"), capsize=4,
                    color=palette[row.variant])
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(len(rows)), [_label(r) for r in rows.itertuples()])
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set(xlabel=f"Δ final val loss vs {baseline} (nats/char); > 0: the removed part helped",
           title=title)
    return fig


def loss_vs_cost(table: pd.DataFrame, title: str) -> Figure:
    """Final val loss against parameters and against training compute, the rungs joined in order."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    palette = colours(table)
    done = table.dropna(subset=["final_val_loss_mean"])
    for ax, x, label in ((axes[0], "params", "parameters"),
                         (axes[1], "train_flops", "training compute (FLOPs, forward + backward)")):
        shown = done[done[x] > 0]  # the bigram's table lookup costs 0 FLOPs: no place on a log axis
        # Rungs of (nearly) equal size sit side by side, 4% apart, not on top of each other.
        bucket = np.round(np.log(shown[x]) / np.log(DODGE))
        same = bucket.groupby(bucket).transform("size")
        position = shown[x] * DODGE ** (bucket.groupby(bucket).cumcount() - (same - 1) / 2)
        ax.plot(position, shown["final_val_loss_mean"], color="0.75", lw=1, zorder=1)
        for at, row in zip(position, shown.itertuples(), strict=True):
            ax.errorbar(at, row.final_val_loss_mean, yerr=_xerr(row, "final_val_loss"), fmt="o",
                        ms=7, capsize=4, color=palette[row.variant], label=row.variant, zorder=2)
        ax.set_xscale("log")
        # 2k, 3k, 5k, 10k, ... in SI prefixes
        ax.xaxis.set_minor_locator(ticker.LogLocator(subs=(2, 3, 5)))
        ax.xaxis.set_major_formatter(ticker.EngFormatter())
        ax.xaxis.set_minor_formatter(ticker.EngFormatter())
        # major and minor labels on one line
        ax.tick_params(axis="x", which="both", length=0, pad=6)
        ax.set(xlabel=label, ylabel=f"final val {LOSS_UNIT}")
        left_out = ", ".join(done.loc[done[x] <= 0, "variant"])
        if left_out:
            ax.text(0.02, 0.02, f"not shown (0 FLOPs): {left_out}", transform=ax.transAxes,
                    fontsize="small")
    axes[1].legend(*axes[0].get_legend_handles_labels(), loc="upper left", bbox_to_anchor=(1.02, 1),
                   title="rung (in order)", frameon=False)
    fig.suptitle(title)
    return fig


def lr_curves(cells: pd.DataFrame, table: pd.DataFrame, title: str) -> Figure:
    """Final val loss against learning rate (log x): one line per variant (analysis.lr_tables'
    grid), its 95% CI over seeds as a band and its best lr (the LR-fair table's) as a star."""
    fig, ax = plt.subplots(figsize=(9, 5))
    palette = colours(table)
    for row in table.itertuples():
        line = cells[cells["variant"] == row.variant].sort_values("lr")
        colour = palette[row.variant]
        ax.plot(line["lr"], line["final_val_loss_mean"], "o-", color=colour, label=row.variant,
                ms=5)
        band = line.dropna(subset=["final_val_loss_low"])
        ax.fill_between(band["lr"], band["final_val_loss_low"], band["final_val_loss_high"],
                        color=colour, alpha=0.2, lw=0)
        if pd.notna(row.best_lr):
            ax.plot(row.best_lr, row.final_val_loss_mean, "*", ms=16, color=colour,
                    markeredgecolor="black", zorder=3)
    _lr_axis(ax, cells)
    ax.set(ylabel=f"final val {LOSS_UNIT}", title=title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), title="variant (★ its best lr)",
              frameon=False)
    return fig


def lr_sensitivity(table: pd.DataFrame, title: str) -> Figure:
    """Each variant's LR sensitivity (Wortsman et al. 2023; analysis.lr_tables), mean and 95% CI
    over seeds."""
    palette = colours(table)
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(table) + 1.4))
    for i, row in enumerate(table.itertuples()):
        if pd.notna(row.sensitivity_mean):
            ax.barh(i, row.sensitivity_mean, xerr=_xerr(row, "sensitivity"), capsize=4,
                    color=palette[row.variant])
    ax.set_yticks(range(len(table)), [_label(r) for r in table.itertuples()])
    ax.set_ylim(len(table) - 0.5, -0.5)
    ax.set(xlabel="LR sensitivity: mean over the grid of min(loss, loss at init) − best loss "
                  "(nats/char); "
           "lower = less sensitive", title=title)
    return fig


def attention_logits(evals: pd.DataFrame, table: pd.DataFrame, lrs: list[float],
                     title: str) -> Figure:
    """The largest attention logit against step at each of `lrs`, one line per variant with its 95%
    CI band over seeds; log y, since without QK-norm it grows by orders of magnitude at high
    learning rates."""
    fig, axes = plt.subplots(1, len(lrs), figsize=(6 * len(lrs), 4.5), sharey=True, squeeze=False)
    order = list(table["variant"])
    for i, (ax, lr) in enumerate(zip(axes[0], lrs, strict=True)):
        sns.lineplot(data=evals[evals["grid_lr"] == lr], x="step", y="max_attn_logit",
                     hue="variant", hue_order=order, palette=colours(table), errorbar=t_interval,
                     ax=ax, legend=i == len(lrs) - 1)
        ax.set(yscale="log", xlabel="training step", ylabel="largest attention logit q·k/√d",
               title=f"lr {lr:g}")
    sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1.02, 1), title="variant",
                    frameon=False)
    fig.suptitle(title)
    return fig


def delta_vs_size(table: pd.DataFrame, scale: list[Axis], against: str, title: str) -> Figure:
    """Δ final val against the size (log2 x), a line per variant with its 95% CI band: a panel per
    scale axis (and per size of the other one, where there are two); from the scale table."""
    rows = table[table["compared_with"].notna()]
    panels = [(axis, fixed, part) for axis in scale
              for fixed, part in along(rows, [a for a in scale if a is not axis])]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.8), sharey=True,
                             squeeze=False)
    palette = colours(table)
    for ax, (axis, fixed, part) in zip(axes[0], panels, strict=True):
        for variant, line in part.groupby("variant", sort=False):
            line = line.sort_values(axis.name)
            colour = palette[variant]
            ax.plot(line[axis.name], line["delta_val_mean"], "o-", color=colour, label=variant,
                    ms=5)
            band = line.dropna(subset=["delta_val_low"])
            ax.fill_between(band[axis.name], band["delta_val_low"], band["delta_val_high"],
                            color=colour, alpha=0.2, lw=0)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xscale("log", base=2)
        values = sorted(part[axis.name].unique())
        ax.set_xticks(values, [axis.text(v) for v in values])
        ax.xaxis.set_minor_locator(ticker.NullLocator())
        ax.set(xlabel=f"{axis.title} ({axis.setting}, log scale)", title=describe(fixed) or None,
               ylabel=f"Δ final val vs {against} (nats/char)")
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1), title="variant (band: 95% CI)",
                       frameon=False)
    fig.suptitle(title)
    return fig


def lr_transfer(cells: pd.DataFrame, transfer: pd.DataFrame, scale: list[Axis], title: str
                ) -> Figure:
    """Final val loss against learning rate (log x), the muP papers' transfer figure: a panel per
    variant (a row of them per scale axis and size of the other one, where there are two), a line
    per size coloured light to dark, its 95% CI over seeds as a band and its best lr (the
    lr-transfer table's) as a star; from the lr grid at every size.

    One y range for every panel, so they compare: that of the means the best-lr rule reads (the lrs
    where every planned run completed), so an lr where runs blew up or partly diverged does not
    squash the curves' minima; what lies beyond is cut, and the caption under the panels says so."""
    variants = list(dict.fromkeys(transfer["variant"]))
    rows = [(axis, fixed) for axis in scale
            for fixed, _ in along(transfer, [a for a in scale if a is not axis])]
    height = 4.5 * len(rows)
    fig, axes = plt.subplots(len(rows), len(variants), figsize=(5.5 * len(variants) + 2, height),
                             sharex=True, sharey=True, squeeze=False)
    # Margins in inches, not fractions: the title and the caption keep their place at any height.
    fig.subplots_adjust(top=1 - 1.1 / height, bottom=0.8 / height, hspace=0.3)
    complete = cells["completed"] == cells["planned"]
    means = cells.loc[complete, "final_val_loss_mean"].dropna()
    means = means if len(means) else cells["final_val_loss_mean"].dropna()
    pad = 0.05 * (means.max() - means.min()) or 0.05
    bottom, top = means.min() - pad, means.max() + pad
    names = {a.name: a.name for a in scale}
    for (axis, fixed), panels in zip(rows, axes, strict=True):
        sizes = sorted(transfer[axis.name].unique())
        shades = dict(zip(sizes, sns.color_palette("crest", len(sizes)), strict=True))
        base = transfer[f"base_{axis.name}"].iloc[0]
        for variant, ax in zip(variants, panels, strict=True):
            for value in sizes:
                size = fixed | {axis.name: value}
                _size_line(ax, at_size(cells[cells["variant"] == variant], size, names),
                           at_size(transfer[transfer["variant"] == variant], size, names),
                           shades[value], axis.label(value) + (" (base)" if value == base else ""),
                           (bottom, top))
            _lr_axis(ax, cells)
            ax.set_title(" at ".join(filter(None, (variant, describe(fixed)))))
            ax.label_outer()  # the lr under the bottom row only
        panels[0].set_ylabel(f"final val {LOSS_UNIT}")
        panels[-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False,
                          title=f"{axis.title} (★ its best lr)")
    axes[0][0].set_ylim(bottom, top)
    mean, low, high = (cells[f"final_val_loss_{k}"] for k in ("mean", "low", "high"))
    cut = (high.fillna(mean) > top) | (low.fillna(mean) < bottom)
    notes = ["Band: 95% CI over seeds; ★: the best lr (lowest mean where every run completed)."]
    if (~complete).any():
        notes.append("Open circles: lrs where not every planned run completed (diverged, failed "
                     "or not run yet): the mean of the rest, never a best lr.")
    if cut.any():
        notes.append("y axis: the range of the means where every run completed, shared by the "
                     "panels; what lies beyond is cut (▲, ▼: a mean above, below it).")
    fig.text(0.01, 0, "\n".join(notes), ha="left", va="top", fontsize="small")
    fig.suptitle(title, y=1 - 0.2 / height)
    return fig


def _size_line(ax: plt.Axes, line: pd.DataFrame, best: pd.DataFrame, colour: Colour, label: str,
               limits: tuple[float, float]) -> None:
    """One size's final val against lr (its lr grid cells): means, open where some run did not
    complete, the CI band, a mean beyond the y limits as ▲ or ▼ at the edge, and its best lr (its
    lr-transfer row) starred."""
    line = line.sort_values("lr")
    mean = line["final_val_loss_mean"]
    ax.plot(line["lr"], mean, "o-", color=colour, ms=5, label=label)
    partly = line["completed"] < line["planned"]
    ax.plot(line["lr"][partly], mean[partly], "o", color=colour, mfc="white", ms=5, zorder=3)
    band = line.dropna(subset=["final_val_loss_low"])
    ax.fill_between(band["lr"], band["final_val_loss_low"], band["final_val_loss_high"],
                    color=colour, alpha=0.15, lw=0)
    (bottom, top) = limits
    for beyond, edge, marker in ((mean > top, top, "^"), (mean < bottom, bottom, "v")):
        ax.plot(line["lr"][beyond], [edge] * beyond.sum(), marker, color=colour, ms=8,
                clip_on=False)
    for row in best.dropna(subset=["best_lr"]).itertuples():
        ax.plot(row.best_lr, row.final_val_loss_mean, "*", ms=16, color=colour,
                markeredgecolor="black", zorder=4)


def scaling_curves(table: pd.DataFrame, title: str) -> Figure:
    """Final val loss against parameters (log-log), a line per variant through its sizes, with
    95% CIs as bars."""
    fig, ax = plt.subplots(figsize=(9, 5.5))
    palette = colours(table)
    done = table.dropna(subset=["final_val_loss_mean"])
    for variant, line in done.groupby("variant", sort=False):
        line = line.sort_values("params")
        colour = palette[variant]
        ax.plot(line["params"], line["final_val_loss_mean"], "-", color=colour, lw=1.2)
        for i, row in enumerate(line.itertuples()):
            ax.errorbar(row.params, row.final_val_loss_mean, yerr=_xerr(row, "final_val_loss"),
                        fmt="o", ms=6, capsize=3, color=colour, label=None if i else variant)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_minor_locator(ticker.LogLocator(subs=(2, 3, 5)))  # 2k, 3k, 5k, 10k, ...
    for axis, formatter in ((ax.xaxis, ticker.EngFormatter()),
                            (ax.yaxis, ticker.FormatStrFormatter("%.2f"))):
        axis.set_major_formatter(formatter)
        axis.set_minor_formatter(formatter)
    ax.tick_params(which="both", length=0, pad=6)  # major and minor labels on one line
    ax.set(xlabel="parameters (log scale)", ylabel=f"final val {LOSS_UNIT} (log scale)",
           title=title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), title="variant", frameon=False)
    return fig


def of(compared: Comparison, evals: pd.DataFrame) -> list[tuple[str, Figure]]:
    """A definition's figures by file name, as its axes call for: none before a run completed."""
    table, name, compare = compared.table, compared.name, compared.compare
    if not table["completed"].any():
        return []
    if compared.scale:
        against = "the row above" if compare == "previous" else compare
        made = [(f"{name}_delta_vs_size", delta_vs_size(
                    table, compared.scale, against, f"{name}: Δ final val against the size")),
                (f"{name}_scaling", scaling_curves(
                    table, f"{name}: final val loss against parameters, at every size"))]
        if compared.lrs:
            made.append((f"{name}_lr_transfer", lr_transfer(
                compared.tables[LR_GRID], compared.tables[LR_TRANSFER], compared.scale,
                f"{name}: final val loss against learning rate at every size")))
        return made
    if compared.lrs:
        made = [(f"{name}_lr_curves", lr_curves(
                    compared.tables[LR_GRID], table,
                    f"{name}: final val loss against learning rate, mean and 95% CI over seeds")),
                (f"{name}_lr_sensitivity", lr_sensitivity(
                    table, f"{name}: LR sensitivity, mean and 95% CI over seeds"))]
        logits = evals[(evals["definition"] == name) & evals["max_attn_logit"].notna()]
        if not logits.empty:  # runs that recorded it: attention logits' growth at the highest lrs
            top = sorted(logits[LR.column].unique())[-2:]
            made.append((f"{name}_attention_logits", attention_logits(
                logits, table, top,
                f"{name}: the largest attention logit during training at the highest learning "
                "rates")))
        return made
    if compare == "previous":
        done = evals[(evals["definition"] == name) & (evals["status"] == "completed")]
        return [(f"{name}_loss_curves", loss_curves(
                    done, table, f"{name}: loss per rung, mean and 95% CI over seeds")),
                (f"{name}_final_val_loss", final_loss(table, f"{name}: final val loss per rung")),
                (f"{name}_loss_vs_cost", loss_vs_cost(
                    table, f"{name}: final val loss against size and compute"))]
    return [(f"{name}_delta", delta(table, compare,
                                    f"{name}: the effect of each change vs {compare}"))]


def _lr_axis(ax: plt.Axes, cells: pd.DataFrame) -> None:
    """A log lr axis whose ticks are the grid's lrs."""
    ax.set_xscale("log")
    lrs = sorted(cells["lr"].unique())
    ax.set_xticks(lrs, [f"{lr:g}" for lr in lrs])
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    ax.set(xlabel="learning rate (peak, log scale)")


def _xerr(row, name: str) -> list[list[float]] | None:
    mean, low, high = (getattr(row, f"{name}_{part}") for part in ("mean", "low", "high"))
    return None if pd.isna(low) else [[mean - low], [high - mean]]


def _label(row) -> str:
    return row.variant if row.completed else f"{row.variant} (no completed run)"
