"""Load runs from W&B: a project through `wandb.Api()`, or any objects with the public `Run`
interface.

The mirror logs each run as: config = the flat run config (+ config_hash, run_id), history = one row
per evaluation with the metrics.jsonl keys, summary = the run's summary.json. So the frame is built
from exactly what the run store holds, and the columns are the same.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from analysis.frame import Results, RunData, build

# W&B run states, as our statuses, for a run whose summary has no status of ours.
STATE_STATUS = {"finished": "completed", "running": "running", "crashed": "failed",
                "failed": "failed", "killed": "failed", "pending": "not started"}


class RunLike(Protocol):
    """The part of `wandb.apis.public.Run` the loader uses."""

    id: str
    name: str | None
    group: str | None
    state: str
    path: list[str]
    config: dict[str, Any]
    summary: Any  # HTTPSummary: keys(), items(), get()

    def scan_history(self) -> Iterable[dict[str, Any]]: ...


def load_wandb(path: str, filters: dict[str, Any] | None = None, api: Any = None) -> Results:
    """Runs of a W&B project, e.g. `load_wandb("me/nanogpt-ablations", {"config.experiment":
    "tutorial"})`."""
    import wandb

    api = api or wandb.Api()
    return from_wandb_runs(api.runs(path, filters=filters), f"W&B project {path}")


def from_wandb_runs(runs: Iterable[RunLike], where: str = "W&B") -> Results:
    data, problems = [], []
    try:
        for run in runs:
            try:
                data.append(_run_data(run))
            except Exception as e:  # noqa: BLE001 - one unreadable run is reported, the others still load
                problems.append(f"{where}: run {getattr(run, 'id', '?')}: unreadable "
                                f"({type(e).__name__}: {e}), skipped")
    except Exception as e:  # noqa: BLE001 - a failed listing keeps the runs read so far
        problems.append(f"{where}: listing runs failed ({type(e).__name__}: {e}); the frame is "
                        "incomplete")
    return build(data, problems)


def _run_data(run: RunLike) -> RunData:
    config = {k: v for k, v in run.config.items() if not k.startswith("_")}
    summary = {k: _plain(v) for k, v in run.summary.items() if not k.startswith("_")}
    status = summary.get("status")
    if status == "running" and run.state != "running":
        status = "interrupted"  # the process that logged it is gone: resume it
    summary["status"] = status or STATE_STATUS.get(run.state, run.state)
    history = [{k: v for k, v in row.items() if not k.startswith("_")}
               for row in run.scan_history()]
    fallback = {"run_id": run.id, "experiment": run.group, "variant": run.name}
    path = "/".join(getattr(run, "path", None) or [run.id])
    return RunData("wandb", path, config, summary, history, None, fallback)


def _plain(value: Any) -> Any:
    """A summary's nested values (SummarySubDict) as plain dicts."""
    return {k: _plain(v) for k, v in value.items()} if hasattr(value, "items") else value
