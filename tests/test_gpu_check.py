"""`make gpu-check`: its dry run on any host, its refusal without a GPU, the parts' measuring on the
CPU (smoke preset), and that what it runs imports nothing the GPU check machine lacks (wandb,
optuna, ...)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import textwrap
import time

import pytest

from benchmarks import gpu_check
from tests.conftest import ROOT, run_module

ABSENT_THERE = ("wandb", "optuna", "sqlalchemy", "papermill", "nbconvert")
SMOKE_RUN = ("-m", "experiments.run", "--preset", "smoke", "--wandb", "off", "--quiet")


def test_make_gpu_check_dry_run_prints_every_part_with_its_timeout_inside_8_minutes(tmp_path):
    report = tmp_path / "report.md"
    out = subprocess.run(["make", "-s", "gpu-check", "DRY_RUN=1", f"REPORT={report}"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for part in gpu_check.PARTS:
        assert f"[{part.key}] {part.what} (timeout {part.timeout} s)" in out.stdout
    assert ("experiments.ablate" in out.stdout and "dtype=float16" in out.stdout and "--resume"
            in out.stdout)
    assert gpu_check.BUDGET_SEC <= 8 * 60 and f"{gpu_check.BUDGET_SEC} s budget" in out.stdout
    assert not report.exists()  # a dry run writes nothing


def test_without_a_gpu_it_says_so_in_one_line(tmp_path):
    out = run_module("benchmarks.gpu_check", "--report", tmp_path / "report.md")
    assert out.returncode == 2 and out.stderr.startswith("error: the GPU check needs a CUDA GPU")
    assert len(out.stderr.strip().splitlines()) == 1 and not (tmp_path / "report.md").exists()


def test_bad_parts_are_one_line():
    out = run_module("benchmarks.gpu_check", "--parts", "a,z", "--dry-run")
    assert (out.returncode == 2 and out.stderr.strip()
            == "error: --parts a,z: choose among a,b,c,e,f,d")


def test_the_parts_never_run_past_the_budget(tmp_path, monkeypatch):
    """Each part gets its own timeout or what is left of the budget: with 3 s of budget, a 60 s
    sleeper is stopped."""
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]

    def measure(work, args, timeout):
        took, done = gpu_check.timed(sleeper, timeout, work / "s.log")
        return {"wall": took, "done": done}

    part = gpu_check.Part("s", "sleeps", 60, lambda *_: [sleeper], measure)
    monkeypatch.setattr(gpu_check, "PARTS", (part,))
    monkeypatch.setattr(gpu_check, "BUDGET_SEC", 8)  # 8 - 5 s reserve = 3 s for the part
    monkeypatch.setattr(gpu_check, "header", lambda: "## GPU check: test\n")
    monkeypatch.setattr(gpu_check, "data_path", lambda: tmp_path)
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    # main sets them: restore them after
    for key in ("NANOGPT_TINYSHAKESPEARE", "WANDB_MODE", "PYTHONUNBUFFERED"):
        monkeypatch.setenv(key, os.environ.get(key, ""))
    start = time.monotonic()
    # stopped: exit 1
    assert gpu_check.main(["--parts", "s", "--report", str(tmp_path / "report.md")]) == 1
    assert time.monotonic() - start < 30
    report = (tmp_path / "report.md").read_text()
    assert report.startswith("## GPU check: test") and "| s | sleeps | - |" in report
    assert "no (stopped at 3 s)" in report


def test_a_part_past_its_timeout_is_stopped(tmp_path):
    sleeper = [sys.executable, "-c", "import subprocess, sys, time; "
               "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
               "time.sleep(60)"]
    start = time.monotonic()
    took, done = gpu_check.timed(sleeper, 2, tmp_path / "log")
    assert not done and took < 30 and time.monotonic() - start < 30
    assert "stopped at its timeout" in (tmp_path / "log").read_text()


@pytest.mark.slow
def test_part_b_measures_the_dtype_ratio_and_an_exact_resume_after_a_kill(tmp_path, tiny_corpus,
                                                                          monkeypatch):
    """Part b as it runs on the GPU, here on the CPU with the smoke preset (40 steps, evaluations
    every 10)."""
    monkeypatch.setattr(gpu_check, "RUN", (*SMOKE_RUN, "--data", str(tiny_corpus)))
    monkeypatch.setattr(gpu_check, "EAGER_200", ("--set", "max_iters=40", "--set",
                                                 "eval_interval=10"))
    cells = gpu_check.dtype_measure(tmp_path, argparse.Namespace(jobs=None), timeout=240)
    assert cells["done"], cells
    assert "ratio" in cells["result"] and "x;" in cells["result"]
    assert "resumed: exact (all 5 evaluations equal to the bit)" in cells["result"]
    assert gpu_check.metrics(tmp_path / "b-killed")[-1]["step"] == 40


def test_what_the_gpu_check_runs_imports_nothing_the_check_machine_lacks(tmp_path, tiny_corpus):
    """wandb, optuna, ... made unimportable in every process (sitecustomize): the training path, an
    ablation's spawned workers, the check itself and part d's test modules still import and run."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(textwrap.dedent(f"""
        import sys
        class Absent:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {ABSENT_THERE!r}:
                    raise ModuleNotFoundError(f"No module named {{name!r}} (absent on the GPU check machine)")
        sys.meta_path.insert(0, Absent())
    """))
    env = {"PYTHONPATH": str(blocker)}
    probe = run_module("wandb", env=env)
    # the blocker works
    assert probe.returncode != 0 and "absent on the GPU check machine" in probe.stderr
    imports = run_module("benchmarks.gpu_check", "--dry-run", env=env)
    assert imports.returncode == 0, imports.stderr
    code = ("import experiments.run, experiments.ablate, experiments.runner, experiments.recorder, "
            "experiments.machine, benchmarks.train_speed, experiments.placement, "
            "benchmarks.gpu_check")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, **env}).returncode == 0
    ablate = run_module("experiments.ablate", "--preset", "smoke", "--seeds", "1", "--experiments",
                        "ladder", "--data", tiny_corpus, "--results", tmp_path / "results",
                        "--wandb", "off", env=env)
    assert ablate.returncode == 0, ablate.stderr
    collected = run_module("pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           *gpu_check.TESTS, env=env)
    assert collected.returncode == 0, collected.stdout[-3000:]
