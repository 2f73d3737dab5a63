"""What this machine resolves for a run: the device it asked for, whether its model fits, the cores
to use.

`prepare` is the one place a run's config meets the corpus and the machine: it resolves the device
(once, in `resolve_device`) and the dtype for it, fills in what the corpus decides, and refuses a
model too large to train. Writes nothing. The runner CLI, `make ablate`'s plan, the benchmarks and
the sweeps all prepare this way; a `Prepared` run carries what was resolved, so nothing resolves it
again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from experiments.config import RunConfig, with_corpus, with_device
from experiments.settings import ConfigError
from nanogpt.data import Corpus
from nanogpt.model import GPT

DEVICE_TYPES = ("cpu", "cuda", "mps")
TRAINING_BYTES_PER_PARAM = 16  # fp32 weights, gradients and AdamW's two moments


@dataclass(frozen=True)
class Prepared:
    """A run ready to train: what the user asked (`cfg`, its dtype now resolved) and what this
    machine resolved."""

    cfg: RunConfig  # dtype resolved for `device`; vocab size and checksum from `corpus`
    corpus: Corpus
    device: torch.device  # `cfg.device` ("auto", "cuda:1", ...) resolved on this machine


def resolve_device(requested: str) -> torch.device:
    """The device a run asks for ("auto": CUDA if there is one), or ConfigError if this machine
    lacks it.

    auto never picks MPS: nobody has measured here that it beats a Mac's CPU.
    """
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        device = None
    if device is None or device.type not in DEVICE_TYPES:
        raise ConfigError(f"device '{requested}' is not a device name; use auto, cpu, cuda, cuda:N "
                          "or mps")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {requested} requested but CUDA is not available; use --device "
                          "cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"device {requested}: this machine has {torch.cuda.device_count()} CUDA "
                          "device(s); use cuda:0 .. cuda:N-1")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {requested} requested but MPS is not available; use --device "
                          "cpu")
    return device


def _memory(device: torch.device) -> int:
    """Bytes of memory the device has in all (a model larger than that can never train there)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[1]
    if device.type == "mps":  # unified memory: what Metal lets this process allocate
        return torch.mps.recommended_max_memory()
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _check_fits(cfg: RunConfig, device: torch.device) -> None:
    """A model too large to train is refused here, before any folder is made (built on the meta
    device)."""
    with torch.device("meta"):
        params = GPT(cfg.model).num_params()
    needed, memory = params * TRAINING_BYTES_PER_PARAM, _memory(device)
    if needed > memory:
        raise ConfigError(f"the model has {params:,} parameters and needs about "
                          f"{needed / 2**30:.1f} GiB to train, but the {device.type} has "
                          f"{memory / 2**30:.1f} GiB; use a smaller n_embd or n_layer")


def prepare(cfg: RunConfig, corpus: Corpus | None = None) -> Prepared:
    """Load the corpus (unless given) and finish validating the config against it and the
    machine."""
    # fail now, before anything is written, if the device is not there
    device = resolve_device(cfg.device)
    cfg = with_device(cfg, device)  # dtype=auto becomes the dtype this device computes fast
    corpus = corpus or Corpus.load(cfg.data)
    cfg = with_corpus(cfg, corpus.tokenizer.vocab_size, corpus.sha256,
                      (len(corpus.train), len(corpus.val)))
    _check_fits(cfg, device)
    return Prepared(cfg, corpus, device)


def check_results(results: Path) -> None:
    """A run store must be a folder (or not exist yet): say so before anything is written."""
    for path in (results, *results.parents):
        if path.exists():
            if not path.is_dir():
                raise ConfigError(f"results path {results}: {path} is a file, not a folder; "
                                  "give --results a folder (RESULTS= for make)")
            return


def default_jobs() -> int:
    """Parallel runs by default: the cores this process may use."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(
        os, "sched_getaffinity") else os.cpu_count() or 1)
