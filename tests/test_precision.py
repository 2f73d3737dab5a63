"""dtype=auto: bf16 only where the hardware computes it natively, resolved before hashing, recorded
with its reason."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from experiments import config
from experiments.config import resolve, with_device
from experiments.machine import prepare
from experiments.runner import train_run
from nanogpt import precision

CPU = torch.device("cpu")


def native_bf16_flags() -> bool:
    """Read /proc/cpuinfo here, independently of nanogpt.precision: AVX512_BF16 or AMX means native
    bf16."""
    cpuinfo = Path("/proc/cpuinfo")
    text = cpuinfo.read_text() if cpuinfo.is_file() else ""
    flags = {flag for line in text.splitlines() if line.startswith("flags")
             for flag in line.split(":", 1)[1].split()}
    return bool(flags & {"avx512_bf16", "amx_bf16"})


@pytest.fixture
def emulated_bf16(monkeypatch):
    """This CPU as an AVX2-only one, whatever it really is: torch's own capability checks say no."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)


@pytest.fixture
def native_bf16(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)


def test_auto_picks_what_this_machine_computes_natively_and_says_why():
    choice = precision.choose("auto", CPU)
    if native_bf16_flags():
        assert choice.dtype == "bfloat16" and choice.bf16_native
        assert "AVX512_BF16" in choice.reason or "AMX" in choice.reason
    else:
        assert choice.dtype == "float32" and not choice.bf16_native
        assert "emulated" in choice.reason
    assert choice.reason.startswith(f"auto -> {choice.dtype}: CPU ")
    assert choice.warning is None


def test_the_cpu_preset_trains_in_the_dtype_auto_resolves_to_here():
    cfg = prepare(resolve("cpu")).cfg
    assert cfg.train.dtype == precision.choose("auto", CPU).dtype != "auto"


def test_auto_decides_from_the_capability_not_the_preset(emulated_bf16):
    assert precision.choose("auto", CPU).dtype == "float32"
    forced = precision.choose("bfloat16", CPU)
    assert forced.dtype == "bfloat16"  # an explicit dtype is kept ...
    # ... with a warning saying what to do
    assert "emulated" in forced.warning and "dtype=auto" in forced.warning
    assert precision.choose("float32", CPU).warning is None


def test_auto_takes_bf16_where_it_is_native(native_bf16):
    choice = precision.choose("auto", CPU)
    assert choice.dtype == "bfloat16" and choice.warning is None
    # CPU attention stays fp32: its fp32 kernel is the fast one
    assert choice.attention_dtype == "float32"


def test_configs_that_differ_only_in_resolved_dtype_hash_differently(emulated_bf16):
    on_avx2 = with_device(resolve("cpu"), CPU)
    forced = with_device(resolve("cpu", overrides={"dtype": "bfloat16"}), CPU)
    assert (on_avx2.train.dtype, forced.train.dtype) == ("float32", "bfloat16")
    assert on_avx2.hash != forced.hash
    # Auto never reaches the hash: it hashes as the dtype it resolved to.
    assert on_avx2.hash == with_device(resolve("cpu", overrides={"dtype": "float32"}), CPU).hash


def test_forcing_emulated_bf16_warns_once(emulated_bf16, capsys):
    config._warn_once.cache_clear()
    for _ in range(3):
        with_device(resolve("smoke", overrides={"dtype": "bfloat16", "lr": 0.02}), CPU)
    warnings = [line for line in capsys.readouterr().err.splitlines()
                if line.startswith("warning:")]
    assert len(warnings) == 1 and "emulated" in warnings[0]


def test_a_run_records_its_resolved_dtype_and_the_reason(tmp_path, tiny_corpus):
    cfg = resolve("smoke", overrides={"dtype": "auto", "max_iters": 2, "eval_interval": 2,
                                      "data": str(tiny_corpus)})
    summary = train_run(cfg, tmp_path, quiet=True)
    expected = precision.choose("auto", CPU)
    # dtype, attention dtype, bf16_native and the reason
    assert summary["precision"] == expected.record()
    assert summary["precision"]["reason"].startswith(f"auto -> {expected.dtype}: ")
    assert summary["environment"]["cpu_isa"] == precision.cpu_isa()
    [config] = tmp_path.glob("*/*/config.json")
    assert f'"dtype": "{expected.dtype}"' in config.read_text()
