"""Every run id of today's default plans stays what it was: run folders keep their names across
renames.

tests/pinned_run_ids.json was written on main before the renovation (issue 15), from
`make ablate EXPERIMENTS=<name> DRY_RUN=1` for the ladder, leave_one_out, modern,
modern_leave_one_out and norms plans over 3 seeds with Tiny Shakespeare. The setting `norm_position`
was called `layernorm` then; definitions, --set and config.json files that still say `layernorm`
mean the same runs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from experiments import definitions
from experiments.config import parse_assignments, resolve
from experiments.plan import plan
from experiments.settings import RunConfig

PINNED = json.loads((Path(__file__).parent / "pinned_run_ids.json").read_text())
EXPERIMENTS = ("ladder", "leave_one_out", "modern", "modern_leave_one_out", "norms")


@pytest.fixture(params=["norm_position", "layernorm"])
def definitions_saying(request, tmp_path, monkeypatch):
    """The shipped definitions, with where-the-norms-sit spelled by the parameter's key."""
    folder = tmp_path / "definitions"
    folder.mkdir()
    for path in definitions.HERE.glob("*.yaml"):
        text = path.read_text(encoding="utf-8")
        (folder / path.name).write_text(re.sub(r"\bnorm_position:", f"{request.param}:", text),
                                        encoding="utf-8")
    monkeypatch.setattr(definitions, "HERE", folder)
    definitions._load_all.cache_clear()
    yield request.param
    definitions._load_all.cache_clear()


def test_the_default_plans_keep_every_run_id(shakespeare, tmp_path, definitions_saying):
    said = sum(f"{definitions_saying}:" in p.read_text() for p in definitions.HERE.glob("*.yaml"))
    assert said == 6  # every shipped definition that sets where the norms sit
    assert len(PINNED) == 37 and sum(len(ids.split()) for ids in PINNED.values()) == 111
    ids = {}
    for experiment in EXPERIMENTS:
        p, _ = plan(None, range(3), [experiment], tmp_path)
        ids |= {f"{experiment}/{v.name}": " ".join(c.run_id for c in v.runs) for v in p.variants}
    assert ids == PINNED


def test_the_old_key_means_the_same_setting_in_set_and_in_old_config_files():
    old, new = parse_assignments(["layernorm=post"]), parse_assignments(["norm_position=post"])
    assert old == new == {"norm_position": "post"}
    cfg = resolve("smoke", overrides=new)
    assert cfg.model.norm_position == "post" and cfg.hash == resolve("smoke", overrides=old).hash
    written_before = json.loads(cfg.to_json())
    # a config.json from before the rename
    written_before["layernorm"] = written_before.pop("norm_position")
    assert RunConfig.from_flat(written_before) == cfg
