"""One check shared by the model and fast-path tests: a run resumed from a checkpoint ends
bit-identical."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from experiments.config import resolve
from nanogpt.checkpoint import deserialize, serialize
from nanogpt.data import Corpus
from nanogpt.model import GPT
from nanogpt.train import Callback, Trainer


class Keep(Callback):
    """Every evaluation's losses, and the checkpoint taken there."""

    def __init__(self):
        self.metrics, self.checkpoints = [], {}

    def on_eval(self, metrics, checkpoint):
        self.metrics.append((metrics["step"], metrics["train_loss"], metrics["val_loss"]))
        self.checkpoints[metrics["step"]] = serialize(checkpoint())


def assert_resumes_exactly(overrides: dict[str, Any], resume_at: int,
                           compile: bool = False) -> tuple[Trainer, Trainer]:
    """Train the smoke preset with `overrides`, then again from its checkpoint at step `resume_at`:
    the later evaluations and the final weights must be equal to the bit. Returns both trainers."""
    cfg = resolve("smoke", overrides=overrides)
    corpus = Corpus.load(cfg.data)
    model_cfg = dataclasses.replace(cfg.model, vocab_size=corpus.tokenizer.vocab_size)

    def trainer() -> Trainer:
        torch.manual_seed(0)
        return Trainer(GPT(model_cfg), corpus, cfg.train, seed=0, device=torch.device("cpu"),
                       compile=compile)

    whole, first = Keep(), trainer()
    assert first.run([whole]).status == "completed"
    resumed, second = Keep(), trainer()
    second.restore(deserialize(whole.checkpoints[resume_at]))
    second.run([resumed])
    # the resume point itself is not re-evaluated
    later = [m for m in whole.metrics if m[0] > resume_at]
    assert resumed.metrics == later and later
    assert all(torch.equal(a, b) for a, b in zip(first.model.state_dict().values(),
                                                 second.model.state_dict().values(), strict=True))
    return first, second
