"""One model, one run id: every no-op rule is checked by training both spellings, not only by their
ids."""

from __future__ import annotations

import json
import random
import re
import shutil
from dataclasses import fields
from typing import Any

import pytest
import torch

from analysis import report
from experiments import ablate, run
from experiments.canonical import RULES, canonical_form, inert
from experiments.config import base_model, resolve
from experiments.machine import prepare
from experiments.settings import DEFAULTS, RunConfig
from nanogpt.data import Corpus
from nanogpt.model import GPT, ModelConfig
from nanogpt.train import Callback, TrainConfig, Trainer
from tests.conftest import run_module

SHORT = {"max_iters": 4, "eval_interval": 2, "eval_iters": 2, "log_interval": 2}
NO_BLOCKS = {"attention": False, "mlp": False}
# rule -> (one spelling, another spelling of the same computation), as overrides of the smoke preset
SPELLINGS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "no blocks": (NO_BLOCKS | {"norm_position": "none"},
                  NO_BLOCKS | {"norm_position": "post", "n_layer": 3, "n_head": 4, "residual": True,
                               "activation": "swiglu", "scaled_residual_init": True, "n_kv_head": 2,
                               "rope": True, "qk_norm": True}),
    "no attention": ({"attention": False}, {"attention": False, "n_head": 4, "n_kv_head": 2,
                                            "rope": True, "qk_norm": True}),
    "n_kv_head = n_head": ({}, {"n_kv_head": 2}),  # smoke has 2 heads
    "no MLP": ({"mlp": False}, {"mlp": False, "activation": "swiglu"}),
    "no LM head": (NO_BLOCKS | {"lm_head": False}, NO_BLOCKS | {"lm_head": False, "n_embd": 24}),
    "no norm built": ({"norm_position": "none"}, {"norm_position": "none", "norm": "rmsnorm"}),
    "bias without layers": (NO_BLOCKS | {"norm": "rmsnorm"},
                            NO_BLOCKS | {"norm": "rmsnorm", "bias": False}),
    "default init": ({"init": "default"}, {"init": "default", "scaled_residual_init": True}),
    "SP has no base width": ({}, {"mup_base_width": 8}),
    "muP at its base width is SP": ({}, {"parametrization": "mup"}),  # base: smoke's n_embd 16
    "constant lr": ({}, {"warmup_iters": 3, "min_lr": 0.5, "lr_decay_iters": 7}),
    "cosine to the end": ({"lr_schedule": "cosine", "warmup_iters": 1,
                           "lr_decay_iters": SHORT["max_iters"]},
                          {"lr_schedule": "cosine", "warmup_iters": 1, "lr_decay_iters": 0}),
}
# Settings next to a rule's that do change the model: each pair must get two run ids (and two
# models).
MATTERS: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({"norm_position": "none", "qk_norm": True}, {"norm_position": "none", "qk_norm": True,
                                                  "norm": "rmsnorm"}),
    # it scales projections, not sums
    ({"residual": False}, {"residual": False, "scaled_residual_init": True}),
    ({}, {"n_head": 1}),
    ({}, {"activation": "gelu"}),
    (NO_BLOCKS, NO_BLOCKS | {"bias": False}),  # the final pre-LayerNorm has a bias
    # ... and pre-norm's final norm is no block's
    (NO_BLOCKS, NO_BLOCKS | {"norm_position": "none"}),
    ({"lr_schedule": "cosine"}, {"lr_schedule": "cosine", "min_lr": 0.5}),
    ({"lr_schedule": "cosine"}, {"lr_schedule": "cosine", "lr_decay_iters": 2}),
    ({"n_embd": 32, "n_head": 4}, {"n_embd": 32, "n_head": 4, "parametrization": "mup"}),
    ({"parametrization": "mup"}, {"parametrization": "mup", "mup_base_width": 8}),
]


@pytest.fixture(scope="module")
def corpus(tiny_corpus) -> Corpus:
    return Corpus.load(str(tiny_corpus))


class Evaluations(Callback):
    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def on_eval(self, metrics: dict[str, Any], checkpoint_state) -> None:
        self.seen.append({k: metrics[k] for k in ("step", "train_loss", "val_loss", "lr",
                                                  "max_output_logit")})


