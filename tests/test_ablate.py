"""`experiments.ablate`: the plan, caching, and a SIGKILLed ablation that resumes to the same
numbers."""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from experiments import ablate, manifest, store
from experiments.plan import plan
from tests.conftest import ROOT, run_module
from tests.wandb_records import history, of_type, records


def final_losses(folder: Path) -> dict[str, list[tuple]]:
    out = {}
    for path in sorted(folder.glob("*/metrics.jsonl")):
        out[path.parent.name] = [(m["step"], m["train_loss"], m["val_loss"])
                                 for m in map(json.loads, path.read_text().splitlines())]
    return out


def test_plan_lists_every_rung_and_seed_and_trains_shared_configs_once(tmp_path, tiny_corpus):
    p, _ = plan("smoke", range(2), ["ladder", "leave_one_out"], tmp_path,
                overrides={"data": str(tiny_corpus)})
    ladder, loo = p.manifest["experiments"]
    assert [v["name"] for v in ladder["variants"]] == [
        "bigram", "embeddings", "single_head", "multi_head", "mlp", "stacked", "residual",
                                                       "layernorm", "full"]
    assert [v["name"] for v in loo["variants"]][:2] == ["full", "no_attention"]
    # smoke has no dropout to remove
    assert "no_dropout" not in [v["name"] for v in loo["variants"]]
    planned = {r["run_id"] for e in (ladder, loo) for v in e["variants"] for r in v["runs"]}
    assert {c.run_id for c in p.runs} == planned
    # `full` is both the ladder's top and the leave-one-out baseline; the ladder's `layernorm` rung
    # (everything but GPT-2 init) is leave-one-out's `no_gpt2_init`: one run each per seed.
    runs_of = {(e["name"], v["name"]): [r["run_id"] for r in v["runs"]] for e in (ladder, loo)
               for v in e["variants"]}
    assert runs_of[("ladder", "full")] == runs_of[("leave_one_out", "full")]
    assert runs_of[("ladder", "layernorm")] == runs_of[("leave_one_out", "no_gpt2_init")]
    assert len(p.runs) == 2 * (9 + 6)
    # seed-major: seed 0's table fills first
    assert [c.seed for c in p.runs] == sorted(c.seed for c in p.runs)
    assert not tmp_path.joinpath("smoke").exists()  # planning writes nothing


