"""The callback that writes a run's folder: the local record, and the source of truth."""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import torch

from experiments import PROJECT_ROOT, store
from experiments.config import RunConfig
from nanogpt import checkpoint, precision
from nanogpt.train import Callback


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=PROJECT_ROOT,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


# The libraries whose versions change a run's numbers or its record; requirements.lock pins them
# all.
RECORDED_LIBRARIES = ("numpy", "wandb", "optuna")


def environment(device: torch.device) -> dict[str, Any]:
    return {
        "torch": torch.__version__, **{name: _version(name) for name in RECORDED_LIBRARIES},
        "python": platform.python_version(), "platform": platform.platform(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
        else platform.processor() or platform.machine(), "cpu_isa": precision.cpu_isa(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(), "git_commit": git_commit(),
    }


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def identity(cfg: RunConfig) -> dict[str, Any]:
    """What names a run in its summary (a repaired summary has these too)."""
    return store.identity(cfg.flat() | {"run_id": cfg.run_id, "config_hash": cfg.hash})


class RunRecorder(Callback):
    """Appends each evaluation to metrics.jsonl, then checkpoints; keeps summary.json current.

    Besides the resume checkpoint (the last evaluation) it keeps `best.pt`, the checkpoint of the
    lowest validation loss so far: what one samples from and quotes once a run starts to overfit.
    """

    def __init__(self, run_dir: Path, cfg: RunConfig, summary: dict[str, Any],
                 best_val: float = math.inf, repaired: tuple[store.Damage, ...] = ()):
        self.run_dir, self.cfg, self.summary, self.best_val = run_dir, cfg, summary, best_val
        self.repaired = repaired  # what `reopen` found damaged and repaired

    @classmethod
    def create(cls, run_dir: Path, cfg: RunConfig, vocab_json: str,
               static: dict[str, Any]) -> RunRecorder:
        """A fresh run folder: config, vocabulary and a 'running' summary."""
        run_dir.mkdir(parents=True, exist_ok=True)
        store.write_json(run_dir / store.CONFIG,
                         {"format": store.FORMAT, **json.loads(cfg.to_json())})
        store.write_atomic(run_dir / store.VOCAB, vocab_json + "\n")
        # no checkpoint = a fresh start: drop older lines
        store.write_atomic(run_dir / store.METRICS, "")
        summary = identity(cfg) | {"status": store.RUNNING, "started_at": time.time(), **static}
        store.write_json(run_dir / store.SUMMARY, summary)
        return cls(run_dir, cfg, summary)

    @classmethod
    def reopen(cls, run_dir: Path, cfg: RunConfig, resumed_from: int, static: dict[str, Any],
               checkpoint_row: dict[str, Any] | None = None) -> RunRecorder:
        """A run folder to continue from its checkpoint at `resumed_from`: repaired where another
        file proves what it lacks, evaluations past the checkpoint dropped, marked running again.

        Checked before anything is written (`store.check_run`, with the checkpoint's step as
        loaded): metrics.jsonl must hold every evaluation up to that step, but for the checkpoint's
        own, which `checkpoint_row` (the row the checkpoint keeps) restores; anything else missing
        is refused (RunFolderError), as the resumed run would end 'completed' without it. A
        summary.json that is missing or disagrees with the evaluations is rebuilt from the config
        and `static` (what a fresh run records), and says what was repaired.
        """
        config = json.loads(cfg.to_json())  # config.json's content, which the runner checked
        summary = store.read_summary(run_dir)
        metrics, _ = store.read_jsonl(run_dir / store.METRICS)
        held = {store.CHECKPOINT: resumed_from}
        repaired = []
        damage = store.check_run(run_dir, config, summary, metrics, held)
        if damage and damage.path.name == store.METRICS and damage.repair and checkpoint_row:
            metrics.append(checkpoint_row)
            repaired.append(damage)
            damage = store.check_run(run_dir, config, summary, metrics, held)
        if damage and damage.path.name != store.SUMMARY:
            raise store.RunFolderError(str(damage))
        if damage:
            repaired.append(damage)
        if damage or summary is None:
            started = (run_dir / store.CONFIG).stat().st_mtime
            summary = identity(cfg) | {"started_at": started, **static}
        if repaired:
            summary["repaired"] = "; ".join(f"{d.path.name}: {d.problem} ({d.repair}, on resume)"
                                            for d in repaired)
        store.remove_partial_writes(run_dir)
        # The summary first: a reader coming between the writes sees a running run, not damage. How
        # this attempt trains (alone, or as a member of an ensemble) replaces how the last one did.
        summary = {k: v for k, v in summary.items() if k != "ensemble"} | {
            "status": store.RUNNING, "resumed_from_step": resumed_from,
            "resumes": summary.get("resumes", 0) + 1,
            **({"ensemble": static["ensemble"]} if "ensemble" in static else {})}
        store.write_json(run_dir / store.SUMMARY, summary)
        metrics = [m for m in metrics if m["step"] <= resumed_from]  # the run writes the rest
        store.write_atomic(run_dir / store.METRICS, "".join(json.dumps(m) + "\n" for m in metrics))
        losses = store.loss_summary(metrics)
        best = losses.get("best_val_loss")
        if not (isinstance(best, float) and math.isfinite(best)):
            best = math.inf
        elif losses["best_val_step"] == resumed_from:  # killed between writing ckpt.pt and best.pt
            store.link_atomic(run_dir / store.CHECKPOINT, run_dir / store.BEST_CHECKPOINT)
        return cls(run_dir, cfg, summary, best, tuple(repaired))

    @staticmethod
    def check_fresh_start(run_dir: Path) -> None:
        """A folder without a checkpoint restarts from step 0; refused if that would drop recorded
        evaluations (a kill before the first checkpoint leaves at most step 0's, which the restart
        writes again)."""
        metrics, _ = store.read_jsonl(run_dir / store.METRICS)
        last = max((m["step"] for m in metrics if isinstance(m.get("step"), int)), default=0)
        if last > 0:
            raise store.RunFolderError(
                f"{run_dir}: {store.CHECKPOINT} is missing but {store.METRICS} records evaluations "
                f"up to step {last}; restore the checkpoint, or retrain the run with --force")

    def on_eval(self, metrics: dict[str, Any], checkpoint_state) -> None:
        # Metrics first, checkpoint second: a kill in between leaves a line past the checkpoint,
        # which `reopen` drops and the resumed run writes again, identically.
        store.append_jsonl(self.run_dir / store.METRICS, metrics)
        state = checkpoint.serialize(checkpoint_state())
        store.write_checkpoint(self.run_dir / store.CHECKPOINT, state, metrics["step"])
        # False for NaN: a diverged evaluation is never the best
        if metrics["val_loss"] < self.best_val:
            store.link_atomic(self.run_dir / store.CHECKPOINT, self.run_dir / store.BEST_CHECKPOINT)
            self.best_val = metrics["val_loss"]

    def finish(self, status: str, reason: str | None, samples: str | None = None,
               **extra: Any) -> dict[str, Any]:
        """The final summary: status, losses (best_val_step names best.pt's step) and `extra`
        fields."""
        if samples is not None:
            store.write_atomic(self.run_dir / store.SAMPLES, samples)
        metrics, _ = store.read_jsonl(self.run_dir / store.METRICS)
        self.summary |= {"status": status, "reason": reason, "finished_at": time.time(),
                         **store.loss_summary(metrics), **extra}
        store.write_json(self.run_dir / store.SUMMARY, self.summary)
        return self.summary
