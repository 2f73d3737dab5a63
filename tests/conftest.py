"""Shared fixtures: a small synthetic corpus, the real Tiny Shakespeare copy, a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest_plugins = ("analysis_fixtures",)  # session data for the analysis tests (issue 5)

ROOT = Path(__file__).resolve().parent.parent
SHAKESPEARE = Path(
    os.environ.get("NANOGPT_TINYSHAKESPEARE", ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt")
)


@pytest.fixture(scope="session")
def shakespeare() -> Path:
    assert SHAKESPEARE.is_file(), f"Tiny Shakespeare not found at {SHAKESPEARE}; set NANOGPT_TINYSHAKESPEARE"
    return SHAKESPEARE


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """~20k characters of varied text: fast to load, long enough for block_size 8 batches."""
    words = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "seven", "wizards",
             "quietly", "hex", "jolly", "kings"]
    lines = [" ".join(words[(i * 7 + j) % len(words)] for j in range(9)).capitalize() + "." for i in range(400)]
    path = tmp_path_factory.mktemp("corpus") / "tiny.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _offline_env(monkeypatch, tmp_path):
    """No test may touch the network or the user's cache; W&B stays offline."""
    monkeypatch.setenv("NANOGPT_TINYSHAKESPEARE", str(SHAKESPEARE))
    monkeypatch.setenv("NANOGPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def run_module(module: str, *args: str, cwd: Path = ROOT, env: dict | None = None,
               timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m module args...` as a real process and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)], cwd=cwd, capture_output=True, text=True,
        timeout=timeout, env={**os.environ, **(env or {})},
    )
