"""The experiment manifest: `<results>/<name>/experiment.json`, what one results folder records.

`make ablate` (and an Optuna ablation grid) records its plan here before training anything: the
experiment definitions, their variants in order with what each adds, their axes, and the run
expected at every (variant, point, seed). Analysis reads it to keep rung order and to find every
planned run, including the ones that failed or never started, without torch or the definitions.

Every plan is merged into what the folder already records, under a lock (`record`), so two
ablations on one folder, at once or one after the other, leave one manifest that describes both:
per experiment the union of their variants and runs, per axis the union of their values; a plan
without an axis the folder has adds its runs at the base model's own value of it. A folder holds
one base model (preset and --set): a plan with another is refused, as is a (variant, point, seed)
that a plan makes another run than the folder records. Written atomically.

    {"format": 2, "name": "tutorial", "preset": "tutorial", "seeds": [0, 1, 2], "overrides": {},
     "data": "tinyshakespeare", "base_point": {"width": 32, "depth": 3, "lr": 0.001},
     "experiments": [{"name": "leave_one_out", "job_type": "leave-one-out", "description": "...",
                      "compare": "full", "axes": {"depth": [1, 2, 4, 8]},
                      "variants": [{"name": "full", "adds": "...", "component": "GPT-2 init",
                                    "runs": [{"seed": 0, "depth": 1, "run_id": "full-s0-1a2b3c4d"},
                                             ...]}, ...],
                      "same_models": {"no_gpt2_init": "full"}}, ...]}

`compare` is "previous" (each row against the row above: the ladder) or a variant name (each row
against that variant: leave-one-out against "full"). `axes` maps an axis's name
(experiments.axes) to its values, and each run carries its point on every axis of its experiment.
`same_models` lists the variants that are another variant's model at every point (no row of their
own). Format 1 (a learning-rate grid as `lrs`, no `axes`, no `base_point`) is read as format 2.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from experiments import store
from experiments.axes import AXES, BY_NAME, describe, points
from experiments.settings import ConfigError

MANIFEST = "experiment.json"
LOCK = f".{MANIFEST}.lock"
FORMAT_VERSION = 2


def read(folder: Path) -> dict[str, Any]:
    """The manifest of an experiment folder as format 2; ValueError naming the file if it is
    missing or damaged."""
    path = Path(folder) / MANIFEST
    fix = "delete it and rerun `make ablate` to record the plan again (the run folders stay)"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path} not found: is {folder} an experiment folder written by `make "
                         "ablate`?") from None
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} is unreadable ({e}); {fix}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("experiments"), list):
        raise ValueError(f"{path} has no 'experiments' list; {fix}")
    if manifest.get("format", FORMAT_VERSION) > FORMAT_VERSION:
        raise ValueError(f"{path} is format {manifest['format']}, newer than this code reads; "
                         "update the code")
    for entry in manifest["experiments"]:
        if "lrs" in entry:  # format 1: a learning-rate grid was the only axis
            entry["axes"] = {"lr": entry.pop("lrs")}
        entry.setdefault("axes", {})
    return manifest | {"format": FORMAT_VERSION}


@contextlib.contextmanager
def lock(folder: Path) -> Iterator[None]:
    """Hold the folder's manifest lock, waiting for it: one writer of the manifest or of the tables
    at a time. An flock, as experiments.store.run_lock: the kernel drops it when its holder dies."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def merged_into(folder: Path, planned: dict[str, Any]) -> dict[str, Any]:
    """The folder's manifest once `planned` is recorded in it; writes nothing. ConfigError where the
    plan cannot join what the folder records (see the module), or the manifest is damaged."""
    if not (folder / MANIFEST).exists():
        return merge(None, planned, folder)
    try:
        recorded = read(folder)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return merge(recorded, planned, folder)


def record(folder: Path, planned: dict[str, Any]) -> dict[str, Any]:
    """Merge a plan into the folder's manifest under its lock; returns what was written."""
    with lock(folder):
        manifest = merged_into(folder, planned)
        store.write_json(folder / MANIFEST, manifest)
    return manifest