@pytest.mark.xdist_group("analysis")  # the session's trained smoke ablation lives on that worker
def test_a_trained_ablation_has_every_run_once_and_make_ablate_then_trains_nothing(smoke_results,
                                                                                   tmp_path):
    """The fixture's `python -m experiments.ablate` trained 30 runs; `make ablate` over them trains
    none, prints every rung's row and writes the tables and the report."""
    folder = smoke_results / "smoke"
    doc = manifest.read(folder)
    assert doc["preset"] == "smoke" and doc["seeds"] == [0, 1]
    summaries = [json.loads(p.read_text()) for p in folder.glob("*/summary.json")]
    assert len(summaries) == 30 and {s["status"] for s in summaries} == {"completed"}

    results = tmp_path / "results"
    shutil.copytree(smoke_results, results)
    make = ["make", "-s", "-C", str(ROOT), "-o", sys.executable, f"PY={sys.executable}", "ablate",
            "PRESET=smoke", "SEEDS=2", f"RESULTS={results}", "WANDB=off", "JOBS=2"]
    again = subprocess.run(make, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "30 already finished, 0 to train" in again.stderr
    for rung in ("bigram", "embeddings", "single_head", "multi_head", "mlp", "stacked", "residual",
                 "layernorm", "full"):
        assert re.search(rf"^\| {rung} +\|.*\| 2 completed +\|$", again.stdout,
                         re.M), f"{rung} row missing"
    assert ((results / "smoke" / "ladder.csv").exists()
            and (results / "smoke" / "report" / "progression.md").exists())
    assert final_losses(results / "smoke") == final_losses(folder)  # nothing was retrained


BAD_ABLATIONS = [(("--experiments", "nope"), "unknown experiment 'nope'"),
                 (("--seeds", "0"), "--seeds must be at least 1"),
                 (("--seeds", "100000"), "1 <= N <= 10000"),
                 (("--jobs", "0"), "--jobs must be at least 1"),
                 (("--set", "n_head=3"), "divisible by n_head"),
                 (("--set", "experiment=elsewhere"), "experiment is given twice"),
                 (("--set", "dropout=zero"), "dropout=zero: expected a finite number"),
                 (("--preset", "nano"), "unknown preset 'nano'"),
                 (("--name", "../x"), "no paths")]


@pytest.mark.reliability("bad input", "make ablate: experiments, seeds, jobs, settings, labels, "
                         "presets, names")
@pytest.mark.parametrize(("args", "message"), BAD_ABLATIONS, ids=[m for _, m in BAD_ABLATIONS])
def test_bad_ablate_input_is_refused_before_anything_is_written(tmp_path, tiny_corpus, capsys, args,
                                                                message):
    """Exit 2 with the problem named in one line; no results folder."""
    code = ablate.main(["--preset", "smoke", "--data", str(tiny_corpus), "--results",
                        str(tmp_path / "r"), *args])
    lines = capsys.readouterr().err.strip().splitlines()
    assert (code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message
            in lines[0]), lines
    assert not (tmp_path / "r").exists()


# The kill tests share one uninterrupted reference ablation (the smoke ladder, 18 runs of 200
# steps), trained run by run; they train the same runs as ensembles of two seeds, which must end on
# the very same numbers.
KILLABLE = ["--preset", "smoke", "--seeds", "2", "--experiments", "ladder", "--jobs", "2",
            "--wandb", "off", "--set", "max_iters=200", "--set", "eval_interval=20", "--ensemble",
            "2"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_corpus) -> tuple[list[str], dict[str, list[tuple]]]:
    """(the ablation's arguments, the losses of every run when nothing interrupts it)."""
    args, results = [*KILLABLE, "--data",
                     str(tiny_corpus)], tmp_path_factory.mktemp("uninterrupted")
    whole = run_module("experiments.ablate", *args, "--results", results, "--ensemble", "off")
    assert whole.returncode == 0, whole.stderr
    return args, final_losses(results / "smoke")


@pytest.mark.slow
@pytest.mark.reliability("fault", "SIGKILL of `make ablate` while runs are half-done")
def test_sigkilled_ablation_resumes_to_the_numbers_of_an_uninterrupted_one(tmp_path, uninterrupted):
    """Workers die with the parent; the rerun trains only what is missing; numbers equal an uninterrupted run."""
    args, expected = uninterrupted
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "experiments.ablate", *args, "--results",
                             str(killed)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until some runs are done and others half-way
        statuses = [json.loads(p.read_text()).get("status")
                    for p in killed.glob("smoke/*/summary.json")]
        started = [p for p in killed.glob("smoke/*/metrics.jsonl") if p.stat().st_size > 0]
        if "completed" in statuses and len(started) > statuses.count("completed"):
            break
        time.sleep(0.01)
    workers = psutil.Process(proc.pid).children(recursive=True)
    assert workers, "the ablation should be training in worker processes"
    # only the parent: its workers must die with it (PR_SET_PDEATHSIG)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, "workers outlived their killed parent"
    statuses = [json.loads(p.read_text())["status"] for p in killed.glob("smoke/*/summary.json")]
    assert "running" in statuses and "completed" in statuses, statuses

    again = run_module("experiments.ablate", *args, "--results", killed)
    assert again.returncode == 0, again.stderr
    assert f"{statuses.count('completed')} already finished" in again.stderr
    assert final_losses(killed / "smoke") == expected


# Two small experiments that share their baseline run (the way the ladder's `full` is
# leave-one-out's).
PAIR = {"narrowing.yaml": "name: narrowing\njob_type: narrowing\ncompare: base\nvariants:\n"
                          "  - {name: base, set: {}}\n  - {name: narrow, set: {n_embd: 8}}\n",
        "thinning.yaml": "name: thinning\njob_type: thin-out\ncompare: whole\nvariants:\n"
                         "  - {name: whole, set: {}}\n  - {name: no_mlp, set: {mlp: false}}\n"}


def test_every_ablation_run_is_mirrored_to_wandb_with_its_experiment(tmp_path, tiny_corpus,
                                                                     monkeypatch):
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    definitions = tmp_path / "definitions"
    definitions.mkdir()
    for name, text in PAIR.items():
        (definitions / name).write_text(text)
    out = run_module("experiments.ablate", "--preset", "smoke", "--seeds", "1", "--data",
                     tiny_corpus, "--experiments", "narrowing", "thinning", "--results", tmp_path,
                     "--wandb", "offline", "--wandb-project", "ablate-test",
                     env={"NANOGPT_EXPERIMENTS": str(definitions)})
    assert out.returncode == 0, out.stderr
    doc = manifest.read(tmp_path / "smoke")
    assert len({r["run_id"] for e in doc["experiments"] for v in e["variants"]
                for r in v["runs"]}) == 3
    for experiment in doc["experiments"]:
        for variant in experiment["variants"]:
            run_dir = tmp_path / "smoke" / variant["runs"][0]["run_id"]
            (header,) = of_type(records(run_dir / "wandb"), "run")
            assert header["project"] == "ablate-test"
            # A run two experiments share is filed under the first, and tagged with both.
            assert experiment["name"] in header["tags"]
            assert header["run_group"] == {"narrowing": "narrowing",
                                           "thin-out": "thinning"}[header["job_type"]]
            metrics, _ = store.read_jsonl(run_dir / store.METRICS)
            assert history(records(run_dir / "wandb")) == metrics
    (shared,) = {v["runs"][0]["run_id"] for e in doc["experiments"] for v in e["variants"]
                 if v["name"] in
                 ("base", "whole")}
    (header,) = of_type(records(tmp_path / "smoke" / shared / "wandb"), "run")
    assert {"narrowing", "thinning"} <= set(header["tags"])


@pytest.mark.slow
@pytest.mark.reliability("fault",
                         "SIGKILL of `make ablate` at random moments, three times in a row")
def test_repeatedly_killed_ablation_completes_every_run_exactly_once(tmp_path, uninterrupted):
    """After 3 random kills the next invocation finishes; every planned run exists once, with exact numbers."""
    args, expected = uninterrupted
    rng, killed = random.Random(7), tmp_path / "killed"
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-m", "experiments.ablate", *args, "--results",
                                 str(killed)],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(2.0, 4.0))  # start-up is ~2 s; the runs take a few seconds in all
        workers = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # Even a worker still importing torch when its parent died must exit, not linger as an
        # orphan.
        _, alive = psutil.wait_procs(workers, timeout=30)
        assert not alive, "workers outlived their killed parent"
    again = run_module("experiments.ablate", *args, "--results", killed)
    assert again.returncode == 0, again.stderr
    planned = {r["run_id"] for e in manifest.read(killed / "smoke")["experiments"]
               for v in e["variants"]
               for r in v["runs"]}
    assert {p.name for p in (killed / "smoke").iterdir() if p.is_dir()} == planned
    for run_id in planned:
        records, problems = store.read_jsonl(killed / "smoke" / run_id / store.METRICS)
        steps = [r["step"] for r in records]
        assert not problems and steps == sorted(set(steps)), run_id  # each evaluation exactly once
    assert final_losses(killed / "smoke") == expected


