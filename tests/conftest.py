"""Shared fixtures: a small synthetic corpus, the real Tiny Shakespeare copy, a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import PROJECT_ROOT as ROOT

pytest_plugins = ["tests.reliability_report", "tests.analysis_fixtures"]

# The local copy tests read (never a download): $NANOGPT_TINYSHAKESPEARE, else ../shared beside the
# checkout.
SHAKESPEARE = Path(
    os.environ.get("NANOGPT_TINYSHAKESPEARE",
                   ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt")
)


@pytest.fixture(scope="session")
def shakespeare() -> Path:
    assert SHAKESPEARE.is_file(), (f"Tiny Shakespeare not found at {SHAKESPEARE}; set "
                                   "NANOGPT_TINYSHAKESPEARE")
    return SHAKESPEARE


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """~20k characters of varied text: fast to load, long enough for block_size 8 batches."""
    words = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "seven",
             "wizards", "quietly", "hex", "jolly", "kings"]
    lines = [" ".join(words[(i * 7 + j) % len(words)] for j in range(9)).capitalize() + "."
             for i in range(400)]
    path = tmp_path_factory.mktemp("corpus") / "tiny.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# For every process the tests start, fixtures of any scope included: the local dataset copy, W&B off
# unless a test asks for offline mode, and one thread (CPU float sums depend on the thread count,
# and runs are compared exactly).
os.environ |= {"NANOGPT_TINYSHAKESPEARE": str(SHAKESPEARE), "WANDB_MODE": "disabled",
               "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}


@pytest.fixture(autouse=True)
def _private_cache(monkeypatch, tmp_path):
    """No test may touch the network or the user's cache."""
    monkeypatch.setenv("NANOGPT_CACHE", str(tmp_path / "cache"))


# --- one suite for every host: CPU tests run on the CPU everywhere, `cuda` tests where a CUDA GPU is ---------------
CUDA_PRESENT: bool | None = None  # decided once per test process, before any test can hide the GPU


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers",
                            "cuda: needs a CUDA GPU; skipped with the reason where none is present")
    config.addinivalue_line(
        "markers", "slow: a fault injected into whole processes (kills, signals, full disks) that "
        "takes many seconds: `make test-slow` runs these, `make test` the rest; CI runs both")
    global CUDA_PRESENT
    import torch

    # On a GPU host this initializes CUDA with every GPU visible, so hiding them from a CPU test's
    # child processes below (CUDA_VISIBLE_DEVICES) never hides them from this process's `cuda`
    # tests.
    CUDA_PRESENT = torch.cuda.is_available()


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("cuda") and not CUDA_PRESENT:
        pytest.skip("needs a CUDA GPU: torch.cuda.is_available() is False on this host")


@pytest.fixture(autouse=True)
def _cpu_unless_marked_cuda(request, monkeypatch):
    """A test not marked `cuda` is a CPU test on every host: device auto means the CPU, in this
    process and in the processes it starts, so a GPU host computes what a CPU host does (runs are
    compared exactly)."""
    if request.node.get_closest_marker("cuda"):
        return
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")


def run_module(module: str, *args: str, cwd: Path = ROOT, env: dict | None = None,
               timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m module args...` as a real process and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)], cwd=cwd, capture_output=True, text=True,
        timeout=timeout, env={**os.environ, **(env or {})},
    )
