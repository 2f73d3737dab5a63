"""The experiment manifest: `<results>/<name>/experiment.json`, the plan of one ablation study.

`make ablate` (and an Optuna ablation grid) writes it before training anything: which experiment
definitions ran, their variants in order with what each adds, and the run ids expected per seed.
Analysis reads it to keep rung order and to find every planned run, including the ones that
failed or never started, without importing torch or the definitions. Written atomically.

    {"name": "tutorial", "preset": "tutorial", "seeds": [0, 1, 2], "overrides": {...},
     "experiments": [{"name": "ladder", "job_type": "ladder", "description": "...", "compare": "previous",
                      "variants": [{"name": "bigram", "adds": "...", "component": "bigram table",
                                    "runs": [{"seed": 0, "run_id": "bigram-s0-1a2b3c4d"}, ...]}, ...]}, ...]}

`compare` is "previous" (each row against the row above: the ladder) or a variant name (each row
against that variant: leave-one-out against "full"). `component` (possibly "") names the model part a
variant is about; analysis colours it by that, so a rung and its leave-one-out row share a colour.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from experiments import store

MANIFEST = "experiment.json"
FORMAT_VERSION = 1


def write(folder: Path, manifest: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / MANIFEST
    store.write_json(path, {"format": FORMAT_VERSION, **manifest})
    return path


def read(folder: Path) -> dict[str, Any]:
    """The manifest of an experiment folder; ValueError naming the file if it is missing or damaged."""
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path} not found: is {folder} an experiment folder written by `make ablate`?") from None
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} is unreadable ({e}); rerun `make ablate` to rewrite it") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("experiments"), list):
        raise ValueError(f"{path} has no 'experiments' list; rerun `make ablate` to rewrite it")
    if manifest.get("format", FORMAT_VERSION) > FORMAT_VERSION:
        raise ValueError(f"{path} is format {manifest['format']}, newer than this code reads; update the code")
    return manifest
