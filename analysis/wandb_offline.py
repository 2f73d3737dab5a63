"""W&B offline runs (`.../wandb/offline-run-*/run-<id>.wandb`) as `wandb.apis.public.Run` objects.

There is no W&B server here, so each run's transaction log is read with W&B's own CLI:
`wandb leet inspect --json` gives every record (the run record with group and job_type, one history
record per `log`), and `--summary --json` gives W&B's own reduction of the log to config, summary
and state. From those we build the attributes the W&B server returns for a run and hand them to the
real `wandb.apis.public.Run`, so config unwrapping, the summary object, state, name and group go
through W&B's client code, as with `wandb.Api()`; only `scan_history` reads the log instead of the
server. A run resumed offline leaves one log per `wandb.init`; its segments are merged in the order
they were written (history concatenated, config and summary updated), as `wandb sync` merges them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wandb.apis.public import Run

from analysis.frame import Results
from analysis.from_wandb import from_wandb_runs
from experiments import wandb_files


@dataclass
class Segment:
    """One transaction log: what one `wandb.init` of the run wrote."""

    path: Path
    run: dict[str, Any]  # the run record: run_id, project, run_group, job_type, display_name, tags
    # `--summary --json`: config, summary, state, name, start_time, last_write
    reduced: dict[str, Any]
    history: list[dict[str, Any]]


class OfflineRun(Run):
    """A public W&B `Run` whose attributes come from offline logs instead of the server."""

    def __init__(self, segments: list[Segment]):
        last = segments[-1]
        config: dict[str, Any] = {}
        summary: dict[str, Any] = {}
        for segment in segments:
            config |= segment.reduced.get("config") or {}
            summary |= segment.reduced.get("summary") or {}
        run_id = last.run["run_id"]
        # the shape of the server's answer to the Run query (config values wrapped, JSON strings)
        attrs = {
            "name": run_id, "displayName": last.reduced.get("name") or last.run.get("display_name"),
            "group": last.run.get("run_group"), "jobType": last.run.get("job_type"),
            "state": last.reduced.get("state"), "tags": last.run.get("tags", []),
            "config": json.dumps({k: {"value": v, "desc": None} for k, v in config.items()}),
            "summaryMetrics": json.dumps(summary),
        }
        super().__init__(None, last.reduced.get("entity") or "offline",
                         last.run.get("project") or "offline", run_id, attrs)
        self.log_files = [s.path for s in segments]
        self._rows = [row for s in segments for row in s.history]

    def scan_history(self, keys: list[str] | None = None, page_size: int = 1000, min_step: int = 0,
                     max_step: int | None = None,
                     use_cache: bool = True) -> Iterator[dict[str, Any]]:
        """Every history row, with the API's filters: rows having all `keys`, `_step` in [min_step,
        max_step)."""
        for row in self._rows:
            step = row.get("_step", 0)
            if keys and not all(k in row for k in keys):
                continue
            if step < min_step or (max_step is not None and step >= max_step):
                continue
            yield row


def load_wandb_offline(root: Path | str) -> Results:
    """Every offline W&B run under `root` (a results folder, a run folder or a wandb folder)."""
    runs, problems = offline_runs(root)
    results = from_wandb_runs(runs, f"W&B offline runs under {root}")
    results.problems[:0] = problems
    return results


def offline_runs(root: Path | str) -> tuple[list[OfflineRun], list[str]]:
    """The runs found under `root`, segments of a resumed run merged; unreadable logs listed as
    problems."""
    logs = sorted(Path(root).rglob("run-*.wandb"))
    # each read waits on two CLI processes
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        read = list(pool.map(_read_or_problem, logs))
    by_id: dict[str, list[Segment]] = {}
    for segment in read:
        if isinstance(segment, Segment):
            by_id.setdefault(segment.run["run_id"], []).append(segment)
    problems = [r for r in read if isinstance(r, str)]
    return [OfflineRun(sorted(segments, key=_written)) for segments in by_id.values()], problems


def _read_or_problem(log: Path) -> Segment | str:
    try:
        return read_segment(log)
    except ValueError as e:
        return f"{log}: {e}, skipped"


def _written(segment: Segment) -> tuple[str, str]:
    return segment.reduced.get("start_time") or "", segment.reduced.get("last_write") or ""


def read_segment(log: Path) -> Segment:
    records = wandb_files.records(log)
    reduced = json.loads(wandb_files.inspect(log, "--summary", "--json"))
    run = next((r["run"] for r in records if r.get("type") == "run"), None)
    if not run or not run.get("run_id"):
        raise ValueError("no run record (an empty log, or the run died before wandb.init finished)")
    history = [r["history"]["item"] for r in records if r.get("type") == "history"]
    return Segment(log, run, reduced, history)
