"""Runs trained as an ensemble are the ordinary runs they would be alone: one id, one record, the
same numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments import ablate, store
from experiments.config import resolve
from experiments.ensemble import train_group
from experiments.grouping import MIN_GAIN, EnsembleMode, group
from experiments.machine import prepare
from experiments.runner import train_run
from experiments.wandb_mirror import WandbSettings
from tests.test_run_integrity import InterruptAt
from tests.wandb_records import history, records

# what depends on how fast, not on what, it trained
TIMING = {"tokens_per_sec", "elapsed_sec", "peak_mem_mb"}


def smoke(tiny_corpus: Path, seed: int, lr: float, **changes) -> object:
    overrides = {"data": str(tiny_corpus), "lr": lr, "max_iters": 30, "eval_interval": 10} | changes
    return prepare(resolve("smoke", "full", seed, overrides)).cfg


def record(results: Path, cfg) -> tuple[list[dict], dict, str, str]:
    """(evaluations without timings, summary, config.json, samples) of a run folder."""
    run = results / cfg.experiment / cfg.run_id
    metrics, problems = store.read_jsonl(run / store.METRICS)
    assert not problems
    return ([{k: v for k, v in m.items() if k not in TIMING} for m in metrics],
            json.loads((run / store.SUMMARY).read_text()), (run / store.CONFIG).read_text(),
            (run / store.SAMPLES).read_text())


@pytest.fixture(scope="module")
def grid(tmp_path_factory, tiny_corpus) -> tuple[list, Path, Path]:
    """Two seeds x two lrs of one model, trained once as an ensemble and once run by run."""
    cfgs = [smoke(tiny_corpus, seed, lr) for seed in (0, 1) for lr in (1e-2, 3e-3)]
    together, alone = tmp_path_factory.mktemp("ensemble"), tmp_path_factory.mktemp("alone")
    summaries = train_group(cfgs, together)
    assert [s["ensemble"]["member"] for s in summaries] == [0, 1, 2, 3]
    for cfg in cfgs:
        train_run(cfg, alone, quiet=True)
    return cfgs, together, alone


def test_a_member_is_recorded_as_the_run_it_is_alone(grid):
    """Same run id and folder, the same evaluations, config.json and samples; the summary differs
    only in timings and in saying it trained as member i of 4."""
    cfgs, together, alone = grid
    for i, cfg in enumerate(cfgs):
        metrics, summary, config, samples = record(together, cfg)
        metrics_alone, summary_alone, config_alone, samples_alone = record(alone, cfg)
        assert (metrics, config, samples) == (metrics_alone, config_alone, samples_alone)
        assert summary.pop("ensemble") == {"member": i, "size": 4, "runs": [c.run_id for c in cfgs]}
        moving = {"started_at", "finished_at", "wall_time_sec", "tokens_per_sec", "environment"}
        assert {k: v for k, v in summary.items() if k not in moving} == {
            k: v for k, v in summary_alone.items() if k not in moving}
        assert (together / cfg.experiment / cfg.run_id / store.BEST_CHECKPOINT).exists()


def test_the_cache_holds_across_modes(grid, tmp_path):
    """A run recorded alone is never retrained by an ensemble, nor one recorded by an ensemble
    alone."""
    cfgs, together, alone = grid
    assert all(s.get("skipped") for s in train_group(cfgs, alone))
    assert all(train_run(cfg, together, quiet=True).get("skipped") for cfg in cfgs)


@pytest.mark.reliability("fault",
                         "a run interrupted alone, then planned with fresh runs of its model")
def test_a_half_finished_lone_run_resumes_alone_and_the_rest_train_together(grid, tmp_path,
                                                                            tiny_corpus):
    cfgs, _, alone = grid
    with pytest.raises(KeyboardInterrupt):
        train_run(cfgs[0], tmp_path, quiet=True, callbacks=[InterruptAt(10)])
    summaries = train_group(cfgs, tmp_path)
    assert summaries[0]["resumed_from_step"] == 10 and "ensemble" not in summaries[0]
    assert [s["ensemble"]["size"] for s in summaries[1:]] == [3, 3, 3]
    for cfg in cfgs:
        assert record(tmp_path, cfg)[0] == record(alone, cfg)[0]


def test_every_member_is_mirrored_to_its_own_wandb_run(tmp_path, tiny_corpus, monkeypatch):
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    cfgs = [smoke(tiny_corpus, seed, 1e-2, max_iters=20) for seed in (0, 1)]
    train_group(cfgs, tmp_path, wandb=WandbSettings("offline", project="ensemble-tests"))
    ids = set()
    for cfg in cfgs:
        run = tmp_path / cfg.experiment / cfg.run_id
        ids.add(json.loads((run / "wandb" / "mirror.json").read_text())["id"])
        metrics, _ = store.read_jsonl(run / store.METRICS)
        assert [row["val_loss"] for row in history(records(run / "wandb"))] == [m["val_loss"]
                                                                                for m in metrics]
    assert len(ids) == 2


class Timer:
    """Measured step times: an ensemble costs its overhead once and its work per member, and each
    member past `fits` (the caches) `spill` times that work."""

    def __init__(self, overhead: float, work: float, fits: int = 64, spill: float = 1.0):
        self.overhead, self.work, self.fits, self.spill = overhead, work, fits, spill

    def capacity(self, runs):
        return 64

    def compute_bound(self, seconds):
        return seconds > 100

    def __call__(self, runs):
        n = len(runs)
        return self.overhead + self.work * (min(n, self.fits) + self.spill * max(n - self.fits, 0))


def test_grouping_puts_seeds_and_lrs_of_one_model_together_and_nothing_else(tiny_corpus):
    same = [smoke(tiny_corpus, seed, lr) for seed in (0, 1, 2) for lr in (1e-2, 3e-3)]
    other = [smoke(tiny_corpus, seed, 1e-2, n_layer=1) for seed in (0, 1)]
    fp16 = [smoke(tiny_corpus, 0, 1e-2, dtype="float16")]
    runs = same + other + fp16
    assert group(runs, EnsembleMode("off"), jobs=2).groups == tuple((cfg,) for cfg in runs)
    fixed = group(runs, EnsembleMode.parse("4"), jobs=2).groups
    # 6 in two groups of 3 (at most 4), 2 together, fp16 alone
    assert sorted(map(len, fixed)) == [1, 2, 3, 3]
    assert {frozenset(g) for g in fixed} >= {frozenset(other), frozenset(fp16)}

    overhead_bound = group(same, EnsembleMode("auto"), jobs=2, timer=Timer(overhead=9.0, work=1.0))
    # one ensemble per worker beats one of 6
    assert sorted(map(len, overhead_bound.groups)) == [3, 3]
    compute_bound = group(same, EnsembleMode("auto"), jobs=2, timer=Timer(overhead=0.05, work=1.0))
    assert all(len(g) == 1 for g in compute_bound.groups)  # 6 x 1.05 / 6.05 < MIN_GAIN: alone
    assert f"under {MIN_GAIN}x" in compute_bound.notes[0]


def test_auto_keeps_ensembles_below_the_size_where_a_member_starts_to_cost_more(tiny_corpus):
    """An ensemble of all 27 runs steps them slower per run than ensembles of 4: `auto` times the
    largest size too, instead of extrapolating from the small one."""
    runs = [smoke(tiny_corpus, seed, lr) for seed in range(9) for lr in (1e-2, 3e-3, 1e-3)]
    grouping = group(runs, EnsembleMode("auto"), jobs=1,
                     timer=Timer(overhead=4.0, work=1.0, fits=4, spill=3.0))
    assert sorted(map(len, grouping.groups)) == [3, 4, 4, 4, 4, 4, 4]
    assert "an ensemble of 4 steps its runs 2.50x" in grouping.notes[0]
    assert "(measured at 4, 27 members)" in grouping.notes[0]


@pytest.mark.reliability("bad input", "make ablate ENSEMBLE= neither auto, off nor a size")
def test_the_dry_run_shows_the_groups_and_a_bad_mode_is_one_line(tmp_path, tiny_corpus, capsys):
    args = ["--preset", "smoke", "--experiments", "ladder", "--seeds", "2", "--data",
            str(tiny_corpus), "--results", str(tmp_path), "--set", "max_iters=20"]
    assert ablate.main([*args, "--dry-run", "--ensemble", "2"]) == 0
    out = capsys.readouterr().out
    assert "ensembles (2): 9 of 18 runs; 0 runs alone" in out
    assert "ladder/full (2x16) x2: full-s0-" in out
    assert ablate.main([*args, "--ensemble", "many"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: --ensemble many: give auto, off, or the largest ensemble size")
    assert not tmp_path.joinpath("smoke").exists()
