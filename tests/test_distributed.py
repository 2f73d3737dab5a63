"""torchrun on gloo: 2 processes train the run 1 process trains (same global batch), write one run
folder, and resume after a SIGKILL.

Tolerance: both compute the same gradients; only the float32 summation order differs (the
global-batch mean is taken as the mean of two half-batch means, and gloo sums the gradients).
Measured on the smoke preset: 0 at step 10, 2.4e-7 at step 20; at its lr=1e-2 the gap then grows
~10x per 10 steps (6.8e-5 by step 40), so the test compares the first 20 steps. TOLERANCE = 1e-5 is
40x the measured gap, and 1000x below the difference a genuinely different run makes (checked below:
1 process on half the batch lands > 1e-2 away).
"""

from __future__ import annotations

import fcntl
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import ROOT, run_module

TOLERANCE = 1e-5
SMOKE = ["--preset", "smoke", "--device", "cpu", "--quiet", "--set", "max_iters=20"]


def torchrun(n: int, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return run_module("torch.distributed.run", "--standalone", f"--nproc_per_node={n}", "-m",
                      "experiments.run", *args, **kwargs)


def losses(results: Path) -> list[tuple[int, float, float]]:
    (metrics,) = results.glob("*/*/metrics.jsonl")
    return [(m["step"], m["train_loss"], m["val_loss"])
            for m in map(json.loads, metrics.read_text().splitlines())]


def assert_same_curve(a: list, b: list, tol: float = TOLERANCE) -> None:
    assert [s for s, *_ in a] == [s for s, *_ in b]
    worst = max(abs(x - y) for (_, *xa), (_, *xb) in zip(a, b, strict=True) for x,
                y in zip(xa, xb, strict=True))
    assert worst <= tol, f"curves differ by {worst}"


def wait_until_unlocked(lock: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    with lock.open("rb") as f:
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(f, fcntl.LOCK_UN)
                return
            except BlockingIOError:
                assert time.monotonic() < deadline, f"{lock} still held {timeout}s after SIGKILL"
                time.sleep(0.05)


@pytest.mark.slow
def test_two_gloo_processes_give_the_single_process_curve(tmp_path):
    single = run_module("experiments.run", *SMOKE, "--results", tmp_path / "one")
    assert single.returncode == 0, single.stderr
    ddp = torchrun(2, *SMOKE, "--results", tmp_path / "two")
    assert ddp.returncode == 0, ddp.stderr
    assert_same_curve(losses(tmp_path / "one"), losses(tmp_path / "two"))
    # Rank 0 alone wrote one run folder (same config, same run id) and said so once.
    assert [p.name for p in (tmp_path / "two" / "adhoc").iterdir() if p.is_dir()] == \
        [p.name for p in (tmp_path / "one" / "adhoc").iterdir() if p.is_dir()]
    assert ddp.stdout.count("completed") == 1
    (summary,) = (tmp_path / "two").glob("*/*/summary.json")
    assert json.loads(summary.read_text())["world_size"] == 2
    # The tolerance tells runs apart: half the batch on one process is another run.
    half = run_module("experiments.run", *SMOKE, "--set", "batch_size=4", "--results",
                      tmp_path / "half")
    assert half.returncode == 0, half.stderr
    final = {name: losses(tmp_path / name)[-1][2] for name in ("two", "half")}
    assert abs(final["two"] - final["half"]) > 1000 * TOLERANCE


def test_a_batch_that_does_not_split_is_a_usage_error(tmp_path):
    out = torchrun(2, *SMOKE, "--set", "batch_size=7", "--results", tmp_path)
    assert out.returncode != 0
    assert "batch_size 7" in out.stderr and "divisible by 2" in out.stderr
    assert not list(tmp_path.glob("*/*/ckpt.pt"))


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_to_the_uninterrupted_numbers(tmp_path):
    # Dropout on: resuming must also restore every rank's dropout stream.
    args = [*SMOKE[:-1], "max_iters=600", "--set", "eval_interval=100", "--set", "dropout=0.1"]
    whole = torchrun(2, *args, "--results", tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "experiments.run", *args, "--results", str(tmp_path / "killed")]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(
        '"step": 100' in p.read_text() for p in (tmp_path / "killed").glob("*/*/metrics.jsonl")
    ):
        time.sleep(0.05)
    launcher = psutil.Process(proc.pid)
    # torchrun starts ranks in their own sessions
    for p in [*launcher.children(recursive=True), launcher]:
        p.send_signal(signal.SIGKILL)
    proc.wait()
    (lock,) = (tmp_path / "killed").glob("*/.*.lock")
    wait_until_unlocked(lock)  # the kernel frees rank 0's run lock once that process is fully gone
    (summary,) = (tmp_path / "killed").glob("*/*/summary.json")
    assert json.loads(summary.read_text())["status"] == "running"  # really interrupted mid-run

    resumed = torchrun(2, *args, "--resume", "--results", tmp_path / "killed")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(summary.read_text())["resumes"] == 1
    assert_same_curve(losses(tmp_path / "whole"), losses(tmp_path / "killed"), tol=0.0)  # bit-exact