def start_ablation(args: list[str], results: Path) -> subprocess.Popen:
    """The real CLI with Ctrl-C at its default, as in a terminal (a background job's ignored SIGINT
    survives exec)."""
    return subprocess.Popen([sys.executable, "-m", "experiments.ablate", *args, "--results",
                             str(results)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for_a_run_in_flight(folder: Path, proc: subprocess.Popen) -> None:
    """Until some run has evaluated at least once but not finished."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        for path in folder.glob("*/summary.json"):
            summary = store.run_status(path.parent)
            if summary == "running" and (path.parent / store.METRICS).exists():
                return
        time.sleep(0.01)
    raise AssertionError("no run came to be in flight")


@pytest.mark.slow
@pytest.mark.reliability("fault",
                         "SIGTERM, or Ctrl-C twice, to `make ablate` while runs are in flight")
@pytest.mark.parametrize("signals", [("SIGTERM",), ("SIGINT", "SIGINT")],
                         ids=["sigterm", "ctrl-c twice"])
def test_stopped_ablation_marks_its_runs_interrupted_and_resumes_to_the_same_numbers(tmp_path,
                                                                                     uninterrupted,
                                                                                     signals):
    """Exit 130, one `interrupted:` line, no traceback or leaked semaphore; runs in flight marked interrupted, workers
    gone; the rerun ends on the numbers of an uninterrupted ablation."""
    args, expected = uninterrupted
    stopped = tmp_path / "stopped"
    proc = start_ablation(args, stopped)
    wait_for_a_run_in_flight(stopped / "smoke", proc)
    workers = psutil.Process(proc.pid).children(recursive=True)
    for name in signals:
        proc.send_signal(getattr(signal, name))
        time.sleep(0.05)
    # to EOF: what the resource tracker prints as it exits comes too
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert [line for line in err.splitlines() if line.startswith("interrupted:")] == [
        "interrupted: finished runs are kept; run the same command again to train only what is "
        "missing"], err
    assert "Traceback" not in err and "leaked semaphore" not in err, err
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, "workers outlived the stopped ablation"
    summaries = [json.loads(p.read_text()) for p in (stopped / "smoke").glob("*/summary.json")]
    assert {(s["status"], s["reason"]) for s in summaries if s["status"] != "completed"} == {
        ("interrupted", "interrupted")}

    again = run_module("experiments.ablate", *args, "--results", stopped)
    assert again.returncode == 0, again.stderr
    assert final_losses(stopped / "smoke") == expected


def a_starting_worker(proc: subprocess.Popen) -> psutil.Process:
    """The ablation's first worker process, caught as it starts (before it has imported torch)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(psutil.NoSuchProcess):
            for child in psutil.Process(proc.pid).children():
                if "spawn_main" in " ".join(child.cmdline()):  # not the resource tracker
                    return child
        time.sleep(0.002)
    raise AssertionError("no worker process started")


@pytest.mark.slow
@pytest.mark.reliability("fault", "SIGTERM to an ablation worker before its handler is installed")
def test_a_sigterm_to_a_starting_worker_stops_the_ablation_like_any_sigterm(tmp_path,
                                                                            uninterrupted):
    """The worker holds the signal for its handler instead of dying (which broke the pool and left
    the other runs unmarked): exit 130, one `interrupted:` line, no dead-worker error, every run
    begun marked, the workers gone."""
    args, _ = uninterrupted
    proc = start_ablation(args, tmp_path)
    worker = a_starting_worker(proc)
    worker.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert [line for line in err.splitlines() if line.startswith(("interrupted:", "error:"))] == [
        "interrupted: finished runs are kept; run the same command again to train only what is "
        "missing"], err
    assert "Traceback" not in err, err
    _, alive = psutil.wait_procs([worker], timeout=10)
    assert not alive, "the worker outlived the stopped ablation"
    statuses = [store.run_status(p.parent) for p in tmp_path.glob("smoke/*/summary.json")]
    assert "running" not in statuses, statuses


@pytest.mark.slow
@pytest.mark.reliability("fault", "two `make ablate` at once on one results folder")
def test_two_ablations_on_one_results_folder_both_end_completed(tmp_path, uninterrupted):
    """The second waits for the runs the first trains and takes them as finished; both exit 0, every run is trained
    once, with the numbers of one uninterrupted ablation."""
    args, expected = uninterrupted
    first = start_ablation(args, tmp_path)
    wait_for_a_run_in_flight(tmp_path / "smoke", first)
    second = start_ablation(args, tmp_path)
    errs = [p.communicate(timeout=300)[1] for p in (first, second)]
    assert (first.returncode, second.returncode) == (0, 0), errs
    assert "(trained by another process)" in "".join(errs)
    assert final_losses(tmp_path / "smoke") == expected
    # each run trained once, start to end, by one of them
    for path in (tmp_path / "smoke").glob("*/summary.json"):
        assert "resumes" not in json.loads(path.read_text()), path


@pytest.mark.slow
@pytest.mark.reliability("fault", "SIGTERM to `make` itself during `make ablate`")
def test_sigterm_to_make_stops_the_ablation_under_it(tmp_path, tiny_corpus):
    """make's shell passes the SIGTERM on: the ablation marks its runs interrupted and exits 130, nothing is left
    running (a bare `sh -c` died and left the ablation training as an orphan); make itself then
    ends by the signal it got (143 in a shell), as docs/running.md's exit codes say."""
    make = subprocess.Popen(["make", "-s", "-C", str(ROOT), "-o", sys.executable,
                             f"PY={sys.executable}", "ablate", "PRESET=smoke", "SEEDS=1",
                             "EXPERIMENTS=ladder", "JOBS=2", "WANDB=off",
                             "SET=max_iters=400 eval_interval=40", f"DATA={tiny_corpus}",
                             f"RESULTS={tmp_path}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_a_run_in_flight(tmp_path / "smoke", make)
    below = psutil.Process(make.pid).children(recursive=True)
    make.send_signal(signal.SIGTERM)  # to make alone, as `kill PID` does
    _, err = make.communicate(timeout=120)
    assert ("interrupted: finished runs are kept" in err and "Error 130" in err and "Traceback"
            not in err), err
    assert make.returncode == -signal.SIGTERM
    _, alive = psutil.wait_procs(below, timeout=10)
    assert not alive, f"left running: {[p.cmdline() for p in alive]}"
    statuses = {json.loads(p.read_text())["status"]
                for p in (tmp_path / "smoke").glob("*/summary.json")}
    assert "interrupted" in statuses and "running" not in statuses, statuses
