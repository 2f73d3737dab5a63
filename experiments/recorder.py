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


# The libraries whose versions change a run's numbers or its record; requirements.lock pins them all.
RECORDED_LIBRARIES = ("numpy", "wandb", "optuna")


def environment(device: torch.device) -> dict[str, Any]:
    return {
        "torch": torch.__version__, **{name: _version(name) for name in RECORDED_LIBRARIES},
        "python": platform.python_version(), "platform": platform.platform(),
        "device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
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
    return {"run_id": cfg.run_id, "config_hash": cfg.hash, "experiment": cfg.experiment, "preset": cfg.preset,
            "variant": cfg.variant, "seed": cfg.seed}


def evaluation_steps(cfg: RunConfig, up_to: int) -> list[int]:
    """The steps the loop evaluates at, up to `up_to` (nanogpt.train: every eval_interval, and the last step)."""
    train = cfg.train
    return [s for s in range(up_to + 1) if s % train.eval_interval == 0 or s == train.max_iters]


class RunRecorder(Callback):
    """Appends each evaluation to metrics.jsonl, then checkpoints; keeps summary.json current.

    Besides the resume checkpoint (the last evaluation) it keeps `best.pt`, the checkpoint of the lowest
    validation loss so far: what one samples from and quotes once a run starts to overfit.
    """

    def __init__(self, run_dir: Path, cfg: RunConfig, summary: dict[str, Any], best_val: float = math.inf):
        self.run_dir, self.cfg, self.summary, self.best_val = run_dir, cfg, summary, best_val

    @classmethod
    def create(cls, run_dir: Path, cfg: RunConfig, vocab_json: str, static: dict[str, Any]) -> RunRecorder:
        """A fresh run folder: config, vocabulary and a 'running' summary."""
        run_dir.mkdir(parents=True, exist_ok=True)
        store.write_json(run_dir / store.CONFIG, {"format": store.FORMAT, **json.loads(cfg.to_json())})
        store.write_atomic(run_dir / store.VOCAB, vocab_json + "\n")
        store.write_atomic(run_dir / store.METRICS, "")  # no checkpoint = a fresh start: drop older lines
        summary = identity(cfg) | {"status": "running", "started_at": time.time(), **static}
        store.write_json(run_dir / store.SUMMARY, summary)
        return cls(run_dir, cfg, summary)

    @classmethod
    def reopen(cls, run_dir: Path, cfg: RunConfig, resumed_from: int, static: dict[str, Any]) -> RunRecorder:
        """An interrupted run folder: drop evaluations past the checkpoint, mark it running again.

        Checked before anything is written: metrics.jsonl must hold every evaluation up to the checkpoint's step
        (else the resumed run would end 'completed' with its early losses missing: refused). A missing or
        unreadable summary.json is rebuilt from the config and `static` (what a fresh run records) and says so.
        """
        metrics, _ = store.read_jsonl(run_dir / store.METRICS)
        recorded = [m.get("step") for m in metrics if isinstance(m.get("step"), int) and m["step"] <= resumed_from]
        if recorded != evaluation_steps(cfg, resumed_from):
            raise store.RunFolderError(
                f"{run_dir / store.METRICS}: the evaluations up to the checkpoint's step {resumed_from} are not all "
                "there (damaged or deleted), so a resumed run would be recorded without them; retrain it with --force")
        summary = store.read_summary(run_dir)
        if summary is None or not identity(cfg).keys() <= summary.keys():
            summary = identity(cfg) | {"started_at": (run_dir / store.CONFIG).stat().st_mtime, **static,
                                       "rebuilt": "summary.json was missing or unreadable; rebuilt on resume from "
                                       "config.json, metrics.jsonl and the checkpoint"}
        store.remove_partial_writes(run_dir)
        store.truncate_metrics(run_dir / store.METRICS, resumed_from)
        # How this attempt trains (alone, or as a member of an ensemble) replaces how the last one did.
        summary = {k: v for k, v in summary.items() if k != "ensemble"} | {
            "status": "running", "resumed_from_step": resumed_from, "resumes": summary.get("resumes", 0) + 1,
            **({"ensemble": static["ensemble"]} if "ensemble" in static else {})}
        store.write_json(run_dir / store.SUMMARY, summary)
        metrics, _ = store.read_jsonl(run_dir / store.METRICS)
        losses = store.loss_summary(metrics)
        best = losses.get("best_val_loss")
        if not (isinstance(best, float) and math.isfinite(best)):
            best = math.inf
        elif losses["best_val_step"] == resumed_from:  # killed between writing ckpt.pt and linking best.pt to it
            store.link_atomic(run_dir / store.CHECKPOINT, run_dir / store.BEST_CHECKPOINT)
        return cls(run_dir, cfg, summary, best)

    @staticmethod
    def check_fresh_start(run_dir: Path) -> None:
        """A folder without a checkpoint restarts from step 0; refused if that would drop recorded evaluations
        (a kill before the first checkpoint leaves at most step 0's, which the restart writes again)."""
        metrics, _ = store.read_jsonl(run_dir / store.METRICS)
        last = max((m["step"] for m in metrics if isinstance(m.get("step"), int)), default=0)
        if last > 0:
            raise store.RunFolderError(
                f"{run_dir}: {store.CHECKPOINT} is missing but {store.METRICS} records evaluations up to step {last}; "
                "restore the checkpoint, or retrain the run with --force")

    def on_eval(self, metrics: dict[str, Any], checkpoint_state) -> None:
        # Metrics first, checkpoint second: a kill in between leaves a line past the checkpoint,
        # which `reopen` drops and the resumed run writes again, identically.
        store.append_jsonl(self.run_dir / store.METRICS, metrics)
        store.write_atomic(self.run_dir / store.CHECKPOINT, checkpoint.serialize(checkpoint_state()))
        if metrics["val_loss"] < self.best_val:  # False for NaN: a diverged evaluation is never the best
            store.link_atomic(self.run_dir / store.CHECKPOINT, self.run_dir / store.BEST_CHECKPOINT)
            self.best_val = metrics["val_loss"]

    def finish(self, status: str, reason: str | None, samples: str | None = None, **extra: Any) -> dict[str, Any]:
        """The final summary: status, losses (best_val_step names best.pt's step) and `extra` fields."""
        if samples is not None:
            store.write_atomic(self.run_dir / store.SAMPLES, samples)
        metrics, _ = store.read_jsonl(self.run_dir / store.METRICS)
        self.summary |= {"status": status, "reason": reason, "finished_at": time.time(), **store.loss_summary(metrics),
                         **extra}
        store.write_json(self.run_dir / store.SUMMARY, self.summary)
        return self.summary
