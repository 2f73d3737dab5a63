"""Synthetic results for table math: a manifest as `make ablate` writes it and the runs frame that
`load_runstore` gives for it, with fixed numbers (nothing trained, no random generator)."""

from __future__ import annotations

import math
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


# lr_transfer_manifest: each variant's best lr index on TRANSFER_LRS at each width; SP's falls by
# two grid steps from the base width 64 to 128 (and rises one at 32), muP's stays within one.
TRANSFER_LRS = [0.001, 0.003, 0.01, 0.03]
TRANSFER_BEST = {("sp", 32): 3, ("sp", 64): 2, ("sp", 128): 0,
                 ("mup", 32): 2, ("mup", 64): 2, ("mup", 128): 1}


def lr_transfer_manifest(depths: tuple[int, ...] = ()) -> tuple[dict[str, Any], pd.DataFrame]:
    """A format-2 manifest of {sp, mup} x widths 32, 64, 128 (x `depths`, a depth axis if given) x
    TRANSFER_LRS x 2 seeds at the base width 64 (depth 2), where muP is SP (mup's runs there are
    sp's run ids), and its runs: final val is a parabola in the lr's grid index around TRANSFER_BEST
    at every depth. At the top lr of width 128 one seed diverged for each variant; muP's other seed
    there is the lowest loss of all, which the best-lr rule must not pick."""
    rows: list[dict[str, Any]] = []
    variants = []
    for variant, component, floor in (("sp", "SP", 2.0), ("mup", "muP", 1.95)):
        runs = []
        for width in (32, 64, 128):
            for depth in depths or (None,):
                at = {"width": width} | ({"depth": depth} if depth else {})
                for i, lr in enumerate(TRANSFER_LRS):
                    for seed in (0, 1):
                        owner = "sp" if width == 64 else variant
                        run_id = f"{owner}-s{seed}-w{width}-d{depth}-{i}"
                        runs.append({"seed": seed, **at, "lr": lr, "run_id": run_id})
                        if owner != variant:
                            continue  # muP at the base width: sp's run, in the frame once
                        status = "diverged" if (width, i, seed) == (128, 3, 1) else "completed"
                        distance = i - TRANSFER_BEST[variant, width]
                        val = (floor - 0.1 * math.log2(width) - 0.02 * (depth or 0)
                               + 0.06 * distance ** 2 + 0.01 * seed)
                        if (variant, width, i, seed) == ("mup", 128, 3, 0):
                            val = 1.0
                        rows.append(run(run_id, owner, seed, val, status,
                                        params=width * width * 30))
        variants.append({"name": variant, "adds": f"{variant} model", "component": component,
                         "runs": runs})
    axes = {"width": [32, 64, 128]} | ({"depth": list(depths)} if depths else {})
    manifest = {
        "format": 2, "name": "transfer", "preset": "modern", "seeds": [0, 1], "overrides": {},
        "data": "tinyshakespeare", "base_point": {"width": 64, "depth": 2, "lr": 0.003},
        "experiments": [{"name": "mup_transfer", "job_type": "lr-transfer",
                         "description": "SP against muP over an lr grid.", "compare": "sp",
                         "axes": axes | {"lr": TRANSFER_LRS}, "variants": variants}],
    }
    return manifest, pd.DataFrame(rows)
