"""Synthetic results for table math: a manifest as `make ablate` writes it and the runs frame that
`load_runstore` gives for it, with fixed numbers (nothing trained, no random generator)."""

from __future__ import annotations

from typing import Any

import pandas as pd

SEEDS = (0, 1, 2)
VOCAB = 65


def _noise(*keys: int) -> float:
    """A small fixed offset per (variant, point, seed): seeds differ, not all by the same amount."""
    mixed = sum((i + 3) * k * k + 5 * k for i, k in enumerate(keys)) + keys[0] * keys[-1] * 7
    return (mixed * 7 % 11 - 5) * 0.004


def run(run_id: str, variant: str, seed: int, final_val: float, status: str = "completed",
        params: int = 4000, **extra: Any) -> dict[str, Any]:
    """One row of the runs frame: the columns the tables read."""
    done = status == "completed"
    return {"run_id": run_id, "variant": variant, "seed": seed, "status": status,
            "initial_train_loss": 4.17 + 0.001 * seed, "initial_val_loss": 4.18 + 0.002 * seed,
            "final_train_loss": final_val - 0.05 if done else float("nan"),
            "final_val_loss": final_val if done else float("nan"),
            "params": params, "flops_per_token": 6 * params, "tokens_per_sec": 1000.0 + 10 * seed,
            "train_flops": 6 * params * 2560.0, "sample": f"sample of {run_id}\nsecond line",
            "config.vocab_size": VOCAB} | extra


def todays_manifest() -> tuple[dict[str, Any], pd.DataFrame]:
    """A format-1 manifest (a ladder, a leave-one-out with a same-model note, an LR axis) and its
    runs, with every status the tables count: diverged, failed, running, never started."""
    rows: list[dict[str, Any]] = []
    rungs = [("bigram", 2.50, 4225), ("attention", 2.40, 8640), ("mlp", 2.22, 16992),
             ("full", 2.06, 42592)]
    ladder = []
    for i, (name, val, params) in enumerate(rungs):
        runs = []
        for seed in SEEDS:
            run_id = f"{name}-s{seed}-{i:04d}aaaa"
            status = "diverged" if (name, seed) == ("mlp", 1) else "completed"
            if (name, seed) != ("attention", 2):  # never started: no row in the frame
                rows.append(run(run_id, name, seed, val + _noise(i, seed), status, params))
            runs.append({"seed": seed, "run_id": run_id})
        ladder.append({"name": name, "adds": f"adds {name}", "component": name, "runs": runs})
    full_runs = ladder[-1]["runs"]
    loo = [{"name": "full", "adds": "nothing removed", "component": "full", "runs": full_runs}]
    for i, (name, val) in enumerate([("no_mlp", 2.30), ("no_norm", 2.07)], start=5):
        runs = []
        for seed in SEEDS:
            run_id = f"{name}-s{seed}-{i:04d}bbbb"
            status = "failed" if (name, seed) == ("no_norm", 2) else "completed"
            rows.append(run(run_id, name, seed, val + _noise(i, seed), status, 42144))
            runs.append({"seed": seed, "run_id": run_id})
        loo.append({"name": name, "adds": f"without {name[3:]}", "component": name[3:],
                    "runs": runs})
    grid = []
    lrs = [0.001, 0.003, 0.01]
    for i, (name, vals) in enumerate([("base", (2.30, 2.10, 2.05)), ("wide", (2.25, 2.02, 2.60)),
                                      ("post", (2.40, 2.35, 3.30))], start=8):
        runs = []
        for lr, val in zip(lrs, vals, strict=True):
            for seed in SEEDS:
                run_id = f"{name}-s{seed}-{i:02d}{lrs.index(lr):02d}cccc"
                status = ("diverged" if (name, lr, seed) == ("post", 0.01, 0) else
                          "running" if (name, lr, seed) == ("wide", 0.01, 2) else "completed")
                val_seed = val + _noise(i, lrs.index(lr), seed)
                rows.append(run(run_id, name, seed, val_seed, status, 42592))
                runs.append({"seed": seed, "lr": lr, "run_id": run_id})
        grid.append({"name": name, "adds": f"{name} model", "component": name, "runs": runs})
    manifest = {
        "format": 1, "name": "synthetic", "preset": "smoke", "seeds": list(SEEDS), "overrides": {},
        "data": "tinyshakespeare",
        "experiments": [
            {"name": "rungs", "job_type": "ladder", "description": "Four rungs.",
             "compare": "previous", "variants": ladder},
            {"name": "loo", "job_type": "leave-one-out",
             "description": "One part removed at a time.", "compare": "full", "variants": loo,
             "same_models": {"no_init": "full"}},
            {"name": "grid", "job_type": "grid", "description": "Three models over three lrs.",
             "compare": "base", "lrs": lrs, "variants": grid},
        ],
    }
    return manifest, pd.DataFrame(rows)
