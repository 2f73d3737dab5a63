"""Figures of an Optuna study, from the results frames of `analysis.from_optuna` (one colour per
trial state)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib import ticker
from matplotlib.figure import Figure

from analysis.palette import STATUS_COLOUR


def optimization_history(runs: pd.DataFrame, metric: str, minimize: bool = True) -> Figure:
    """Each trial's objective by trial number, and the best so far."""
    trials = runs.dropna(subset=["objective"]).sort_values("config.trial")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    sns.scatterplot(data=trials, x="config.trial", y="objective", hue="status",
                    palette=STATUS_COLOUR, s=60, ax=ax)
    done = trials[trials["status"] == "completed"]
    best = done["objective"].cummin() if minimize else done["objective"].cummax()
    ax.step(done["config.trial"], best, where="post", color="black", lw=1.2, label="best so far")
    ax.legend(frameon=False)
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.set(xlabel="trial number", ylabel=f"objective: {_unit(metric)}",
           title="Optimization history")
    return fig


def importances(importance: dict[str, float]) -> Figure:
    """Parameter importances (Optuna's fANOVA), largest on top."""
    ranked = sorted(importance.items(), key=lambda kv: kv[1], reverse=True)
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(ranked) + 1.4))
    ax.barh([k for k, _ in ranked], [v for _, v in ranked], color=STATUS_COLOUR["completed"])
    ax.invert_yaxis()
    ax.set(xlabel="importance (share of the objective's variance, fANOVA)",
           title="Parameter importances")
    return fig


def intermediate_values(evals: pd.DataFrame, metric: str) -> Figure:
    """The value each trial reported at each step; a pruned trial ends in a cross where it was
    stopped."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    reported = evals.dropna(subset=["step", metric])
    for (_, status), trial in reported.groupby(["config.trial", "status"]):
        ax.plot(trial["step"], trial[metric], color=STATUS_COLOUR.get(status, "0.5"), lw=1.2,
                alpha=0.8)
        if status == "pruned":
            ax.plot(trial["step"].iloc[-1], trial[metric].iloc[-1], "x", ms=9, mew=2,
                    color=STATUS_COLOUR[status])
    for status in reported["status"].unique():
        ax.plot([], [], color=STATUS_COLOUR.get(status, "0.5"), label=status)
    if len(reported):
        ax.legend(title="trial state", frameon=False)
    ax.set(xlabel="training step", ylabel=f"reported {_unit(metric)}", title="Intermediate values")
    return fig


def _unit(metric: str) -> str:
    return f"{metric} (nats/char)" if metric.endswith("loss") else metric
