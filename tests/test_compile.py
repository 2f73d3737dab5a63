"""torch.compile (the seed preset's default) on the CPU: a compiled smoke run trains, stays within
1e-4 (relative) of the eager run's losses, and resumes from its checkpoint to the bit.

One test, since compiling is the slow part (~40 s for the smoke model on a 2-core AVX2 CPU): the
resumed trainer reuses the first one's compiled kernels.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from experiments.config import resolve
from nanogpt.data import Corpus
from nanogpt.model import GPT
from nanogpt.train import Trainer
from tests.exact_resume import assert_resumes_exactly

# Inductor fuses and reorders float sums, so compiled and eager agree to rounding, not to the bit.
TOLERANCE = 1e-4


def test_a_compiled_run_trains_like_the_eager_one_and_resumes_exactly(tiny_corpus):
    overrides = {"max_iters": 20, "data": str(tiny_corpus)}
    compiled, _ = assert_resumes_exactly(overrides, resume_at=10, compile=True)
    cfg = resolve("smoke", overrides=overrides)
    corpus = Corpus.load(cfg.data)
    torch.manual_seed(0)
    eager = Trainer(GPT(dataclasses.replace(cfg.model, vocab_size=corpus.tokenizer.vocab_size)),
                    corpus, cfg.train, seed=0, device=torch.device("cpu"))
    assert eager.run().status == "completed"
    assert compiled.forward_eval is not compiled.model  # it really ran compiled
    losses, reference = (
        {k: v for k, v in t.estimate_loss().items() if k.endswith("_loss")}
                         for t in (compiled, eager))
    assert losses.keys() == {"train_loss", "val_loss"}
    assert losses == pytest.approx(reference, rel=TOLERANCE)
    assert reference["val_loss"] < 3.3  # and it learned (from ln(vocab) ~ 3.4 for the tiny corpus)
