"""On a CUDA GPU (marked `cuda`: skipped with the reason on a host without one; `make gpu-check`
runs them).

The same behaviours the CPU tests pin, on the GPU: device auto picks it, dtype auto picks what its
compute capability computes natively (fp16 with a scaler below 8.0), runs resume, compile trains,
ablate pins workers.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from experiments import store
from experiments.config import RunConfig, resolve
from experiments.runner import train_run
from nanogpt import precision
from nanogpt.checkpoint import deserialize
from nanogpt.data import Corpus
from nanogpt.model import GPT
from nanogpt.train import Trainer
from tests.conftest import run_module
from tests.exact_resume import Keep

pytestmark = pytest.mark.cuda
GPU = torch.device("cuda", 0)


def smoke(tiny_corpus, **overrides) -> RunConfig:
    return resolve("smoke", overrides={"data": str(tiny_corpus), **overrides})


def test_device_auto_trains_on_the_gpu_in_the_dtype_its_capability_computes_fast(tmp_path,
                                                                                 tiny_corpus):
    summary = train_run(smoke(tiny_corpus, dtype="auto"), tmp_path, quiet=True)
    assert summary["status"] == "completed" and summary["environment"]["device"].startswith("cuda")
    assert summary["environment"]["device_name"] == torch.cuda.get_device_name(GPU)
    assert summary["precision"]["dtype"] == precision.choose("auto", GPU).dtype
    assert summary["final_val_loss"] < summary["initial_val_loss"]
    [metrics] = tmp_path.glob("*/*/metrics.jsonl")
    # the CUDA allocator's mark
    assert json.loads(metrics.read_text().splitlines()[-1])["peak_mem_mb"] > 0


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_every_dtype_trains_on_the_gpu(tmp_path, tiny_corpus, dtype):
    summary = train_run(smoke(tiny_corpus, dtype=dtype, grad_clip=1.0), tmp_path, quiet=True)
    assert summary["status"] == "completed" and summary["precision"]["dtype"] == dtype
    assert summary["precision"]["grad_scaler"] == (dtype == "float16")
    assert summary["skipped_steps"] <= 2  # at most the scale's first calibration steps
    assert summary["final_val_loss"] < summary["initial_val_loss"] - 0.3


def test_an_fp16_gpu_run_resumed_from_its_checkpoint_ends_on_the_same_losses(tiny_corpus):
    """Scaler state and CUDA RNG restored; GPU kernels may sum in another order, so equal to 1e-4,
    not to the bit."""
    cfg = smoke(tiny_corpus, dtype="float16", max_iters=40, grad_clip=1.0, dropout=0.1)
    corpus = Corpus.load(cfg.data)
    model_cfg = dataclasses.replace(cfg.model, vocab_size=corpus.tokenizer.vocab_size)

    def trainer() -> Trainer:
        torch.manual_seed(0)
        return Trainer(GPT(model_cfg), corpus, cfg.train, seed=0, device=GPU)

    whole = Keep()
    assert trainer().run([whole]).status == "completed"
    resumed, second = Keep(), trainer()
    second.restore(deserialize(whole.checkpoints[20]))
    assert second.scaler.is_enabled() and second.run([resumed]).status == "completed"
    later = [m for m in whole.metrics if m[0] > 20]
    assert [m[0] for m in resumed.metrics] == [m[0] for m in later]
    flat = [loss for m in resumed.metrics for loss in m[1:]]
    assert flat == pytest.approx([loss for m in later for loss in m[1:]], rel=1e-4)


def test_compiled_training_on_the_gpu(tmp_path, tiny_corpus):
    summary = train_run(dataclasses.replace(smoke(tiny_corpus), compile=True), tmp_path, quiet=True)
    assert summary["status"] == "completed" and summary["final_val_loss"] < summary[
        "initial_val_loss"]


def test_device_cuda_0_is_accepted_and_recorded(tmp_path, tiny_corpus):
    out = run_module("experiments.run", "--preset", "smoke", "--data", tiny_corpus, "--results",
                     tmp_path, "--device", "cuda:0", "--quiet", "--wandb", "off")
    assert out.returncode == 0, out.stderr
    [summary] = tmp_path.glob("*/*/summary.json")
    assert json.loads(summary.read_text())["environment"]["device"] == "cuda:0"


def test_ablate_workers_train_on_the_gpu(tmp_path, tiny_corpus):
    out = run_module("experiments.ablate", "--preset", "smoke", "--seeds", "1", "--experiments",
                     "ladder", "--data", tiny_corpus, "--results", tmp_path, "--wandb", "off")
    assert out.returncode == 0, out.stderr
    assert "pinned round-robin to" in out.stderr
    summaries = [json.loads(p.read_text()) for p in tmp_path.glob(f"*/*/{store.SUMMARY}")]
    assert summaries and all(s["environment"]["device"].startswith("cuda") for s in summaries)
