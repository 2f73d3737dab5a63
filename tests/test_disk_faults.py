"""A full disk and a read-only results folder: one clear error, nothing presented as complete."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import store
from tests.conftest import ROOT, run_module

RUN = ("--preset", "smoke", "--quiet", "--wandb", "off")


def can_mount_privately() -> bool:
    probe = ["unshare", "-m", "--propagation", "private", "mount", "--bind", "-o", "ro", "/tmp",
             "/tmp"]
    return os.geteuid() == 0 and subprocess.run(probe, capture_output=True).returncode == 0


def run_read_only(folder: Path, corpus: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -m args --data CORPUS` unable to write into `folder`.

    As root: `folder` bind-mounted read-only in a private mount namespace (a real EROFS), or, where
    containers forbid that, the process dropped to `nobody` with `folder` at mode 555 (root ignores
    modes). As another user: mode 555.
    """
    command = [sys.executable, "-m", *args]
    if can_mount_privately():
        script = 'mount --bind -o ro "$0" "$0" && exec "$@"'
        command = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, str(folder),
                   *command]
    elif os.geteuid() == 0:
        # let `nobody` reach the folder and read the corpus
        for path in (*folder.parents, *corpus.parents):
            path.chmod(path.stat().st_mode | 0o005)
        corpus.chmod(0o644)
        command = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *command]
    folder.chmod(0o555)
    return subprocess.run([*command, "--data", str(corpus)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.reliability("fault", "read-only results folder")
@pytest.mark.parametrize("module", ["experiments.run", "experiments.ablate"])
def test_read_only_results_folder_is_one_clear_error(tmp_path, tiny_corpus, module):
    """Exit 1 naming the folder and 'Read-only'/'Permission'; nothing written."""
    results = tmp_path / "results"
    results.mkdir()
    extra = ("--seeds", "1", "--experiments",
             "ladder") if module == "experiments.ablate" else ("--quiet",)
    out = run_read_only(results, tiny_corpus, module, "--preset", "smoke", "--wandb", "off", *extra,
                        "--results", str(results))
    assert out.returncode == 1, out.stderr
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("error: cannot write") and str(results) in line
    assert "Read-only file system" in line or "Permission denied" in line
    assert not any(results.iterdir())


def limit_file_size(max_bytes: int):
    """A child process whose files cannot grow past max_bytes: writes fail as on a full disk."""
    def apply() -> None:
        # fail the write with EFBIG instead of killing
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))
    return apply


@pytest.mark.slow
@pytest.mark.reliability("fault", "disk full while writing a checkpoint")
def test_full_disk_mid_run_fails_cleanly_and_resumes(tmp_path, tiny_corpus):
    """Exit 1 naming ckpt.pt; summary not 'completed'; no temp files; --resume later completes the run."""
    args = [sys.executable, "-m", "experiments.run", *RUN, "--data", str(tiny_corpus), "--results",
            str(tmp_path)]
    # Config, vocab, summary and metrics are a few kB; a checkpoint with its optimizer state is
    # larger.
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300,
                         preexec_fn=limit_file_size(20_000))
    assert out.returncode == 1, out.stderr
    [line] = out.stderr.strip().splitlines()
    assert (line.startswith("error: cannot write") and store.CHECKPOINT in line and "--resume"
            in line)
    [run_dir] = [p for p in tmp_path.glob("adhoc/*") if p.is_dir()]
    summary = json.loads((run_dir / store.SUMMARY).read_text())
    assert summary["status"] == "failed" and "File too large" in summary["reason"]
    assert not (run_dir / store.CHECKPOINT).exists() and not list(run_dir.glob(".*"))

    resumed = run_module("experiments.run", *RUN, "--data", tiny_corpus, "--results", tmp_path,
                         "--resume")
    assert resumed.returncode == 0, resumed.stderr
    records, problems = store.read_jsonl(run_dir / store.METRICS)
    # restarted cleanly, no stale lines
    assert not problems and [r["step"] for r in records] == [0, 10, 20]
    assert json.loads((run_dir / store.SUMMARY).read_text())["status"] == "completed"
