"""Load runs from the local run store (the default source and the source of truth)."""

from __future__ import annotations

from pathlib import Path

from analysis.frame import Results, RunData, build
from experiments import store

RUN_FILES = (store.METRICS, store.SUMMARY, store.CHECKPOINT)


def load_runstore(root: Path | str, experiment: str | None = None) -> Results:
    """Every run under `root` (or under `root/experiment`), partial and running ones included.

    Unreadable folders and files are listed in `problems` by path and skipped; they never stop the
    load.
    """
    runs = store.RunStore(root)
    base = runs.experiment_dir(experiment) if experiment else Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"{base} is not a folder; give the run store folder (e.g. results) "
                                "and an experiment inside it")
    data, problems = [], _folders_without_config(base, experiment is None)
    for record in runs.runs(experiment):
        if isinstance(record, str):
            problems.append(record)
        else:
            data.append(run_data(record, problems))
    return build(data, problems)


def run_data(record: store.RunRecord, problems: list[str]) -> RunData:
    """One run folder as frame input; what cannot be read, and a disagreement among its files
    (status `damaged`, never averaged into a table), is added to `problems`."""
    problems += record.problems
    live = store.lock_held(record.path)  # a process trains it now: its files are being written
    if record.damage and not live:
        problems.append(str(record.damage))
    status = store.RUNNING if live else record.status
    if status == store.RUNNING and not live:
        status = "interrupted"  # it says running, but no process holds its lock: it was killed
    try:
        sample = record.samples or None
    except (OSError, UnicodeDecodeError) as e:
        problems.append(f"{record.path / store.SAMPLES}: unreadable ({e}), sample skipped")
        sample = None
    fallback = {"run_id": record.path.name, "experiment": record.path.parent.name}
    return RunData("runstore", str(record.path), record.config, record.summary | {"status": status},
                   record.metrics, sample, fallback)


def _folders_without_config(base: Path, all_experiments: bool) -> list[str]:
    """Run folders whose config.json is missing: the store's reader never sees them, so say so
    here."""
    pattern = "*/*/" if all_experiments else "*/"
    return [f"{folder / store.CONFIG}: missing; the run cannot be read (delete the folder to "
            "retrain it)"
            for folder in sorted(base.glob(pattern))
            if not (folder / store.CONFIG).exists()
            and any((folder / f).exists() for f in RUN_FILES)]
