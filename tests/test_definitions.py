"""Experiment definitions as data: a user's own definition works; a broken one is refused by name."""

from __future__ import annotations

import json

import pytest

from experiments.definitions import experiments, get_experiment
from experiments.presets import PRESETS
from tests.conftest import run_module

MY_EXPERIMENT = """\
name: widths
job_type: width-sweep
description: The full model at three widths.
compare: w32
variants:
  - {name: w16, adds: n_embd 16, set: {n_embd: 16}}
  - {name: w32, adds: n_embd 32, set: {n_embd: 32}}
  - {name: w48, adds: n_embd 48, set: {n_embd: 48}}
"""


def test_a_users_definition_runs_like_the_built_in_ones(tmp_path, tiny_corpus):
    (tmp_path / "defs").mkdir()
    (tmp_path / "defs" / "widths.yaml").write_text(MY_EXPERIMENT)
    env = {"NANOGPT_EXPERIMENTS": str(tmp_path / "defs")}
    out = run_module("experiments.ablate", "--preset", "smoke", "--seeds", "1", "--experiments", "widths",
                     "--data", tiny_corpus, "--results", tmp_path / "r", "--wandb", "off", env=env)
    assert out.returncode == 0, out.stderr
    plan = json.loads((tmp_path / "r" / "smoke" / "experiment.json").read_text())
    [entry] = plan["experiments"]
    assert (entry["name"], entry["job_type"], entry["compare"]) == ("widths", "width-sweep", "w32")
    widths = [json.loads((tmp_path / "r" / "smoke" / v["runs"][0]["run_id"] / "config.json").read_text())["n_embd"]
              for v in entry["variants"]]
    assert widths == [16, 32, 48]


BROKEN = [
    ("name: x\nvariants: [\n", "not valid YAML"),
    ("name: x\n", "non-empty 'variants' list"),
    ("name: x\nvariants: []\n", "non-empty 'variants' list"),
    ("name: x\nvariants:\n  - {adds: nothing}\n", "needs a 'name'"),
    ("name: x\nvariants:\n  - {name: a, set: {n_embdd: 3}}\n", "unknown setting(s) n_embdd"),
    ("name: x\nvariants:\n  - {name: a, set: [1, 2]}\n", "'set' must be a mapping"),
    ("name: x\nvariants:\n  - {name: a}\n  - {name: a}\n", "variant names repeat"),
    ("name: x\ncompare: nothing\nvariants:\n  - {name: a}\n", "compare 'nothing'"),
]


@pytest.mark.reliability("bad input", "experiment definition files")
@pytest.mark.parametrize(("text", "message"), BROKEN, ids=[m for _, m in BROKEN])
def test_a_broken_definition_is_named_with_its_problem(tmp_path, tiny_corpus, text, message):
    """Exit 2, the file's path and the problem in one line; nothing written."""
    (tmp_path / "defs").mkdir()
    bad = tmp_path / "defs" / "mine.yaml"
    bad.write_text(text)
    out = run_module("experiments.ablate", "--preset", "smoke", "--data", tiny_corpus, "--results", tmp_path / "r",
                     env={"NANOGPT_EXPERIMENTS": str(tmp_path / "defs")})
    assert out.returncode == 2
    assert str(bad) in out.stderr and message in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_built_in_definitions_name_their_preset_and_each_variants_component():
    for experiment in experiments().values():
        assert experiment.preset in PRESETS, experiment.name
        assert all(v.component for v in experiment.variants), experiment.name
    assert get_experiment("modern").preset == "modern" and get_experiment("ladder").preset == "tutorial"
