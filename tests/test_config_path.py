"""One typed path for every setting, overrides that change the base model, and plans that cannot
lie."""

from __future__ import annotations

import time

import pytest

from experiments import ablate
from experiments.config import parse_assignments, resolve
from experiments.definitions import experiments
from experiments.machine import prepare
from experiments.plan import plan
from experiments.settings import MODEL_AND_TRAIN, ConfigError, coerce

# Hashes recorded before the config path was rebuilt: existing run folders must keep their names.
PINNED = [("tutorial", "full", "4aac79c56b71d7e6922a5a0294f296864fc51d295575ad4b7c3e01c3aed2c76d"),
          ("tutorial", "bigram",
           "1135554dc45ec9fb5fef03f71b0c74142d8bc6a58ef274970fa235182bbe9b66"),
          ("smoke", "no_mlp", "461495ad20870f263554d40105d0d13807ae7dc9de29255e1886e1352a184346"),
          ("tutorial", "layernorm",
           "5073c3d76ff29edd8f34fa342e7dcc616d2d6f821b3484bc06a7d0283b1b8b3b")]


@pytest.mark.parametrize(("preset", "variant", "expected"), PINNED)
def test_existing_configs_keep_their_hashes(shakespeare, preset, variant, expected):
    # the default corpus: the local copy of Tiny Shakespeare
    cfg = prepare(resolve(preset, variant, 2)).cfg
    assert cfg.hash == expected


@pytest.mark.parametrize(("key", "values", "canonical"), [
    ("dropout", (0, 0.0, "0", "0.0", " 0 "), 0.0),
    ("lr", ("3e-4", 3e-4, "0.0003"), 3e-4),
    ("batch_size", (32, 32.0, "32", "32.0"), 32),
    ("mlp", (True, "true", "on", "1", 1), True),
    ("norm_position", ("post", " post"), "post"),
])
def test_every_spelling_of_a_value_is_one_canonical_value(key, values, canonical):
    parsed = [coerce(key, v, MODEL_AND_TRAIN[key]) for v in values]
    assert all(p == canonical and type(p) is type(canonical) for p in parsed)


@pytest.mark.parametrize(("key", "value"), [("dropout", "x"), ("batch_size", 32.5),
                                            ("batch_size", True), ("mlp", 2), ("lr", float("inf")),
                                            ("norm_position", "sideways"), ("n_layer", None),
                                            ("lr", [1])])
def test_a_value_that_cannot_be_the_settings_type_is_refused_by_name(key, value):
    with pytest.raises(ConfigError, match=rf"^{key}="):
        coerce(key, value, MODEL_AND_TRAIN[key])


def test_readme_set_example_keeps_every_rung_of_the_ladder_distinct(tiny_corpus, tmp_path):
    p, _ = plan("tutorial", [0], ["ladder"], tmp_path,
                overrides={"n_layer": 4, "lr": 3e-4, "data": str(tiny_corpus)})
    rungs = {c.variant: c for c in p.runs}
    assert len(p.runs) == len({c.hash for c in p.runs}) == 9
    assert (rungs["stacked"].model.n_layer, rungs["mlp"].model.n_layer,
            rungs["full"].model.n_layer) == (4, 1, 4)
    # a variant's own value wins
    assert rungs["bigram"].train.lr == 1e-2 and rungs["full"].train.lr == 3e-4
    [bigram] = [v for v in p.variants if v.name == "bigram"]
    assert bigram.kept == {"lr": 1e-2, "n_layer": 1}  # and the plan says so
    assert not tmp_path.joinpath("tutorial").exists()


