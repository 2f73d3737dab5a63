"""The runner CLI: one run → one self-describing folder; bad input → one line, exit 2, nothing
written."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments.config import resolve
from experiments.run import main
from tests.conftest import ROOT, run_module

SMOKE = ("--preset", "smoke", "--quiet")


def run_folder(results: Path) -> Path:
    [run_dir] = [p for p in results.glob("*/*") if p.is_dir()]
    return run_dir


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_run_writes_a_self_describing_folder(tmp_path, tiny_corpus):
    out = run_module("experiments.run", *SMOKE, "--data", tiny_corpus, "--results", tmp_path,
                     "--seed", "3")
    assert out.returncode == 0, out.stderr
    run_dir = run_folder(tmp_path)
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "best.pt", "ckpt.pt", "config.json", "metrics.jsonl", "samples.txt", "summary.json",
                                                         "vocab.json"]
    config = json.loads((run_dir / "config.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert run_dir.name == config["run_id"] == f"full-s3-{config['config_hash'][:8]}"
    assert config["seed"] == 3 and config["n_layer"] == 2 and config["data"] == str(tiny_corpus)
    assert [m["step"] for m in metrics(run_dir)] == [0, 10, 20]
    assert summary["status"] == "completed" and summary["step"] == 20
    assert summary["final_val_loss"] == metrics(run_dir)[-1]["val_loss"]
    assert summary["skipped_steps"] == 0  # fp32: no gradient scaler, nothing skipped
    assert summary["initial_val_loss"] == metrics(run_dir)[0]["val_loss"]
    assert summary["params"] > 0 and summary["flops_per_token"] > 0
    assert {"torch", "device", "git_commit"} <= summary["environment"].keys()
    vocab = json.loads((run_dir / "vocab.json").read_text())["chars"]
    samples = (run_dir / "samples.txt").read_text()
    assert len(samples) == 500 and set(samples) <= set(vocab)

    printed = run_module("experiments.sample", run_dir, "--tokens", "40", "--prompt", "The")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.startswith("The") and len(printed.stdout.rstrip("\n")) >= 43


def test_rerunning_a_finished_run_trains_nothing(tmp_path, tiny_corpus):
    args = (*SMOKE, "--data", tiny_corpus, "--results", tmp_path)
    assert run_module("experiments.run", *args).returncode == 0
    before = (run_folder(tmp_path) / "metrics.jsonl").read_text()
    again = run_module("experiments.run", *args)
    assert again.returncode == 0 and "already recorded" in again.stdout
    assert (run_folder(tmp_path) / "metrics.jsonl").read_text() == before


def test_config_hash_is_stable_and_ignores_labels():
    a = resolve("smoke", "no_mlp", 1, {"lr": 3e-3})
    assert a.hash == resolve("smoke", "no_mlp", 1, {"lr": 3e-3}).hash
    assert a.hash == resolve("smoke", "no_mlp", 1, {"lr": 3e-3}, experiment="other", trial=4).hash
    assert a.hash != resolve("smoke", "no_mlp", 2, {"lr": 3e-3}).hash
    assert a.hash != resolve("smoke", "no_mlp", 1, {"lr": 1e-3}).hash


def test_w_and_b_style_flags_and_dry_run(tmp_path, tiny_corpus, capsys):
    code = main(["--preset=smoke", "--lr=0.003", "--n_layer=1", "--dry-run", "--data",
                 str(tiny_corpus), "--results", str(tmp_path)])
    assert code == 0
    config = json.loads(capsys.readouterr().out)
    assert config["lr"] == 0.003 and config["n_layer"] == 1
    assert not tmp_path.joinpath("adhoc").exists()


HUGE = ("--set", "n_embd=65536", "--set", "n_layer=64")
BAD_INPUTS = [
    (("--set", "n_embdd=32"), "unknown setting 'n_embdd'"),
    (("--set", "n_embd=15"), "divisible by n_head"),
    (("--set", "block_size=5000"), "longer than the data split"),
    (("--set", "lr=-0.1"), "lr must be"),
    (("--set", "max_iters=ten"), "max_iters=ten: expected a whole number"),
    (("--set", "batch_size=32.5"), "batch_size=32.5: expected a whole number"),
    (("--set", "lr=nan"), "lr=nan: expected a finite number"),
    (("--set", "layernorm=sideways"), "expected one of none, pre, post"),
    (("--set", "dropout=1.5"), "dropout must be in"),
    (("--set", "lr"), "expected KEY=VALUE"),
    (("--variant", "no_wings"), "unknown variant 'no_wings'"),
    (("--variant", "nothing/full"), "unknown experiment 'nothing'"),
    (("--preset", "huge"), "unknown preset 'huge'"),
    (("--seed", "-1"), "seed must be"),
    (("--seed", str(2**70)), "seed must be"),
    (("--experiment", "../../etc"), "no paths"),
    (("--set", "experiment=x", "--experiment", "y"), "experiment is given twice"),
    (("--set", "device=cpu", "--device", "cuda"), "device is given twice"),
    (("--set", "data=/tmp/other.txt"), "data is given twice"),
    (("--data", "/nonexistent/corpus.txt"), "does not exist"),
    (("--data", "/tmp"), "is not a file"),
    (("--device", "cuda:0"), "CUDA is not available"),  # a CPU test: conftest hides any GPU from it
    (("--device", "tpu"), "device 'tpu' is not a device name"),
    (HUGE, "needs about"),
    (("--lr=fast",), "lr=fast: expected a finite number"),
    (("--bogus",), "unrecognized argument '--bogus'"),
]


@pytest.mark.reliability(
    "bad input", "runner CLI: flags, settings, presets, variants, labels, paths, devices, sizes")
@pytest.mark.parametrize(("args", "message"), BAD_INPUTS, ids=[m for _, m in BAD_INPUTS])
def test_bad_input_gives_one_clear_line_exit_2_and_writes_nothing(tmp_path, tiny_corpus, capsys,
                                                                  args, message):
    """One `error:` line naming the problem, exit 2, no results folder."""
    data = () if "--data" in args else ("--data", str(tiny_corpus))
    code = main(["--preset", "smoke", *data, "--results", str(tmp_path / "results"), *args])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert (code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message
            in lines[0]), err
    assert not (tmp_path / "results").exists()


@pytest.mark.reliability("bad input", "runner CLI: a results path that is a file")
def test_a_results_path_that_is_a_file_is_refused_as_such(tmp_path, tiny_corpus, capsys):
    """Exit 2 and advice to give a folder, not to free disk space; the file is untouched."""
    results = tmp_path / "results"
    results.write_text("not a folder")
    assert main(["--preset", "smoke", "--data", str(tiny_corpus), "--results",
                 str(results / "sub")]) == 2
    err = capsys.readouterr().err
    assert (err.startswith("error: ") and "is a file, not a folder" in err and "disk space"
            not in err)
    assert results.read_text() == "not a folder"


def test_labels_given_once_through_set_take_effect(tmp_path, tiny_corpus, capsys):
    code = main(["--preset", "smoke", "--data", str(tiny_corpus), "--results", str(tmp_path),
                 "--dry-run", "--set", "device=cpu", "--set", "experiment=mine"])
    config = json.loads(capsys.readouterr().out)
    assert code == 0 and (config["device"], config["experiment"]) == ("cpu", "mine")


@pytest.mark.reliability("fault", "loss becomes non-finite (lr=1e4)")
def test_divergence_is_a_status_not_a_crash(tmp_path, tiny_corpus):
    """Run ends with status `diverged` and the reason; exit 1, no crash, no hang."""
    out = run_module("experiments.run", *SMOKE, "--data", tiny_corpus, "--results", tmp_path,
                     "--set", "lr=1e4", "--set", "max_iters=60")
    assert out.returncode == 1
    summary = json.loads((run_folder(tmp_path) / "summary.json").read_text())
    assert summary["status"] == "diverged" and "non-finite" in summary["reason"]


LONG = ("--set", "max_iters=1500", "--set", "eval_interval=100", "--set", "log_interval=50")


@pytest.mark.slow
@pytest.mark.reliability("fault", "SIGKILL of a run mid-training, then --resume")
def test_sigkill_then_resume_ends_on_the_numbers_of_an_uninterrupted_run(tmp_path, tiny_corpus):
    """Folder readable, resume without --resume refused, resumed losses equal an uninterrupted run exactly."""
    args = (*SMOKE, "--data", str(tiny_corpus), *LONG, "--seed", "7")
    whole = run_module("experiments.run", *args, "--results", tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr

    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "experiments.run", *args, "--results",
                             str(killed)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        lines = list(killed.glob("*/*/metrics.jsonl"))
        if lines and len(lines[0].read_text().splitlines()) >= 4:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_dir = run_folder(killed)
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "running"
    assert 4 <= len(metrics(run_dir)) < 16, "the kill should land mid-run"

    refused = run_module("experiments.run", *args, "--results", killed)
    assert refused.returncode == 2 and "--resume" in refused.stderr

    resumed = run_module("experiments.run", *args, "--results", killed, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    expected = [(m["step"], m["train_loss"], m["val_loss"])
                for m in metrics(run_folder(tmp_path / "whole"))]
    got = [(m["step"], m["train_loss"], m["val_loss"]) for m in metrics(run_dir)]
    assert got == expected  # exactly, not approximately: every RNG state was checkpointed
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["resumes"] == 1
    assert ((run_dir / "samples.txt").read_text()
            == (run_folder(tmp_path / "whole") / "samples.txt").read_text())


@pytest.mark.slow
@pytest.mark.reliability("fault",
                         "SIGTERM (kill, W&B agent early termination), or Ctrl-C twice, to one run")
@pytest.mark.parametrize("signals", [("SIGTERM",), ("SIGINT", "SIGINT")],
                         ids=["sigterm", "ctrl-c twice"])
def test_sigterm_ends_the_run_like_ctrl_c_and_it_resumes(tmp_path, tiny_corpus, signals):
    """Exit 130 with one `interrupted:` line and no traceback, summary 'interrupted', checkpoint kept; --resume
    completes it."""
    args = (*SMOKE, "--data", str(tiny_corpus), *LONG, "--results", str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-m", "experiments.run", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            # as in a terminal
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    while proc.poll() is None and not any(len(p.read_text().splitlines()) >= 3
                                          for p in tmp_path.glob("*/*/metrics.jsonl")):
        time.sleep(0.005)
    for name in signals:
        proc.send_signal(getattr(signal, name))
        time.sleep(0.01)
    _, err = proc.communicate()
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert [line for line in err.splitlines() if line.startswith("interrupted:")] == [
        "interrupted: the run folder keeps the last checkpoint; rerun with --resume"], err
    summary = json.loads((run_folder(tmp_path) / "summary.json").read_text())
    assert (summary["status"], summary["reason"]) == ("interrupted", "interrupted")
    resumed = run_module("experiments.run", *args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run_folder(tmp_path) / "summary.json").read_text())["status"] == "completed"
