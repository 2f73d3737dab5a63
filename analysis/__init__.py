"""Analysis: one set of results frames from any source, the comparison tables, the notebooks and
their report.

    from analysis import load_runstore, load_wandb, load_optuna
    results = load_runstore("results", "tutorial")  # .evals (run x eval), .runs (per run),
        .problems

`analysis.wandb_offline.load_wandb_offline(folder)` reads W&B offline runs the same way. Nothing
here imports torch; wandb and optuna are imported by the loaders that need them.
"""

from analysis.frame import Results
from analysis.from_optuna import load_optuna
from analysis.from_runstore import load_runstore
from analysis.from_wandb import load_wandb

__all__ = ["Results", "load_optuna", "load_runstore", "load_wandb"]
