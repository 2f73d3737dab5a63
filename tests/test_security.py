"""Loading never runs code from a file, and no name can write outside the results folder."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from experiments import store
from tests.conftest import ROOT, run_module


class Payload:
    """Unpickling this runs a command: what a malicious checkpoint would carry."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.reliability("security", "checkpoint carrying a pickled command")
def test_a_checkpoint_cannot_run_code(tmp_path, tiny_corpus):
    """torch.load(weights_only=True) refuses it: exit 2 naming the file, and the command never runs."""
    args = ("--preset", "smoke", "--quiet", "--data", tiny_corpus, "--results", tmp_path, "--wandb",
            "off")
    assert run_module("experiments.run", *args).returncode == 0
    [run_dir] = [p for p in tmp_path.glob("adhoc/*") if p.is_dir()]
    marker = tmp_path / "pwned"
    for name in (store.CHECKPOINT, store.BEST_CHECKPOINT):
        (run_dir / name).unlink()  # its own file: the two are often one hard-linked file
        torch.save({"model": Payload(str(marker)), "step": 0}, run_dir / name)

    for which, name in (("last", store.CHECKPOINT), ("best", store.BEST_CHECKPOINT)):
        sampled = run_module("experiments.sample", run_dir, "--checkpoint", which)
        assert sampled.returncode == 2 and str(run_dir / name) in sampled.stderr
    # --force deletes, never loads, the old checkpoint
    resumed = run_module("experiments.run", *args, "--force")
    assert resumed.returncode == 0
    assert not marker.exists()


@pytest.mark.reliability("security", "experiment definition with a YAML python tag")
def test_definitions_are_safe_loaded(tmp_path, tiny_corpus):
    """yaml.safe_load refuses the tag: exit 2 naming the file; the command never runs."""
    marker = tmp_path / "pwned"
    (tmp_path / "defs").mkdir()
    (tmp_path / "defs" / "evil.yaml").write_text(
        f'name: evil\nvariants:\n  - name: !!python/object/apply:os.system ["touch {marker}"]\n')
    out = run_module("experiments.run", "--list-variants",
                     env={"NANOGPT_EXPERIMENTS": str(tmp_path / "defs")})
    assert out.returncode == 2 and "evil.yaml" in out.stderr and "not valid YAML" in out.stderr
    assert not marker.exists()


@pytest.mark.reliability("security",
                         "run and experiment names that try to leave the results folder")
@pytest.mark.parametrize("name", ["../outside", "/etc", "a/../../b", ".hidden", ""])
def test_names_cannot_escape_the_results_folder(tmp_path, tiny_corpus, name):
    """Refused with exit 2 before anything is written, inside or outside the results folder."""
    out = run_module("experiments.run", "--preset", "smoke", "--data", tiny_corpus, "--experiment",
                     name, "--results", tmp_path / "results")
    assert out.returncode == 2 and "error:" in out.stderr
    assert not (tmp_path / "results").exists() and not (tmp_path / "outside").exists()
    with pytest.raises(ValueError, match="escape"):
        store.RunStore(tmp_path / "results").run_dir("ok", "../../x")


def test_no_api_key_reaches_logs_configs_or_reports(tmp_path, tiny_corpus):
    """A W&B key in the environment is never written into the run folder or printed."""
    key = "local-" + "f" * 40  # the shape of a W&B key; nothing listens for it here
    out = subprocess.run([sys.executable, "-m", "experiments.run", "--preset", "smoke", "--data",
                          str(tiny_corpus), "--results", str(tmp_path), "--wandb", "offline"],
                         cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "WANDB_API_KEY": key, "WANDB_MODE": "offline"})
    assert out.returncode == 0, out.stderr
    assert key not in out.stdout + out.stderr
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), f"the key leaked into {path}"