def train_as_spelled(overrides: dict[str, Any], corpus: Corpus) -> tuple[list[dict[str, Any]],
                                                                         torch.Tensor]:
    """Train the config exactly as spelled (no canonical form), seeded as the runner seeds:
    evaluations and the logits of one validation batch."""
    settings = base_model("smoke", SHORT | overrides) | {"vocab_size": corpus.tokenizer.vocab_size}
    model_cfg = ModelConfig(**{f.name: settings[f.name] for f in fields(ModelConfig)})
    train_cfg = TrainConfig(**{f.name: settings[f.name] for f in fields(TrainConfig)})
    random.seed(0)
    torch.manual_seed(0)
    model = GPT(model_cfg)
    evaluations = Evaluations()
    Trainer(model, corpus, train_cfg, 0, torch.device("cpu")).run([evaluations])
    with torch.inference_mode():
        logits, _ = model.eval()(corpus.val[:32].view(4, 8))
    return evaluations.seen, logits


def rules_that_change(flat: dict[str, Any]) -> list[str]:
    fired = []
    for r in RULES:
        if r.applies(flat) and flat | r.resets(flat) != flat:
            fired.append(r.name)
            flat = flat | r.resets(flat)
    return fired


def run_id(overrides: dict[str, Any], corpus_path) -> str:
    return prepare(resolve("smoke", "leave_one_out/full", 0,
                           SHORT | overrides | {"data": str(corpus_path)})).cfg.run_id


def test_every_rule_has_its_two_spellings():
    assert {rule.name for rule in RULES} == set(SPELLINGS)


@pytest.mark.reliability(
    "bad input", "a setting that changes nothing, for every no-op rule: one run id, and both "
    "spellings train to equal losses and logits")
@pytest.mark.parametrize("rule", list(SPELLINGS))
def test_two_spellings_of_one_model_get_one_run_id_and_train_alike(rule, corpus, tiny_corpus):
    """Both spellings get one run id and train to equal evaluations and logits."""
    one, other = SPELLINGS[rule]
    given = base_model("smoke", SHORT | other)
    assert inert(given), f"{rule}: the second spelling is already canonical; the case tests nothing"
    assert rule in rules_that_change(given)
    assert run_id(one, tiny_corpus) == run_id(other, tiny_corpus)
    flat = resolve("smoke", "leave_one_out/full", overrides=SHORT | other).flat()
    assert canonical_form(flat) == flat  # what is recorded and trained is the canonical form
    evals_one, logits_one = train_as_spelled(one, corpus)
    evals_other, logits_other = train_as_spelled(other, corpus)
    assert evals_one == evals_other and len(evals_one) == 3
    assert torch.equal(logits_one, logits_other)


@pytest.mark.parametrize(("one", "other"), MATTERS, ids=[" ".join(map(str, b.items())) for _,
                                                         b in MATTERS])
def test_a_setting_that_changes_the_model_still_changes_the_run_id(one, other, corpus, tiny_corpus):
    assert run_id(one, tiny_corpus) != run_id(other, tiny_corpus)
    evals_one, logits_one = train_as_spelled(one, corpus)
    evals_other, logits_other = train_as_spelled(other, corpus)
    assert evals_one != evals_other or not torch.equal(logits_one, logits_other)


def test_the_canonical_form_is_a_fixed_point_of_itself():
    rng = random.Random(0)
    choices = {"attention": (True, False), "mlp": (True, False), "lm_head": (True, False),
               "n_layer": (0, 1, 3), "n_head": (1, 2, 4), "n_kv_head": (0, 1, 2, 4),
               "norm_position": ("none", "pre", "post"), "norm": ("layernorm", "rmsnorm"),
               "qk_norm": (True, False), "rope": (True, False), "bias": (True, False),
               "init": ("default", "gpt2"), "scaled_residual_init": (True, False),
               "lr_schedule": ("constant", "cosine"), "lr_decay_iters": (0, 5),
               "activation": ("relu", "swiglu"), "parametrization": ("sp", "mup"),
               "mup_base_width": (None, 16, 32), "n_embd": (16, 32)}
    for _ in range(500):
        flat = DEFAULTS | {k: rng.choice(v) for k, v in choices.items()}
        once = canonical_form(flat)
        assert canonical_form(once) == once


