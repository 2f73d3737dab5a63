"""W&B's offline run files (`run-<id>.wandb`) read back with W&B's own reader, `wandb leet inspect`.

Torch-free and free of wandb's Python package: the mirror asks what a killed attempt's file holds
before it resumes, and analysis reads whole offline runs (analysis.wandb_offline).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

LEET_TIMEOUT_SEC = 120


def inspect(log: Path, *args: str) -> str:
    """`wandb leet inspect ARGS LOG`'s output; ValueError saying why where it cannot read it."""
    try:
        out = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", *args, str(log)],
                             capture_output=True, text=True, timeout=LEET_TIMEOUT_SEC)
    except subprocess.TimeoutExpired:
        raise ValueError(f"`wandb leet inspect` took over {LEET_TIMEOUT_SEC}s") from None
    if out.returncode != 0:
        reason = (out.stderr.strip().splitlines() or ["no message"])[-1]
        raise ValueError(f"`wandb leet inspect` cannot read it ({reason})")
    return out.stdout


def records(log: Path) -> list[dict[str, Any]]:
    """Every record of one log, in the order it was written."""
    return [json.loads(line) for line in inspect(log, "--json").splitlines() if line.strip()]
