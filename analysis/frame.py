"""The results frames: the same columns whichever source the runs come from.

Every source (the run store, W&B, Optuna) turns each run into a `RunData`; `build` makes

- `evals`: one tidy row per run x evaluation: IDENTITY, then METRICS, then `config.<setting>`
  columns. A run with no evaluation yet keeps one row with empty metrics, so it is marked, not lost.
- `runs`: one row per run: IDENTITY, then SUMMARY (losses computed from the evaluations the same
  way for every source; params and FLOPs as the run recorded them), then `env.<key>` and
  `config.<setting>`.

`status` is the run's own: completed, diverged, failed, pruned, running (a live process holds it),
interrupted (it says running but nothing is training it: resume it), or what the source says
otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from experiments import store

IDENTITY = ("source", "experiment", "run_id", "variant", "seed", "preset", "status")
# What the training loop records at each evaluation (metrics.jsonl, W&B history).
METRICS = ("step", "tokens", "train_loss", "val_loss", "lr", "tokens_per_sec", "elapsed_sec",
           "max_attn_logit", "max_output_logit", "train_z_loss", "val_z_loss")
SUMMARY = (
    "evals", "last_step", "initial_train_loss", "initial_val_loss", "final_train_loss",
    "final_val_loss", "best_val_loss", "best_val_step", "tokens", "wall_time_sec", "tokens_per_sec",
    "params", "flops_per_token", "train_flops_per_token", "train_flops", "objective", "reason",
    "location", "sample",
)
CONFIG_PREFIX, ENV_PREFIX = "config.", "env."


@dataclass
class RunData:
    """One run as a source holds it."""

    source: str  # runstore | wandb | optuna
    location: str  # where it lives: a run folder, a W&B run path, a storage and trial
    config: dict[str, Any]  # the flat run config (config.json)
    # run-level facts: status, params, FLOPs, environment, reason, objective
    summary: dict[str, Any]
    history: list[dict[str, Any]]  # one dict per evaluation
    sample: str | None = None
    # identity values for a config that lacks them
    fallback: dict[str, Any] = field(default_factory=dict)


@dataclass
class Results:
    evals: pd.DataFrame
    runs: pd.DataFrame
    problems: list[str]


def build(runs: Iterable[RunData], problems: Iterable[str] = ()) -> Results:
    problems = list(problems)
    eval_rows, run_rows = [], []
    for run in runs:
        identity = _identity(run)
        config = _flatten(run.config, CONFIG_PREFIX)
        history = _evaluations(run, problems)
        eval_rows += ([identity | {m: e.get(m) for m in METRICS} | config for e in history]
                      or [identity | config])
        facts = {k: run.summary.get(k)
                 for k in ("params", "flops_per_token", "train_flops_per_token", "objective",
                                                  "reason")}
        env = _flatten(run.summary.get("environment") or {}, ENV_PREFIX)
        run_rows.append(identity | _loss_summary(history) | facts | {"location": run.location,
                                                                     "sample": run.sample}
                        | env | config)
    evals = _frame(eval_rows, (*IDENTITY, *METRICS))
    summary = _frame(run_rows, (*IDENTITY, *SUMMARY))
    summary["train_flops"] = summary["train_flops_per_token"] * summary["tokens"]
    return Results(evals, summary, problems)


def _identity(run: RunData) -> dict[str, Any]:
    def pick(key: str) -> Any:
        value = run.config.get(key)
        return run.fallback.get(key) if value is None else value

    return {"source": run.source, "experiment": pick("experiment"), "run_id": pick("run_id"),
            "variant": pick("variant"), "seed": pick("seed"), "preset": pick("preset"),
            "status": run.summary.get("status") or "unknown"}


def _flatten(mapping: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Nested settings become dotted columns; lists become tuples so the cells stay hashable."""
    if not mapping:
        return {}
    flat = pd.json_normalize(dict(mapping), sep=".").iloc[0].to_dict()
    return {prefix + k: tuple(v) if isinstance(v, list) else v for k, v in flat.items()}


def _evaluations(run: RunData, problems: list[str]) -> list[dict[str, Any]]:
    """Evaluations in step order; a step recorded twice (a resumed run) keeps its last record."""
    by_step: dict[int, dict[str, Any]] = {}
    skipped = 0
    for record in run.history:
        step = record.get("step")
        if isinstance(step, bool) or not isinstance(step, int | float) or not math.isfinite(step):
            skipped += 1
            continue
        by_step[int(step)] = {**record, "step": int(step)}
    if skipped:
        problems.append(f"{run.location}: {skipped} evaluation record(s) without a step, skipped")
    return [by_step[s] for s in sorted(by_step)]


def _loss_summary(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The same numbers the run recorder writes into summary.json, for any source and any
    progress."""
    summary = store.loss_summary(history)
    summary["last_step"] = summary.pop("step", None)
    return summary


def _frame(rows: list[dict[str, Any]], leading: tuple[str, ...]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(rows)
    # same order whatever order a source keeps
    rest = sorted(c for c in frame.columns if c not in leading)
    frame = frame.reindex(columns=[*leading, *rest])
    numeric = [c for c in dict.fromkeys(("seed", *METRICS, *SUMMARY))
               if c in leading and c not in ("reason", "location", "sample")]
    frame[numeric] = frame[numeric].apply(pd.to_numeric, errors="coerce")
    for column in ("seed", "step", "evals", "last_step", "best_val_step"):
        if column in frame:
            frame[column] = frame[column].astype("Int64")
    return frame
