"""Apple Silicon (`--device mps`) where it can be tested without a Mac: torch.mps's functions are
mocked, so these pin which functions the code calls and what it does with their answers, not that
Metal works."""

from __future__ import annotations

import random
import sys
from types import SimpleNamespace

import pytest
import torch

from experiments import machine
from experiments.config import ConfigError
from experiments.run import main
from nanogpt import precision, train
from nanogpt.data import Batches

MPS_STATE = torch.tensor([7, 8, 9], dtype=torch.uint8)


@pytest.fixture
def mps(monkeypatch):
    """A Mac whose MPS backend is there; records what is handed to torch.mps."""
    restored = []
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.mps, "get_rng_state", lambda: MPS_STATE.clone())
    monkeypatch.setattr(torch.mps, "set_rng_state", restored.append)
    return restored


def batches() -> dict[str, Batches]:
    return {"train": Batches(torch.arange(100), block_size=4, batch_size=2, seed=0)}


def test_the_mps_generator_is_checkpointed_and_restored(mps):
    """Dropout on an Apple GPU draws from the MPS generator: without its state a resumed run draws
    other masks."""
    state = train.rng_state(batches())
    assert torch.equal(state["mps"], MPS_STATE)
    random.seed(1)  # restore_rng also sets the other generators back
    train.restore_rng(state, batches())
    [given] = mps
    assert torch.equal(given, MPS_STATE)


def test_without_mps_no_mps_state_is_kept_or_asked_for(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    state = train.rng_state(batches())
    assert "mps" not in state
    # a Mac's checkpoint resumed elsewhere: no MPS call
    train.restore_rng(state | {"mps": MPS_STATE}, batches())


def test_mps_memory_is_the_metal_drivers_allocation_in_mib(monkeypatch):
    monkeypatch.setattr(torch.mps, "driver_allocated_memory", lambda: 3 * 2**20)
    assert train.peak_memory_mb(torch.device("mps")) == 3.0


@pytest.mark.parametrize(("platform", "maxrss", "mib"), [("linux", 2**20, 1024.0),
                                                         ("darwin", 2**30, 1024.0)])
def test_cpu_peak_memory_reads_ru_maxrss_in_the_platforms_unit(monkeypatch, platform, maxrss, mib):
    """Linux reports KiB, macOS bytes: the same 1 GiB peak either way."""
    monkeypatch.setattr(sys, "platform", platform)
    monkeypatch.setattr(train.resource, "getrusage", lambda _: SimpleNamespace(ru_maxrss=maxrss))
    assert train.peak_memory_mb(torch.device("cpu")) == mib


def test_mps_memory_limit_is_what_metal_recommends(monkeypatch):
    monkeypatch.setattr(torch.mps, "recommended_max_memory", lambda: 16 * 2**30)
    assert machine._memory(torch.device("mps")) == 16 * 2**30


def test_device_mps_is_taken_where_mps_is_there_and_auto_stays_on_the_cpu(mps, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert machine.resolve_device("mps") == torch.device("mps")
    # not measured to pay on a Mac yet (docs/gpu.md)
    assert machine.resolve_device("auto") == torch.device("cpu")


def test_device_mps_without_mps_says_what_to_use(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="MPS is not available; use --device cpu"):
        machine.resolve_device("mps")


def test_auto_dtype_on_mps_is_float32_and_float16_is_not_called_emulated():
    choice = precision.choose("auto", torch.device("mps"))
    assert choice.dtype == "float32" and "speed unknown" in choice.reason
    assert precision.choose("float16", torch.device("mps")).warning is None


def test_help_and_errors_list_mps(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    # argparse wraps lines
    assert "mps (Apple Silicon GPU)" in " ".join(capsys.readouterr().out.split())
    with pytest.raises(ConfigError, match="use auto, cpu, cuda, cuda:N or mps"):
        machine.resolve_device("tpu")