def merge(recorded: dict[str, Any] | None, planned: dict[str, Any], folder: Path) -> dict[str, Any]:
    """One manifest describing both (see the module)."""
    planned = {k: v for k, v in planned.items() if k != "format"}
    if recorded is None:
        return {"format": FORMAT_VERSION, **planned}
    _same_base_model(recorded, planned, folder)
    base_point = planned["base_point"]  # one base model, one point (format 1 did not record it)
    entries = {e["name"]: e for e in recorded["experiments"]}
    for entry in planned["experiments"]:
        entries[entry["name"]] = _merge_entry(entries.get(entry["name"]), entry, base_point, folder)
    seeds = sorted({*recorded["seeds"], *planned["seeds"]})
    return {"format": FORMAT_VERSION, **planned, "seeds": seeds,
            "experiments": list(entries.values())}


def _same_base_model(recorded: dict[str, Any], planned: dict[str, Any], folder: Path) -> None:
    def said(doc: dict[str, Any]) -> str:
        sets = " ".join(f"{k}={v}" for k, v in doc["overrides"].items()) or "none"
        return f"preset {doc['preset']}, set {sets}"

    if (recorded["preset"], recorded["overrides"]) == (planned["preset"], planned["overrides"]):
        return
    differ = {k for k in {*recorded["overrides"], *planned["overrides"]}
              if recorded["overrides"].get(k) != planned["overrides"].get(k)}
    axes = [a for a in AXES if a.setting in differ]
    hint = (f" (to train several {axes[0].title}s, give them as an axis: {axes[0].flag}, "
            f"{axes[0].make_variable}=)" if axes else "")
    raise ConfigError(f"{folder} records {said(recorded)}; this plan has {said(planned)}: a "
                      "results folder holds one base model, so give the same PRESET= and "
                      f"SET={hint}, another NAME= for this plan, or delete its {MANIFEST} to "
                      "record this plan afresh (the run folders stay)")


def _merge_entry(recorded: dict[str, Any] | None, planned: dict[str, Any],
                 base_point: dict[str, Any], folder: Path) -> dict[str, Any]:
    """One experiment's entry describing both: the union of its axes' values, variants and runs."""
    if recorded is None:
        return planned
    names = [a.name for a in AXES if a.name in recorded["axes"] or a.name in planned["axes"]]
    axes = {}
    for name in names:
        values = {*recorded["axes"].get(name, ()), *planned["axes"].get(name, ())}
        if name not in recorded["axes"] or name not in planned["axes"]:
            values.add(base_point[name])  # the entry without the axis has its runs at the base's
        where = f"{folder / MANIFEST} and this plan of {planned['name']}"
        axes[name] = list(BY_NAME[name].distinct(sorted(values), where))
    variants: dict[str, dict[str, Any]] = {}
    for entry in (planned, recorded):  # the plan's order first: the definition as it is now
        for variant in entry["variants"]:
            merged = variants.setdefault(
                variant["name"], {k: v for k, v in variant.items() if k != "runs"} | {"runs": {}})
            for run in variant["runs"]:
                point = {name: run.get(name, base_point[name]) for name in names}
                listed = {"seed": run["seed"], **point, "run_id": run["run_id"]}
                known = merged["runs"].setdefault((*point.values(), run["seed"]), listed)
                if known["run_id"] != run["run_id"]:
                    at = f" at {describe(point)}" if point else ""
                    raise ConfigError(
                        f"{folder / MANIFEST} records {planned['name']}/{variant['name']}{at} seed "
                        f"{run['seed']} as run {run['run_id']}, but this plan makes it "
                        f"{known['run_id']} (the definition, the corpus or the code changed "
                        "since): give another NAME=, or delete the file to record this plan afresh "
                        "(the run folders stay)")
    order = {tuple(p.values()): i for i, p in enumerate(points({n: axes[n] for n in names}))}
    for merged in variants.values():
        keys = sorted(merged["runs"], key=lambda key: (order[key[:-1]], key[-1]))
        merged["runs"] = [merged["runs"][key] for key in keys]
    same = {name: other for name, other in
            (recorded.get("same_models", {}) | planned.get("same_models", {})).items()
            if name not in variants}
    return {k: v for k, v in planned.items() if k != "same_models"} | {
        "axes": axes, "variants": list(variants.values()),
        **({"same_models": same} if same else {})}
