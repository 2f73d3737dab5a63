"""The fast training path computes what the plain one does: same batches, same eval mean, same
attention."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from experiments.config import resolve
from nanogpt.data import Batches, Corpus
from nanogpt.model import GPT, causal_attention
from nanogpt.train import Trainer
from tests.exact_resume import assert_resumes_exactly


def test_many_batches_at_once_are_the_batches_drawn_one_by_one():
    tokens = torch.arange(10_000)
    one_by_one, at_once = Batches(tokens, 16, 4, seed=3), Batches(tokens, 16, 4, seed=3)
    xs, ys = zip(*(one_by_one.next() for _ in range(50)), strict=True)
    x, y = at_once.next(50)
    assert torch.equal(x, torch.cat(xs)) and torch.equal(y, torch.cat(ys))
    assert torch.equal(at_once.state(), one_by_one.state())  # and the stream goes on identically


def test_shards_partition_the_global_batch():
    tokens = torch.arange(10_000)
    whole = torch.cat([Batches(tokens, 8, 6, seed=1).next()[0]])
    shards = [Batches(tokens, 8, 6, seed=1, shard=(rank, 3)).next()[0] for rank in range(3)]
    assert [len(s) for s in shards] == [2, 2, 2]
    assert torch.equal(torch.cat(shards), whole)


def test_batched_eval_is_the_mean_of_per_batch_losses(tiny_corpus):
    cfg = resolve("smoke", overrides={"eval_iters": 7, "data": str(tiny_corpus)})
    corpus = Corpus.load(cfg.data)
    model_cfg = dataclasses.replace(cfg.model, vocab_size=corpus.tokenizer.vocab_size)
    trainer = Trainer(GPT(model_cfg), corpus, cfg.train, seed=5, device=torch.device("cpu"))
    reference = Batches(corpus.val, model_cfg.block_size, cfg.train.batch_size, seed=5 + 2)
    with torch.no_grad():
        per_batch = [trainer.model(*reference.next())[1] for _ in range(7)]
    estimate = trainer.estimate_loss()
    assert abs(estimate["val_loss"] - torch.stack(per_batch).mean().item()) < 1e-5


def test_cpu_attention_runs_in_fp32_under_bf16_autocast():
    q, k, v = (torch.randn(2, 3, 16, 8) for _ in range(3))
    exact = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = causal_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), 0.0)
    assert out.dtype == torch.float32
    # Only the bf16 rounding of the inputs remains (~2^-8 relative), not bf16 softmax/accumulation.
    assert (out - exact).abs().max() < 0.05


def test_bf16_autocast_training_follows_fp32(tiny_corpus):
    losses = {}
    for dtype in ("float32", "bfloat16"):
        cfg = resolve("smoke", overrides={"dtype": dtype, "max_iters": 30,
                                          "data": str(tiny_corpus)})
        corpus = Corpus.load(cfg.data)
        torch.manual_seed(0)
        model = GPT(dataclasses.replace(cfg.model, vocab_size=corpus.tokenizer.vocab_size))
        trainer = Trainer(model, corpus, cfg.train, seed=0, device=torch.device("cpu"))
        assert trainer.run().status == "completed"
        losses[dtype] = trainer.estimate_loss()["val_loss"]
    assert losses["bfloat16"] < 3.0  # it learned (from ln(vocab) ~ 3.3)
    assert abs(losses["bfloat16"] - losses["float32"]) < 0.05


def test_bf16_fused_run_resumed_from_a_checkpoint_is_bit_exact(tiny_corpus):
    assert_resumes_exactly({"dtype": "bfloat16", "max_iters": 20, "data": str(tiny_corpus),
                            "grad_clip": 1.0, "dropout": 0.1}, resume_at=10)
