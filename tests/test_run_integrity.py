"""Run folders are checked, never trusted: an edited config.json is refused by every reader (one line, exit 2,
nothing rewritten), and a damaged folder is either repaired into a complete record or refused, untouched."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from analysis.from_runstore import load_runstore
from experiments import ablate, run, sample, store
from experiments.config import resolve
from experiments.plan import plan
from experiments.runner import train_run
from experiments.settings import config_hash
from nanogpt.train import Callback

SETTINGS = {"max_iters": 4, "eval_interval": 2, "eval_iters": 2, "log_interval": 2}
SET = [f"--set={k}={v}" for k, v in SETTINGS.items()]


def config(tiny_corpus: Path):
    return resolve("smoke", "leave_one_out/full", 0, SETTINGS | {"data": str(tiny_corpus)})


class InterruptAt(Callback):
    """Ctrl-C right after the evaluation (and checkpoint) of `step`: a real interrupted run folder."""

    def __init__(self, step: int):
        self.step = step

    def on_eval(self, metrics: dict[str, Any], checkpoint_state) -> None:
        if metrics["step"] == self.step:
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_corpus) -> Path:
    """One finished smoke run (4 steps); returns its run folder."""
    results = tmp_path_factory.mktemp("finished")
    summary = train_run(config(tiny_corpus), results, quiet=True)
    return results / "adhoc" / summary["run_id"]


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory, tiny_corpus) -> Path:
    """The same run interrupted after its step-2 checkpoint."""
    results = tmp_path_factory.mktemp("interrupted")
    with pytest.raises(KeyboardInterrupt):
        train_run(config(tiny_corpus), results, quiet=True, callbacks=[InterruptAt(2)])
    [run_dir] = [p for p in (results / "adhoc").iterdir() if p.is_dir()]
    assert json.loads((run_dir / store.SUMMARY).read_text())["status"] == "interrupted"
    return run_dir


def copy_of(run_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "results" / "adhoc" / run_dir.name
    shutil.copytree(run_dir, copy)
    return copy


def contents(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir())}


def run_cli(run_dir: Path, tiny_corpus: Path, *extra: str) -> int:
    return run.main(["--preset", "smoke", "--variant", "leave_one_out/full", *SET, "--data", str(tiny_corpus),
                     "--results", str(run_dir.parents[1]), "--quiet", "--wandb", "off", *extra])


# --- class 4: an edited config.json ------------------------------------------------------------------------------
def edit(run_dir: Path, how: str) -> None:
    cfg = json.loads((run_dir / store.CONFIG).read_text())
    if how == "lr changed":
        cfg["lr"] = 0.5
    elif how == "rope on":
        cfg["rope"] = True
    else:  # "rehashed": a consistent config.json of another run, in this run's folder
        cfg["lr"] = 0.5
        edited = store.RunConfig.from_flat(cfg)
        cfg |= {"config_hash": edited.hash, "run_id": edited.run_id}
    (run_dir / store.CONFIG).write_text(json.dumps(cfg, indent=2))


EDITS = ["lr changed", "rope on", "rehashed"]
MISMATCH = "config.json does not match its run id (edited by hand?); delete the folder or restore the file"


def refused_in_one_line(capsys, run_dir: Path) -> None:
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line == f"error: {run_dir}: {MISMATCH}"


@pytest.mark.reliability("fault", "config.json edited by hand: cache hit, resume, plan, sample, analysis refuse it")
@pytest.mark.parametrize("how", EDITS)
def test_the_cache_hit_refuses_an_edited_config(finished, tmp_path, tiny_corpus, capsys, how):
    """Exit 2, one line naming the folder; nothing rewritten."""
    run_dir = copy_of(finished, tmp_path)
    edit(run_dir, how)
    before = contents(run_dir)
    assert run_cli(run_dir, tiny_corpus) == 2
    refused_in_one_line(capsys, run_dir)
    assert contents(run_dir) == before


@pytest.mark.reliability("fault", "config.json edited by hand: cache hit, resume, plan, sample, analysis refuse it")
@pytest.mark.parametrize("how", EDITS)
def test_resume_refuses_an_edited_config(interrupted, tmp_path, tiny_corpus, capsys, how):
    """Exit 2, one line naming the folder; nothing rewritten."""
    run_dir = copy_of(interrupted, tmp_path)
    edit(run_dir, how)
    before = contents(run_dir)
    assert run_cli(run_dir, tiny_corpus, "--resume") == 2
    refused_in_one_line(capsys, run_dir)
    assert contents(run_dir) == before


@pytest.mark.reliability("fault", "config.json edited by hand: cache hit, resume, plan, sample, analysis refuse it")
@pytest.mark.parametrize("how", EDITS)
def test_the_ablation_plan_refuses_an_edited_config(tmp_path, tiny_corpus, capsys, how):
    """make ablate counts a finished run as cached: an edited one is refused (exit 2, one line), not skipped."""
    results = tmp_path / "results"
    args = ["--preset", "smoke", "--experiments", "leave_one_out", "--seeds", "1", *SET, "--data", str(tiny_corpus),
            "--results", str(results), "--dry-run"]
    planned, _ = plan("smoke", [0], ["leave_one_out"], results, overrides=SETTINGS | {"data": str(tiny_corpus)})
    full = next(c for c in planned.runs if c.variant == "full")
    train_run(full, results, quiet=True)  # what make ablate trains for it
    assert ablate.main(args) == 0 and " 1 cached" in capsys.readouterr().out
    run_dir = results / "smoke" / full.run_id
    edit(run_dir, how)
    before = contents(run_dir)
    assert ablate.main(args) == 2
    refused_in_one_line(capsys, run_dir)
    assert contents(run_dir) == before


@pytest.mark.reliability("fault", "config.json edited by hand: cache hit, resume, plan, sample, analysis refuse it")
@pytest.mark.parametrize("how", EDITS)
def test_sample_refuses_an_edited_config(finished, tmp_path, capsys, how):
    """Exit 2, one line: the edited model is never built around the old weights."""
    run_dir = copy_of(finished, tmp_path)
    edit(run_dir, how)
    assert sample.main([str(run_dir), "--tokens", "5"]) == 2
    refused_in_one_line(capsys, run_dir)


@pytest.mark.reliability("fault", "config.json edited by hand: cache hit, resume, plan, sample, analysis refuse it")
@pytest.mark.parametrize("how", EDITS)
def test_analysis_reports_an_edited_config_as_a_problem(finished, tmp_path, how):
    """The run is not loaded; the problem names its folder."""
    run_dir = copy_of(finished, tmp_path)
    assert len(load_runstore(run_dir.parents[1], "adhoc").runs) == 1
    edit(run_dir, how)
    loaded = load_runstore(run_dir.parents[1], "adhoc")
    assert len(loaded.runs) == 0
    assert loaded.problems == [f"{run_dir}: {MISMATCH}"]


# --- class 5: a damaged run folder, repaired or refused -------------------------------------------------------------
def damage(run_dir: Path, name: str, how: str) -> None:
    if how == "deleted":
        (run_dir / name).unlink()
    else:
        (run_dir / name).write_bytes(b"\x00{not what it was")


# (state, file) -> the outcome: "repaired" (a complete record), "kept" (a finished run stays as recorded,
# its folder untouched) or "refused" (one line, the folder untouched)
OUTCOMES = {
    ("finished", store.SUMMARY): "repaired", ("finished", store.CONFIG): "refused",
    ("finished", store.METRICS): "kept", ("finished", store.CHECKPOINT): "kept",
    ("interrupted", store.SUMMARY): "repaired", ("interrupted", store.CONFIG): "refused",
    ("interrupted", store.METRICS): "refused", ("interrupted", store.CHECKPOINT): "refused",
}


@pytest.mark.reliability("fault", "summary, config, metrics or checkpoint deleted or corrupted, then --resume")
@pytest.mark.parametrize("how", ["deleted", "corrupted"])
@pytest.mark.parametrize(("state", "name"), list(OUTCOMES), ids=[f"{s}-{n}" for s, n in OUTCOMES])
def test_a_damaged_run_is_repaired_completely_or_refused_untouched(finished, interrupted, tmp_path, tiny_corpus,
                                                                 capsys, state, name, how):
    """A complete summary (every key of a fresh run, same identity and evaluations), or one line and the same
    bytes: never a half-record marked completed."""
    fresh = json.loads((finished / store.SUMMARY).read_text())
    run_dir = copy_of(finished if state == "finished" else interrupted, tmp_path)
    damage(run_dir, name, how)
    before = contents(run_dir)
    code = run_cli(run_dir, tiny_corpus, "--resume")
    err = capsys.readouterr().err.strip().splitlines()
    outcome = OUTCOMES[(state, name)]
    if outcome == "refused":
        assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and str(run_dir) in err[0], err
        assert any(fix in err[0] for fix in ("--force", "delete", "restore")), err
        assert contents(run_dir) == before
        return
    assert code == 0, err
    summary = json.loads((run_dir / store.SUMMARY).read_text())
    assert fresh.keys() <= summary.keys()
    for key in ("run_id", "config_hash", "experiment", "preset", "variant", "seed", "status", "evals", "step",
                "params", "flops_per_token", "data_sha256", "initial_val_loss", "final_val_loss"):
        assert summary[key] == fresh[key], key
    if outcome == "kept":
        assert contents(run_dir) == before
    else:
        assert "rebuilt" in summary and summary["resumed_from_step"] == (4 if state == "finished" else 2)


@pytest.mark.reliability("fault", "summary, config, metrics or checkpoint deleted or corrupted, then --resume")
@pytest.mark.parametrize("state", ["finished", "interrupted"])
def test_a_half_record_marked_completed_is_rebuilt_on_resume(finished, interrupted, tmp_path, tiny_corpus, capsys,
                                                             state):
    """What the old --resume left (status completed, no run id, hash, variant, seed or environment): not a cache
    hit; without --resume one line and untouched, with --resume a complete summary."""
    fresh = json.loads((finished / store.SUMMARY).read_text())
    run_dir = copy_of(finished if state == "finished" else interrupted, tmp_path)
    (run_dir / store.SUMMARY).write_text(json.dumps({"status": "completed", "reason": None, "final_val_loss": 1.0}))
    before = contents(run_dir)
    assert run_cli(run_dir, tiny_corpus) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {run_dir} holds an unfinished run") and "--resume" in line
    assert contents(run_dir) == before
    assert run_cli(run_dir, tiny_corpus, "--resume") == 0
    summary = json.loads((run_dir / store.SUMMARY).read_text())
    assert fresh.keys() <= summary.keys() and "rebuilt" in summary
    assert {k: summary[k] for k in ("run_id", "config_hash", "variant", "seed", "final_val_loss", "evals")} == \
        {k: fresh[k] for k in ("run_id", "config_hash", "variant", "seed", "final_val_loss", "evals")}


def test_a_folder_recorded_before_the_canonical_form_is_still_read(finished, tmp_path):
    """Its config.json carries the hash of its settings as spelled (a constant lr with warmup_iters 7, say): true
    then, so analysis reads it; the same config trains today under its canonical id."""
    cfg = json.loads((finished / store.CONFIG).read_text()) | {"warmup_iters": 7}
    as_spelled = config_hash(store.RunConfig.from_flat(cfg).flat(), as_spelled=True)
    run_id = f"{cfg['variant']}-s{cfg['seed']}-{as_spelled[:8]}"
    old = tmp_path / "results" / "adhoc" / run_id
    shutil.copytree(finished, old)
    (old / store.CONFIG).write_text(json.dumps(cfg | {"config_hash": as_spelled, "run_id": run_id}))
    loaded = load_runstore(tmp_path / "results", "adhoc")
    assert loaded.problems == [] and loaded.runs["run_id"].tolist() == [run_id]
    assert store.RunConfig.from_flat(cfg).run_id == finished.name != run_id
