"""z-loss and the logits behind high-LR instabilities (Wortsman et al. 2023), checked against direct
computations."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch.nn import functional as F

from experiments.config import resolve
from experiments.plan import describe_plan, plan
from nanogpt.data import Corpus
from nanogpt.model import GPT, CausalSelfAttention
from nanogpt.train import Callback, Trainer
from tests.exact_resume import assert_resumes_exactly

MODERN_VARIANTS = [("modern", v) for v in ("gpt2", "rmsnorm", "swiglu", "rope", "no_bias", "gqa",
                                           "qk_norm")]


@pytest.mark.parametrize(("preset", "variant"), [("tutorial", "full"), ("tutorial", "bigram"),
                                                 *MODERN_VARIANTS])
def test_z_loss_off_leaves_the_run_id_unchanged(preset, variant):
    plain = resolve(preset, variant)
    assert resolve(preset, variant, overrides={"z_loss": 0}).run_id == plain.run_id
    assert resolve(preset, variant, overrides={"z_loss": 1e-4}).run_id != plain.run_id


def smoke_trainer(corpus: Corpus, **train) -> Trainer:
    cfg = resolve("smoke", overrides={"max_iters": 4, "eval_interval": 2})
    model_cfg = dataclasses.replace(cfg.model, vocab_size=corpus.tokenizer.vocab_size)
    torch.manual_seed(0)
    return Trainer(GPT(model_cfg), corpus, dataclasses.replace(cfg.train, **train), seed=0,
                   device=torch.device("cpu"))


def test_z_loss_adds_exactly_its_term_to_the_objective_and_nothing_to_the_cross_entropy(
        tiny_corpus):
    corpus = Corpus.load(str(tiny_corpus))
    trainer = smoke_trainer(corpus, z_loss=1e-3)
    x, y = trainer.batches["train"].next()
    objective, ce = trainer.objective(x, y)
    logits, _ = trainer.model(x)
    log_z = torch.log(torch.exp(logits.double()).sum(-1))  # Z written out, in float64
    assert ce.item() == pytest.approx(F.cross_entropy(logits.flatten(0, 1), y.flatten()).item(),
                                      rel=1e-6)
    assert (objective - ce).item() == pytest.approx(1e-3 * (log_z**2).mean().item(), rel=1e-5)
    plain_objective, plain_ce = smoke_trainer(corpus).objective(x, y)
    assert plain_objective is plain_ce and plain_ce.item() == ce.item()


class Evals(Callback):
    def __init__(self):
        self.records = []

    def on_eval(self, metrics, checkpoint):
        self.records.append(dict(metrics))


def test_recorded_losses_stay_plain_cross_entropy_and_the_z_term_is_recorded_apart(tiny_corpus):
    corpus = Corpus.load(str(tiny_corpus))
    plain, with_z = Evals(), Evals()
    assert smoke_trainer(corpus).run([plain]).status == "completed"
    assert smoke_trainer(corpus, z_loss=0.1).run([with_z]).status == "completed"
    first_plain, first_z = plain.records[0], with_z.records[0]
    # Step 0: the same weights, so the same cross-entropy, whatever the objective trains on later.
    assert first_z["val_loss"] == first_plain["val_loss"] and first_z["train_loss"] == first_plain[
        "train_loss"]
    assert "val_z_loss" not in first_plain and first_z["val_z_loss"] > 0
    # the term changes the training
    assert with_z.records[-1]["val_loss"] != plain.records[-1]["val_loss"]


def test_a_z_loss_run_resumes_exactly(tiny_corpus):
    assert_resumes_exactly({"z_loss": 1e-2, "data": str(tiny_corpus)}, resume_at=10)


def direct_max_attention_logit(model: GPT, idx: torch.Tensor) -> float:
    """Layer by layer, head by head: the scores written out with the kv head each query head
    reads."""
    best = -math.inf
    x = model.drop(model.add_positions(model.wte(idx)))
    for block in model.blocks:
        attn: CausalSelfAttention = block.attn
        h = block.ln_1(x)
        B, T, _ = h.shape
        q, k, _ = F.linear(h, attn.qkv.weight, attn.qkv.bias).split(attn.sizes, dim=-1)
        q = attn.rotary(attn.q_norm(q.view(B, T, -1, attn.head_size).transpose(1, 2)))
        k = attn.rotary(attn.k_norm(k.view(B, T, -1, attn.head_size).transpose(1, 2)))
        group = q.size(1) // k.size(1)
        for b in range(B):
            for head in range(q.size(1)):
                for i in range(T):
                    for j in range(i + 1):
                        score = torch.dot(q[b, head, i], k[b, head // group,
                                                           j]).item() / math.sqrt(attn.head_size)
                        best = max(best, score)
        x = block(x)
    return best


@pytest.mark.parametrize("change", [{}, {"qk_norm": True}, {"n_kv_head": 1},
                                    {"n_kv_head": 2, "qk_norm": True,
                                                                             "rope": True,
                                     "norm": "rmsnorm"}],
                         ids=["mha", "qk_norm", "mqa", "llama"])
def test_recorded_max_attention_logit_equals_a_direct_computation(change):
    cfg = dataclasses.replace(resolve("smoke").model, n_head=4, n_embd=16, **change)
    torch.manual_seed(1)
    model = GPT(cfg).eval()
    # larger weights than the init's, so the maximum is not a near-tie at 0
    for p in model.parameters():
        p.data.normal_(0, 0.5)
    idx = torch.randint(0, cfg.vocab_size, (2, cfg.block_size))
    stats = model.logit_stats(idx)
    with torch.no_grad():
        assert stats["max_attn_logit"] == pytest.approx(direct_max_attention_logit(model, idx),
                                                        rel=1e-5)
        assert stats["max_output_logit"] == pytest.approx(model(idx)[0].max().item(), rel=1e-6)


def test_qk_norm_bounds_the_attention_logit_by_the_head_size():
    """With normalised q and k (unit gain at init), |q.k| / sqrt(d) <= sqrt(d), however large the
    weights."""
    cfg = dataclasses.replace(resolve("smoke").model, qk_norm=True, norm="rmsnorm", n_head=2,
                              n_embd=16)
    model = GPT(cfg).eval()
    for p in model.parameters():
        p.data.mul_(100)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.RMSNorm):
                m.weight.fill_(1.0)
    idx = torch.randint(0, cfg.vocab_size, (2, cfg.block_size))
    assert model.logit_stats(idx)["max_attn_logit"] <= math.sqrt(cfg.head_size) + 1e-4


def test_a_model_without_attention_records_no_attention_logit():
    model = GPT(resolve("tutorial", "bigram").model)
    idx = torch.randint(0, 65, (1, 8))
    stats = model.logit_stats(idx)
    assert stats["max_attn_logit"] is None
    # the bigram's logits are its table
    assert stats["max_output_logit"] == model.wte.weight[idx].max().item()


def test_the_lr_sensitivity_experiment_plans_every_switch_pair_at_every_grid_lr_and_seed(tmp_path):
    p, _ = plan(None, range(3), ["lr_sensitivity"], tmp_path)
    entry = p.manifest["experiments"][0]
    lrs = entry["axes"]["lr"]
    assert len(lrs) == 6 and lrs[0] == 3e-4 and lrs[-1] == 1e-1
    assert len(p.runs) == len({c.run_id for c in p.runs}) == 4 * 6 * 3
    by_variant = {v["name"]: {(r["lr"], r["seed"]) for r in v["runs"]} for v in entry["variants"]}
    assert list(by_variant) == ["baseline", "qk_layernorm", "z_loss", "qk_layernorm_z_loss"]
    assert all(len(points) == 18 for points in by_variant.values())
    switches = {(c.model.qk_norm, c.train.z_loss) for c in p.runs}
    assert switches == {(False, 0.0), (True, 0.0), (False, 1e-4), (True, 1e-4)}
    assert "72 runs: 0 cached, 72 to train" in describe_plan(p, tmp_path)