def test_only_if_and_preset_references_see_the_overridden_base(tiny_corpus, tmp_path):
    p, _ = plan("tutorial", [0], ["leave_one_out", "ladder"], tmp_path,
                overrides={"dropout": 0.2, "data": str(tiny_corpus)})
    runs = {(c.group, c.variant): c for c in p.runs}
    # planned: the base has dropout now
    assert runs[("leave_one_out", "no_dropout")].model.dropout == 0.0
    [embeddings] = [c for c in p.runs if c.variant == "embeddings"]
    assert embeddings.model.dropout == 0.2  # `dropout: preset` reads the overridden base


USER_EXPERIMENT = """\
name: typed
preset: tutorial
variants:
  - name: yaml_typed
    component: training
    set: {lr: 3e-4, dropout: 0, batch_size: 32.0}
  - name: full
    set: {n_embd: 64}
"""


@pytest.fixture
def user_definitions(tmp_path, monkeypatch):
    (tmp_path / "defs").mkdir()
    (tmp_path / "defs" / "typed.yaml").write_text(USER_EXPERIMENT)
    monkeypatch.setenv("NANOGPT_EXPERIMENTS", str(tmp_path / "defs"))


def test_a_yaml_definition_plans_the_hashes_of_its_command_line_twin(user_definitions, tiny_corpus,
                                                                     tmp_path):
    data = {"data": str(tiny_corpus)}
    p, _ = plan(None, [0], ["typed"], tmp_path, overrides=data)  # its own preset: tutorial
    from_yaml = next(c for c in p.runs if c.variant == "yaml_typed")
    typed = parse_assignments(["lr=3e-4", "dropout=0", "batch_size=32"])
    from_cli = resolve("tutorial", "ladder/full", 0, typed | data, experiment="tutorial")
    assert from_yaml.hash == prepare(from_cli).cfg.hash
    [entry] = p.manifest["experiments"]
    assert entry["variants"][0]["component"] == "training"


def test_variants_are_scoped_to_their_experiment(user_definitions):
    assert resolve("tutorial", "typed/full").model.n_embd == 64  # not the built-in full
    assert resolve("tutorial", "ladder/full").model.n_embd == 32
    assert resolve("tutorial", "yaml_typed").train.lr == 3e-4  # a bare name where only one has it
    with pytest.raises(ValueError, match=r"variant 'full' is ambiguous \(.*typed/full"):
        resolve("tutorial", "full")
    assert experiments()["typed"].variants[0].component == "training"


def test_experiments_that_disagree_on_their_preset_need_one(user_definitions, tmp_path, capsys):
    (tmp_path / "defs" / "other.yaml").write_text(
        "name: other\npreset: smoke\nvariants:\n  - {name: a}\n")
    assert ablate.main(["--experiments", "typed", "other", "--results", str(tmp_path / "r"),
                        "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "PRESET=" in err and not (tmp_path / "r").exists()


def test_dry_run_prints_every_run_and_what_is_shared_and_writes_nothing(tiny_corpus, tmp_path,
                                                                        capsys):
    args = ["--preset", "smoke", "--seeds", "2", "--data", str(tiny_corpus), "--results",
            str(tmp_path / "r")]
    assert ablate.main([*args, "--dry-run", "--set", "lr=3e-3"]) == 0
    out = capsys.readouterr().out
    # smoke trains its bigram like the rest
    assert "ladder/bigram:" in out and "keeps its own lr=0.01" not in out
    assert "leave_one_out/no_gpt2_init: init=default\n  same runs as ladder/layernorm" in out
    # every run, the shared ones under both experiments
    assert out.count("\n  seed ") == 2 * 15 + 2 * 2
    # then how they group
    assert "\n30 runs: 0 cached, 30 to train; nothing written\nensembles (" in out
    assert not (tmp_path / "r").exists()


def test_planning_time_grows_linearly_with_seeds(tiny_corpus, tmp_path):
    started = time.perf_counter()
    p, _ = plan("smoke", range(500), ["ladder", "leave_one_out"], tmp_path,
                overrides={"data": str(tiny_corpus)})
    assert len(p.runs) == 15 * 500 and time.perf_counter() - started < 15
