"""fp16 where bf16 is not native: auto's choice per CUDA capability, the gradient scaler, skipped
steps, exact resume.

The choice is tested with the CUDA capability patched (the fact it is made from); the training
itself runs for real on the CPU, where torch has fp16 autocast and a GradScaler too.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import pytest
import torch

from experiments.config import resolve, with_device
from experiments.runner import train_run
from nanogpt import precision
from nanogpt.data import Corpus
from nanogpt.model import GPT
from nanogpt.train import Trainer
from tests.exact_resume import assert_resumes_exactly

CUDA = torch.device("cuda", 0)
CPU = torch.device("cpu")


@pytest.fixture
def capability(monkeypatch):
    """Make torch report a CUDA GPU of the given compute capability (no GPU is touched)."""
    def patch(major: int, minor: int) -> None:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (major, minor))
    return patch


@pytest.mark.parametrize(("cap", "dtype"), [((9, 0), "bfloat16"), ((8, 0), "bfloat16"),
                                            ((8, 6), "bfloat16"), ((7, 5), "float16"),
                                            ((7, 0), "float16"), ((6, 1), "float32")],
                         ids=["H100", "A100", "RTX3090", "T4", "V100", "GTX1080"])
def test_auto_on_cuda_is_bf16_from_ampere_fp16_on_volta_and_turing(capability, cap, dtype):
    capability(*cap)
    choice = precision.choose("auto", CUDA)
    assert choice.dtype == dtype and choice.warning is None
    assert choice.grad_scaler == (dtype == "float16")
    assert choice.reason.startswith(f"auto -> {dtype}: CUDA compute capability {cap[0]}.{cap[1]}")


def test_forced_float16_warns_only_where_it_is_emulated(capability, monkeypatch):
    capability(7, 5)
    assert precision.choose("float16", CUDA).warning is None
    capability(6, 1)
    assert "no fp16 tensor cores" in precision.choose("float16", CUDA).warning
    monkeypatch.setattr(torch.cpu, "_is_amx_fp16_supported", lambda: False)
    cpu = precision.choose("float16", CPU)
    assert cpu.dtype == "float16" and "emulated" in cpu.warning and "dtype=auto" in cpu.warning
    monkeypatch.setattr(torch.cpu, "_is_amx_fp16_supported", lambda: True)
    assert precision.choose("float16", CPU).warning is None


def test_the_resolved_dtype_is_hashed_and_earlier_run_ids_stay(capability):
    capability(7, 5)
    on_t4 = with_device(resolve("seed"), CUDA)
    capability(8, 0)
    on_a100 = with_device(resolve("seed"), CUDA)
    assert (on_t4.train.dtype, on_a100.train.dtype) == ("float16", "bfloat16")
    assert on_t4.hash != on_a100.hash
    assert on_t4.hash == with_device(resolve("seed", overrides={"dtype": "float16"}), CUDA).hash
    # A bf16 or fp32 run hashes as before fp16 existed (the dtype's value is what it always was).
    assert on_a100.hash == with_device(resolve("seed", overrides={"dtype": "bfloat16"}), CUDA).hash


def test_an_fp16_run_trains_with_a_scaler_skips_nothing_and_records_it(tmp_path, tiny_corpus):
    cfg = resolve("smoke", overrides={"dtype": "float16", "max_iters": 20, "grad_clip": 1.0,
                                      "data": str(tiny_corpus)}, device="cpu")
    summary = train_run(cfg, tmp_path, quiet=True)
    assert summary["status"] == "completed"
    assert summary["precision"]["dtype"] == "float16" and summary["precision"]["grad_scaler"]
    # the default scale 2^16 overflows nothing in this small model
    assert summary["skipped_steps"] == 0
    assert summary["final_val_loss"] < summary["initial_val_loss"] - 0.3  # it learned


def test_an_fp32_run_has_no_scaler_and_no_skipped_steps(tmp_path, tiny_corpus):
    cfg = resolve("smoke", overrides={"max_iters": 4, "eval_interval": 2, "data": str(tiny_corpus)},
                  device="cpu")
    summary = train_run(cfg, tmp_path, quiet=True)
    assert summary["skipped_steps"] == 0 and not summary["precision"]["grad_scaler"]


@pytest.fixture
def huge_scale(monkeypatch):
    """Start every gradient scaler at 2^40: fp16 gradients overflow, and the scaler skips steps
    until they fit."""
    monkeypatch.setattr(torch.amp, "GradScaler", functools.partial(torch.amp.GradScaler,
                                                                   init_scale=2.0**40))


def test_steps_skipped_for_inf_gradients_are_counted_and_are_no_divergence(tiny_corpus, huge_scale):
    cfg = resolve("smoke", overrides={"dtype": "float16", "max_iters": 40,
                                      "data": str(tiny_corpus)})
    corpus = Corpus.load(cfg.data)
    torch.manual_seed(0)
    model = GPT(dataclasses.replace(cfg.model, vocab_size=corpus.tokenizer.vocab_size))
    trainer = Trainer(model, corpus, cfg.train, seed=0, device=CPU)
    result = trainer.run()
    assert result.status == "completed" and result.step == 40
    # Growth needs 2000 clean steps, so every halving of the scale is one skipped step.
    halvings = round(math.log2(2.0**40 / trainer.scaler.get_scale()))
    assert result.skipped_steps == halvings > 0
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_an_fp16_run_resumes_exactly_with_its_scaler_state(tiny_corpus, huge_scale):
    """Resumed while the scaler is still skipping steps: a resume that restarted the scale at 2^40
    would skip steps the uninterrupted run took, and end on other weights."""
    first, second = assert_resumes_exactly({"dtype": "float16", "max_iters": 20, "grad_clip": 1.0,
                                            "data": str(tiny_corpus)}, resume_at=10)
    assert first.scaler.state_dict() == second.scaler.state_dict()
    # skips before and after the resume point, all counted
    assert int(first.skipped) == int(second.skipped) > 10
