"""Read what W&B recorded with W&B's own CLI: `wandb leet inspect --json` on an offline run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

WANDB_CLI = Path(sys.executable).with_name("wandb")


def leet(*args: object) -> str:
    out = subprocess.run([str(WANDB_CLI), "leet", "inspect", *map(str, args)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def records(path: Path) -> list[dict]:
    """Every record of a run's .wandb file (`path`: a W&B run folder, or a wandb folder for its
    latest run)."""
    return [json.loads(line) for line in leet("--json", path).splitlines() if line.strip()]


def of_type(recs: list[dict], kind: str) -> list[dict]:
    return [r[kind] for r in recs if r["type"] == kind]


def history(recs: list[dict]) -> list[dict]:
    """History rows without W&B's own `_step`/`_runtime`/`_timestamp`, after checking `_step` is the
    step."""
    rows = [h["item"] for h in of_type(recs, "history")]
    assert all(row["_step"] == row["step"] for row in rows)
    return [{k: v for k, v in row.items() if not k.startswith("_")} for row in rows]
