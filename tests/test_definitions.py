"""Experiment definitions as data: a user's own definition works; a broken one is refused by
name."""

from __future__ import annotations

import json

import pytest

from experiments import ablate
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
    out = run_module("experiments.ablate", "--preset", "smoke", "--seeds", "1", "--experiments",
                     "widths", "--data", tiny_corpus, "--results", tmp_path / "r", "--wandb", "off",
                     env=env)
    assert out.returncode == 0, out.stderr
    plan = json.loads((tmp_path / "r" / "smoke" / "experiment.json").read_text())
    [entry] = plan["experiments"]
    assert (entry["name"], entry["job_type"], entry["compare"]) == ("widths", "width-sweep", "w32")
    widths = [
        json.loads((tmp_path / "r" / "smoke" / v["runs"][0]["run_id"] / "config.json")
                   .read_text())["n_embd"]
        for v in entry["variants"]]
    assert widths == [16, 32, 48]


BROKEN = [
    ("name: x\nvariants: [\n", "not valid YAML"),
    ("name: x\n", "non-empty 'variants' list"),
    ("name: x\nvariants: []\n", "non-empty 'variants' list"),
    ("name: x\nvariants:\n  - {adds: nothing}\n", "needs a 'name'"),
    ("name: x\nvariants:\n  - {name: a, set: {n_embdd: 3}}\n",
     "line 3: variant 'a': unknown setting 'n_embdd'"),
    ("name: x\nvariants:\n  - name: a\n    set: {lr: fast}\n",
     "line 4: variant 'a': lr=fast: expected a finite"),
    ("name: x\nvariants:\n  - name: a\n    set:\n      n_layer: 2.5\n",
     "line 5: variant 'a': n_layer=2.5"),
    ("name: x\nvariants:\n  - {name: a, set: {mlp: maybe}}\n", "mlp=maybe: expected true or false"),
    ("name: x\nvariants:\n  - {name: a, set: [1, 2]}\n", "'set' must be a mapping"),
    ("name: x\nvariants:\n  - {name: a}\n  - {name: a}\n", "variant name(s) defined twice: a"),
    ("name: x\ncompare: nothing\nvariants:\n  - {name: a}\n", "compare 'nothing'"),
    ("name: x\ncolour: red\nvariants:\n  - {name: a}\n", "line 2: unknown key 'colour'"),
    ("name: x\nvariants:\n  - {name: a, sett: {lr: 0.1}}\n",
     "line 3: variant 'a': unknown key 'sett'"),
    ("name: x\nvariants:\n  - {name: a, only_if: dropuot}\n",
     "only_if names unknown setting 'dropuot'"),
    ("name: x\nname: y\nvariants:\n  - {name: a}\n", "line 2: key 'name' given twice"),
    ("name: x\npreset: huge\nvariants:\n  - {name: a}\n", "line 2: unknown preset 'huge'"),
    ("name: x\nvariants:\n  - {name: ../a}\n", "line 3: name '../a' must be letters"),
    ("name: ladder\nvariants:\n  - {name: a}\n", "experiment 'ladder' is defined twice"),
]


@pytest.mark.reliability("bad input",
                         "experiment definition files: syntax, keys, types, names, conditions")
@pytest.mark.parametrize(("text", "message"), BROKEN, ids=[m for _, m in BROKEN])
def test_a_broken_definition_is_named_with_its_problem(tmp_path, tiny_corpus, monkeypatch, capsys,
                                                       text, message):
    """Exit 2, the file's path (and line) and the problem in one line; nothing written."""
    (tmp_path / "defs").mkdir()
    bad = tmp_path / "defs" / "mine.yaml"
    bad.write_text(text)
    monkeypatch.setenv("NANOGPT_EXPERIMENTS", str(tmp_path / "defs"))
    code = ablate.main(["--preset", "smoke", "--experiments", "x", "--data", str(tiny_corpus),
                        "--results", str(tmp_path / "r")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
    assert str(bad) in lines[0] and message in lines[0], lines
    assert not (tmp_path / "r").exists()


def test_built_in_definitions_name_their_preset_and_each_variants_component():
    for experiment in experiments().values():
        assert experiment.preset in PRESETS, experiment.name
        assert all(v.component for v in experiment.variants), experiment.name
    assert (get_experiment("modern").preset == "modern" and get_experiment("ladder").preset
            == "tutorial")