def test_the_issue_example_attention_off_with_qk_norm_is_the_attention_free_model(tiny_corpus):
    assert run_id({"attention": False, "qk_norm": True},
                  tiny_corpus) == run_id({"attention": False}, tiny_corpus)



def test_the_run_cli_says_which_given_setting_changes_nothing(tiny_corpus, tmp_path):
    """A no-op --set is applied (the folder is the attention-free model's), and said in one line,
    not silently."""
    args = ["--variant", "leave_one_out/no_attention", "--data", str(tiny_corpus), "--results",
            str(tmp_path), "--dry-run"]
    plain = run_module("experiments.run", *args)
    spelled = run_module("experiments.run", *args, "--set", "qk_norm=true")
    assert plain.returncode == spelled.returncode == 0, spelled.stderr
    folder = [line for line in plain.stderr.splitlines() if line.startswith("run folder:")]
    assert folder and folder == [line for line in spelled.stderr.splitlines()
                                 if line.startswith("run folder:")]
    notes = [line for line in spelled.stderr.splitlines() if line.startswith("note:")]
    assert (len(notes) == 1 and "qk_norm=true changes nothing" in notes[0] and "qk_norm=false"
            in notes[0]), notes
    assert "note:" not in plain.stderr

@pytest.mark.reliability("bad input", "a setting that changes nothing in a variant of a plan")
def test_the_plan_says_which_given_setting_changes_nothing_as_run_does(tiny_corpus, tmp_path,
                                                                       capsys):
    """--set qk_norm=true over leave-one-out: no_attention's row says what experiments.run says of
    it, naming the variant, and shows no qk_norm=True; the variants with attention say nothing."""
    assert run.main(["--variant", "leave_one_out/no_attention", "--set", "qk_norm=true", "--data",
                     str(tiny_corpus), "--results", str(tmp_path), "--dry-run"]) == 0
    [said] = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert ablate.main(["--preset", "smoke", "--data", str(tiny_corpus), "--results", str(tmp_path),
                        "--experiments", "leave_one_out", "--seeds", "1", "--set", "qk_norm=true",
                        "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = lines.index("leave_one_out/no_attention: attention=False")
    assert lines[row + 1] == "  " + said.replace("this model", "leave_one_out/no_attention")
    assert [line for line in lines if "note:" in line] == [lines[row + 1]]


# --- the corpus by its content --------------------------------------------------------------------
@pytest.mark.reliability("bad input",
                         "one corpus spelled as a relative or absolute path, a symlink or a copy")
def test_one_corpus_spelled_four_ways_is_one_run(tiny_corpus, tmp_path, monkeypatch):
    """One run id for every spelling of one file; another content, another id."""
    link, copy = tmp_path / "link.txt", tmp_path / "elsewhere" / "copy.txt"
    link.symlink_to(tiny_corpus)
    copy.parent.mkdir()
    shutil.copy(tiny_corpus, copy)
    monkeypatch.chdir(tiny_corpus.parent)
    spellings = [tiny_corpus.name, str(tiny_corpus), str(link), str(copy), f"./{tiny_corpus.name}"]
    assert len({run_id({}, path) for path in spellings}) == 1
    other = tmp_path / "other.txt"
    other.write_text(tiny_corpus.read_text() + "One line more.\n")
    assert run_id({}, other) != run_id({}, tiny_corpus)


def test_tiny_shakespeare_by_any_path_keeps_its_run_ids(shakespeare, tmp_path):
    copy = tmp_path / "input.txt"
    shutil.copy(shakespeare, copy)
    for data in ("tinyshakespeare", str(shakespeare), str(copy)):
        cfg = prepare(resolve("tutorial", "ladder/full", 0, {"data": data})).cfg
        assert cfg.run_id == "full-s0-b0032094"  # tests/pinned_run_ids.json


def test_a_config_json_records_the_canonical_form(tiny_corpus):
    given = {"data": str(tiny_corpus), "attention": False, "qk_norm": True, "n_head": 1}
    cfg = prepare(resolve("smoke", "leave_one_out/full", 0, given)).cfg
    recorded = RunConfig.from_flat(json.loads(cfg.to_json()))
    assert recorded.model.qk_norm is False and recorded.model.n_head == DEFAULTS["n_head"]
    assert recorded.hash == cfg.hash


# --- variants that collapse -----------------------------------------------------------------------
def test_the_plan_says_which_variant_is_the_same_model_as_another(tiny_corpus, tmp_path, capsys):
    code = ablate.main(["--preset", "smoke", "--data", str(tiny_corpus), "--results",
                        str(tmp_path / "r"), "--experiments", "ladder", "--seeds", "2", "--set",
                        "n_layer=1", "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0
    assert ("note: ladder/stacked is the same model as ladder/mlp under these settings; trained "
            "once" in out)
    assert len(re.findall(r"^note: ", out, re.M)) == 1
    # 9 rungs, one of them trained as another
    assert re.search(r"^16 runs: 0 cached, 16 to train", out, re.M)


def test_the_tables_give_a_collapsed_variant_no_row_of_its_own(tiny_corpus, tmp_path, capsys):
    """smoke has 2 heads, so the modern ladder's GQA rung (2 key/value heads) is the no_bias rung
    again."""
    results = tmp_path / "r"
    code = ablate.main(["--preset", "smoke", "--data", str(tiny_corpus), "--results", str(results),
                        "--experiments", "modern", "--seeds", "1", "--jobs", "1", "--wandb", "off",
                        *(f"--set={k}={v}" for k, v in SHORT.items())])
    err = capsys.readouterr().err
    assert code == 0, err
    assert ("note: modern/gqa is the same model as modern/no_bias under these settings; trained "
            "once" in err)
    assert report.main([str(results / "smoke"), "--tables-only"]) == 0
    out = capsys.readouterr().out
    rows = re.findall(r"^\| (\w+) +\|", out, re.M)
    assert {"no_bias", "qk_norm"} <= set(rows) and "gqa" not in rows
    assert "Note: gqa is the same model as no_bias under these settings" in out
    assert len(list((results / "smoke").glob("*/config.json"))) == 6  # 7 rungs, one trained once


def test_the_lr_fair_tables_give_a_collapsed_variant_no_row_either(tiny_corpus, tmp_path):
    """On a learning-rate axis: without an MLP the activation is a no-op, at every grid lr."""
    definitions = tmp_path / "definitions"
    definitions.mkdir()
    (definitions / "acts.yaml").write_text(
        "name: acts\ncompare: no_mlp\nvariants:\n  - {name: no_mlp, set: {mlp: false}}\n"
        "  - {name: no_mlp_swiglu, set: {mlp: false, activation: swiglu}}\n  - {name: narrow, set: "
        "{n_embd: 8}}\n")
    env = {"NANOGPT_EXPERIMENTS": str(definitions)}
    results = tmp_path / "r"
    out = run_module("experiments.ablate", "--preset", "smoke", "--seeds", "1", "--experiments",
                     "acts", "--lrs", "1e-2", "3e-2", "--data", tiny_corpus, "--results", results,
                     "--jobs", "1", "--wandb", "off", *(f"--set={k}={v}" for k, v in SHORT.items()),
                     env=env)
    assert out.returncode == 0, out.stderr
    # once per lr
    assert out.stderr.count("note: acts/no_mlp_swiglu is the same model as acts/no_mlp") == 2
    assert "4 runs planned" in out.stderr
    tables_out = run_module("analysis.report", results / "smoke", "--tables-only", env=env)
    assert tables_out.returncode == 0, tables_out.stderr
    rows = re.findall(r"^\| (\w+) +\|", tables_out.stdout, re.M)
    assert "narrow" in rows and "no_mlp_swiglu" not in rows
    assert ("Note: no_mlp_swiglu is the same model as no_mlp under these settings"
            in tables_out.stdout)
