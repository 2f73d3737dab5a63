"""best.pt: the checkpoint of the lowest validation loss, kept beside the resume checkpoint and
written atomically."""

from __future__ import annotations

import contextlib
import math

import torch

from experiments import store
from experiments.config import resolve
from experiments.recorder import RunRecorder
from experiments.runner import train_run
from nanogpt import checkpoint


def state(step: int) -> dict:
    return {"step": step, "model": {"w": torch.full((2,), float(step))}}


def evaluate(recorder: RunRecorder, step: int, val_loss: float) -> None:
    recorder.on_eval({"step": step, "train_loss": val_loss, "val_loss": val_loss},
                     lambda: state(step))


def steps(run_dir) -> tuple[int, int]:
    """The steps of (best.pt, ckpt.pt)."""
    return (checkpoint.load(run_dir / store.BEST_CHECKPOINT)["step"],
            checkpoint.load(run_dir / store.CHECKPOINT)["step"])


def test_best_stays_at_the_lowest_val_loss_while_the_resume_checkpoint_moves_on(tmp_path):
    cfg = resolve("smoke")
    recorder = RunRecorder.create(tmp_path / "run", cfg, "{}", {})
    for step, val in ((0, 3.0), (10, 2.0), (20, 2.5), (30, math.nan)):
        evaluate(recorder, step, val)
        best_step = 10 if step >= 10 else 0
        assert steps(tmp_path / "run") == (best_step, step)  # NaN (diverged) is never the best
    summary = recorder.finish("diverged", "nan")
    assert summary["best_val_step"] == 10 and summary["best_val_loss"] == 2.0
    # no temp files left
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.startswith(".")]


def test_a_reopened_run_knows_its_best_so_far(tmp_path):
    """After a resume, a worse evaluation must not replace the best one recorded before the kill."""
    cfg = resolve("smoke")
    first = RunRecorder.create(tmp_path / "run", cfg, "{}", {})
    evaluate(first, 0, 3.0)
    evaluate(first, 10, 2.0)
    evaluate(first, 20, 2.2)
    reopened = RunRecorder.reopen(tmp_path / "run", cfg, resumed_from=20, static={})
    assert reopened.best_val == 2.0
    evaluate(reopened, 30, 2.1)
    assert steps(tmp_path / "run") == (10, 30)
    evaluate(reopened, 40, 1.5)
    assert steps(tmp_path / "run") == (40, 40)


def test_a_new_best_is_one_write_shared_by_both_names(tmp_path):
    cfg = resolve("smoke")
    recorder = RunRecorder.create(tmp_path / "run", cfg, "{}", {})
    evaluate(recorder, 0, 3.0)
    best, last = tmp_path / "run" / store.BEST_CHECKPOINT, tmp_path / "run" / store.CHECKPOINT
    assert best.stat().st_ino == last.stat().st_ino  # a hard link: no second copy on disk
    evaluate(recorder, 10, 4.0)
    assert best.stat().st_ino != last.stat().st_ino and steps(tmp_path / "run") == (0, 10)


def test_a_trained_run_keeps_best_pt_and_its_summary_names_the_step(tmp_path, tiny_corpus):
    cfg = resolve("smoke", overrides={"data": str(tiny_corpus)}, device="cpu")
    summary = train_run(cfg, tmp_path, quiet=True)
    [run_dir] = tmp_path.glob("*/*/")
    best = checkpoint.load(run_dir / store.BEST_CHECKPOINT)
    assert best["step"] == summary["best_val_step"]
    assert best["metrics"]["val_loss"] == summary["best_val_loss"]


def test_a_kill_between_the_two_writes_is_repaired_on_resume(tmp_path, monkeypatch):
    """ckpt.pt is written first: killed before best.pt is linked to it, the reopened run links
    it."""
    cfg = resolve("smoke")
    recorder = RunRecorder.create(tmp_path / "run", cfg, "{}", {})
    evaluate(recorder, 0, 3.0)

    def killed(*_):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(store, "link_atomic", killed)
        with contextlib.suppress(KeyboardInterrupt):
            evaluate(recorder, 10, 2.0)
    assert steps(tmp_path / "run") == (0, 10)
    reopened = RunRecorder.reopen(tmp_path / "run", cfg, resumed_from=10, static={})
    assert steps(tmp_path / "run") == (10, 10) and reopened.best_val == 2.0
