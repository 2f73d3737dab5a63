"""Search-space files: the shipped one is sound, and every mistake gets one message naming file and
parameter."""

from __future__ import annotations

import optuna
import pytest

from experiments.config import resolve
from sweeps import optuna as sweeps_cli
from sweeps import space
from tests.conftest import ROOT

SHIPPED = ROOT / "sweeps" / "search_space.yaml"
BASE = "preset: smoke\nparams:\n  lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n"


def test_shipped_space_searches_the_promised_hyperparameters_and_only_valid_models():
    s = space.load(SHIPPED)
    assert {"lr", "n_embd", "n_layer", "n_head", "dropout", "batch_size",
            "warmup_iters"} <= set(s.params)
    assert s.set["lr_schedule"] == "cosine"  # else warmup_iters would do nothing
    assert all(e % h == 0 for e in s.params["n_embd"]["choices"]
               for h in s.params["n_head"]["choices"])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0),
                                pruner=s.make_pruner())
    for _ in range(25):  # whatever TPE proposes is a config the runner accepts
        trial = study.ask()
        cfg = resolve(s.preset, s.variant, s.seed, s.set | s.suggest(trial))
        assert 1e-4 <= cfg.train.lr <= 1e-2 and cfg.train.warmup_iters % 100 == 0
        study.tell(trial, 0.0)


def test_yaml_text_numbers_are_read_as_numbers(tmp_path):
    path = tmp_path / "s.yaml"
    # YAML: strings
    path.write_text("preset: smoke\nparams:\n  lr: {type: float, low: 1e-4, high: 1e-2}\n")
    assert space.load(path).params["lr"] == {"type": "float", "low": 1e-4, "high": 1e-2}


@pytest.mark.reliability("bad input",
                         "search-space files: keys, types, ranges, choices, pruners, YAML")
@pytest.mark.parametrize(("text", "says"), [
    ("preset: smoke\nparams: [lr]\n", "'params' must map each searched setting"),
    (BASE + "trials: 3\n", "unknown key(s) trials"),
    (BASE + "n_trials: 0\n", "n_trials must be a whole number >= 1"),
    (BASE + "  learning_rate: {type: float, low: 0.1, high: 1}\n",
     "param 'learning_rate': not a model or training"),
    (BASE + "  device: {type: categorical, choices: [cpu]}\n",
     "param 'device': not a model or training"),
    (BASE + "  n_layer: {type: float, low: 1, high: 4}\n",
     "param 'n_layer': is a int setting; declare it as type int"),
    (BASE + "  mlp: {type: int, low: 0, high: 1}\n",
     "param 'mlp': is a bool setting; declare it as type categorical"),
    (BASE + "  n_layer: {type: int, low: 4, high: 1}\n",
     "param 'n_layer': low (4) must be below high (1)"),
    (BASE + "  dropout: {type: float, low: 0.0, high: 0.5, log: true}\n",
     "param 'dropout': a log range needs low > 0"),
    (BASE + "  n_layer: {type: int, low: 1, high: 4, step: 0}\n",
     "param 'n_layer': step must be positive"),
    (BASE + "  n_layer: {type: int, low: 1, hi: 4}\n", "param 'n_layer': unknown key(s) hi"),
    (BASE + "  layernorm: {type: categorical, choices: []}\n",
     "param 'layernorm': categorical needs a non-empty"),
    (BASE + "  layernorm: {type: categorical, choices: [pre, sideways]}\n",
     "layernorm=sideways: expected one of"),
    (BASE + "  n_embd: {type: categorical, choices: [32, 6.5]}\n",
     "n_embd=6.5: expected a whole number"),
    (BASE + "  lr_schedule: {choices: [cosine]}\n",
     "param 'lr_schedule': needs type float, int or categorical"),
    (BASE + "set: {lr: 0.1}\n", "lr both searched and fixed"),
    (BASE + "set: {max_itres: 10}\n", "unknown setting 'max_itres'"),
    (BASE + "variant: no_such_variant\n", "unknown variant 'no_such_variant'"),
    (BASE.replace("smoke", "huge"), "unknown preset 'huge'"),
    (BASE + "pruner: {type: patient}\n", "pruner needs a type: one of median, hyperband, none"),
    (BASE + "pruner: {type: median, n_warmup: 3}\n", "pruner {'type': 'median', 'n_warmup': 3}"),
    (BASE + "params: {lr: [0.1\n", "not valid YAML"),
    ("- just\n- a list\n", "expected a mapping"),
    (BASE + "  n_embd: {type: categorical, choices: [32, 64]}\n  n_head: {type: categorical, "
            "choices: [4, 5]}\n",
     "param 'n_head': n_head=5 gives no valid model with any choice of the other parameters"),
    (BASE.replace("smoke", "tutorial\nvariant: ladder/bigram"),
     "variant ladder/bigram sets lr itself"),
    (BASE + "set: {dropout: high}\n", "dropout=high: expected a finite number"),
])
def test_bad_space_is_refused_with_one_clear_message(tmp_path, text, says):
    """SpaceError naming the file and the offending key, in one line."""
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(space.SpaceError) as error:
        space.load(path)
    assert str(error.value).startswith(str(path)) and says in str(error.value)


def test_cli_exits_2_on_a_bad_space_and_writes_nothing(tmp_path, capsys):
    path = tmp_path / "space.yaml"
    path.write_text(BASE + "  n_layer: {type: int, low: 4, high: 1}\n")
    results = tmp_path / "results"
    assert sweeps_cli.main(["create", "--study", "s", "--space", str(path), "--results",
                            str(results)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {path}: param 'n_layer': low (4) must be below high (1)\n"
    assert not results.exists()


@pytest.mark.reliability("bad input",
                         "sweep storage URLs: in-memory databases, folders that do not exist")
@pytest.mark.parametrize(("storage", "says"), [
    ("sqlite:///:memory:", "in-memory database"),
    ("sqlite://", "in-memory database"),
    ("sqlite:///{tmp}/no/such/dir/study.db", "folder {tmp}/no/such/dir does not exist"),
    ("{tmp}/nowhere/study.journal", "folder {tmp}/nowhere does not exist"),
])
def test_a_storage_no_worker_could_share_is_refused_before_anything_is_made(tmp_path, capsys,
                                                                            storage, says):
    """Exit 2, one line naming the storage's problem; no folder, no database, no results."""
    path = tmp_path / "space.yaml"
    path.write_text(BASE)
    before = set(tmp_path.rglob("*"))
    code = sweeps_cli.main(["create", "--study", "s", "--space", str(path), "--results",
                            str(tmp_path / "results"), "--storage", storage.format(tmp=tmp_path)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and says.format(tmp=tmp_path) in lines[0], lines
    assert set(tmp_path.rglob("*")) == before
