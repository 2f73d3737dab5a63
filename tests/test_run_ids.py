"""Every run id of today's default plans stays what it was: run folders keep their names across renames.

tests/pinned_run_ids.json was written on main before the renovation (issue 15), from
`make ablate EXPERIMENTS=<name> DRY_RUN=1` for the ladder, leave_one_out, modern, modern_leave_one_out
and norms plans over 3 seeds with Tiny Shakespeare.
"""

from __future__ import annotations

import json
from pathlib import Path

from experiments.plan import plan

PINNED = json.loads((Path(__file__).parent / "pinned_run_ids.json").read_text())
EXPERIMENTS = ("ladder", "leave_one_out", "modern", "modern_leave_one_out", "norms")


def planned_run_ids(results: Path) -> dict[str, str]:
    ids = {}
    for experiment in EXPERIMENTS:
        p, _ = plan(None, range(3), [experiment], results)
        ids |= {f"{experiment}/{v.name}": " ".join(c.run_id for c in v.runs) for v in p.variants}
    return ids


def test_the_default_plans_keep_every_run_id(shakespeare, tmp_path):
    assert len(PINNED) == 37 and sum(len(ids.split()) for ids in PINNED.values()) == 111
    assert planned_run_ids(tmp_path) == PINNED
