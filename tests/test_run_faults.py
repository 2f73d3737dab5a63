"""Faults injected into one run: random SIGKILLs, torn writes, damaged and foreign run folders."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments import store
from tests.conftest import ROOT, run_module

# Many evaluations, each appending metrics and rewriting the checkpoint: random kills land in every
# phase.
ARGS = ("--preset", "smoke", "--quiet", "--seed", "5", "--set", "max_iters=1200", "--set",
        "eval_interval=20", "--set", "log_interval=20")


def the_run(results: Path) -> Path:
    [run_dir] = [p for p in results.glob("adhoc/*") if p.is_dir()]
    return run_dir


def losses(run_dir: Path) -> list[tuple]:
    records, problems = store.read_jsonl(run_dir / store.METRICS)
    assert not problems
    return [(m["step"], m["train_loss"], m["val_loss"]) for m in records]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_corpus) -> Path:
    results = tmp_path_factory.mktemp("whole")
    out = run_module("experiments.run", *ARGS, "--data", tiny_corpus, "--results", results)
    assert out.returncode == 0, out.stderr
    return the_run(results)


def evaluations(results: Path) -> int:
    found = list(results.glob("adhoc/*/metrics.jsonl"))
    return found[0].read_text().count("\n") if found else 0


def start(results: Path, corpus: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "experiments.run", *ARGS, "--data", str(corpus),
                             "--results", str(results), *extra], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def killed_copy(uninterrupted: Path, tmp_path: Path, tiny_corpus: Path, at_line: int) -> Path:
    """A real run SIGKILLed once it has written `at_line` evaluations."""
    proc = start(tmp_path, tiny_corpus)
    while evaluations(tmp_path) < at_line and proc.poll() is None:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return the_run(tmp_path)


@pytest.mark.slow
@pytest.mark.reliability(
    "fault", "SIGKILL at random moments, repeated (steps, metrics and checkpoint writes)")
def test_repeated_random_sigkills_lose_nothing(tmp_path, tiny_corpus, uninterrupted):
    """After each kill the folder reads (at most a torn last line); resumed 5x, numbers equal an uninterrupted run."""
    rng = random.Random(0)
    for kill in range(5):
        written = evaluations(tmp_path)
        proc = start(tmp_path, tiny_corpus, *(("--resume",) if kill else ()))
        # training has started again
        while evaluations(tmp_path) <= written and proc.poll() is None:
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        run_dir = the_run(tmp_path)
        records, problems = store.read_jsonl(run_dir / store.METRICS)
        assert len(problems) <= 1 and all("torn last line" in p for p in problems)
        steps = [r["step"] for r in records]
        assert steps == sorted(set(steps))  # every evaluation once, in order
        if json.loads((run_dir / "summary.json").read_text())["status"] == "completed":
            break
    out = run_module("experiments.run", *ARGS, "--data", tiny_corpus, "--results", tmp_path,
                     "--resume")
    assert out.returncode == 0, out.stderr
    assert losses(run_dir) == losses(uninterrupted)
    assert not list(run_dir.glob(".*")), "temp files of interrupted writes must not stay"


@pytest.mark.slow
@pytest.mark.reliability(
    "fault", "kill while appending metrics (torn last line) and while writing a checkpoint")
def test_torn_metrics_line_and_half_written_checkpoint_are_recovered(tmp_path, tiny_corpus,
                                                                     uninterrupted):
    """The torn line is reported, then dropped on resume; the half checkpoint is discarded; numbers are exact."""
    run_dir = killed_copy(uninterrupted, tmp_path, tiny_corpus, at_line=10)
    with (run_dir / store.METRICS).open("a") as f:
        f.write('{"step": 999, "train_lo')  # what a kill in the middle of a write leaves
    (run_dir / f".{store.CHECKPOINT}.x1y2z3").write_bytes(b"PK\x03\x04 half a zip")
    record = store.read_run(run_dir)
    assert (record.status == "running" and len(record.problems) == 1 and "torn last line"
            in record.problems[0])

    out = run_module("experiments.run", *ARGS, "--data", tiny_corpus, "--results", tmp_path,
                     "--resume")
    assert out.returncode == 0, out.stderr
    assert losses(run_dir) == losses(uninterrupted)
    assert not list(run_dir.glob(".*"))


@pytest.mark.slow
@pytest.mark.reliability("fault", "corrupted checkpoint")
def test_corrupted_checkpoint_is_reported_with_the_fix(tmp_path, tiny_corpus, uninterrupted):
    """Resume exits 2 naming ckpt.pt and --force; nothing in the folder changes; --force then retrains."""
    run_dir = killed_copy(uninterrupted, tmp_path, tiny_corpus, at_line=5)
    ckpt = run_dir / store.CHECKPOINT
    ckpt.write_bytes(ckpt.read_bytes()[:100])  # a truncated zip
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    out = run_module("experiments.run", *ARGS, "--data", tiny_corpus, "--results", tmp_path,
                     "--resume")
    assert out.returncode == 2
    assert (str(ckpt) in out.stderr and "--force" in out.stderr
            and len(out.stderr.strip().splitlines()) == 1)
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before

    forced = run_module("experiments.run", *ARGS, "--data", tiny_corpus, "--results", tmp_path,
                        "--force")
    assert forced.returncode == 0, forced.stderr
    assert losses(run_dir) == losses(uninterrupted)


@pytest.mark.reliability("fault",
                         "run folder from an older format, or with a damaged config/summary")
@pytest.mark.parametrize("damage", ["older format", "config not JSON", "summary not JSON"])
def test_foreign_or_damaged_run_folder_is_reported_and_the_rest_loads(tmp_path, uninterrupted,
                                                                      damage):
    """The store names the folder and the fix, and still yields every other run."""
    for name in (uninterrupted.name, "b"):  # a folder is named by its run id; "b" is damaged anyway
        shutil.copytree(uninterrupted, tmp_path / "exp" / name)
    bad = tmp_path / "exp" / "b"
    if damage == "older format":
        config = json.loads((bad / store.CONFIG).read_text())
        del config["format"]
        (bad / store.CONFIG).write_text(json.dumps(config))
    else:
        (bad / (store.CONFIG if damage.startswith("config")
                else store.SUMMARY)).write_text("{not json")
    found = list(store.RunStore(tmp_path).runs("exp"))
    assert [r.path.name for r in found if isinstance(r, store.RunRecord)] == [uninterrupted.name]
    [problem] = [r for r in found if isinstance(r, str)]
    assert str(bad) in problem and ("--force" in problem or "delete" in problem)
