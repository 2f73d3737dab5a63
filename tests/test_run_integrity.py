"""Run folders are checked, never trusted: an edited config.json is refused by every reader (one
line, exit 2, nothing rewritten), and a damaged folder is either repaired into a complete record or
refused, untouched."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from analysis.from_runstore import load_runstore
from analysis.tables import status_counts
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
    """Ctrl-C right after the evaluation (and checkpoint) of `step`: a real interrupted run
    folder."""

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
    return run.main(["--preset", "smoke", "--variant", "leave_one_out/full", *SET, "--data",
                     str(tiny_corpus), "--results", str(run_dir.parents[1]), "--quiet", "--wandb",
                     "off", *extra])


# --- class 4: an edited config.json ---------------------------------------------------------------
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
MISMATCH = ("config.json does not match its run id (edited by hand?); delete the folder or restore "
            "the file")


def refused_in_one_line(capsys, run_dir: Path) -> None:
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line == f"error: {run_dir}: {MISMATCH}"


@pytest.mark.reliability(
    "fault", "config.json edited by hand: cache hit, resume, plan, sample, analysis refuse it")
@pytest.mark.parametrize("how", EDITS)
def test_the_cache_hit_refuses_an_edited_config(finished, tmp_path, tiny_corpus, capsys, how):
    """Exit 2, one line naming the folder; nothing rewritten."""
    run_dir = copy_of(finished, tmp_path)
    edit(run_dir, how)
    before = contents(run_dir)
    assert run_cli(run_dir, tiny_corpus) == 2
    refused_in_one_line(capsys, run_dir)
    assert contents(run_dir) == before


@pytest.mark.reliability(
    "fault", "config.json edited by hand: cache hit, resume, plan, sample, analysis refuse it")
@pytest.mark.parametrize("how", EDITS)
def test_resume_refuses_an_edited_config(interrupted, tmp_path, tiny_corpus, capsys, how):
    """Exit 2, one line naming the folder; nothing rewritten."""
    run_dir = copy_of(interrupted, tmp_path)
    edit(run_dir, how)
    before = contents(run_dir)
    assert run_cli(run_dir, tiny_corpus, "--resume") == 2
    refused_in_one_line(capsys, run_dir)
    assert contents(run_dir) == before


@pytest.mark.reliability(
    "fault", "config.json edited by hand: cache hit, resume, plan, sample, analysis refuse it")
@pytest.mark.parametrize("how", EDITS)
def test_the_ablation_plan_refuses_an_edited_config(tmp_path, tiny_corpus, capsys, how):
    """make ablate counts a finished run as cached: an edited one is refused (exit 2, one line), not skipped."""
    results = tmp_path / "results"
    args = ["--preset", "smoke", "--experiments", "leave_one_out", "--seeds", "1", *SET, "--data",
            str(tiny_corpus), "--results", str(results), "--dry-run"]
    planned, _ = plan("smoke", [0], ["leave_one_out"], results,
                      overrides=SETTINGS | {"data": str(tiny_corpus)})
    full = next(c for c in planned.runs if c.variant == "full")
    train_run(full, results, quiet=True)  # what make ablate trains for it
    assert ablate.main(args) == 0 and " 1 cached" in capsys.readouterr().out
    run_dir = results / "smoke" / full.run_id
    edit(run_dir, how)
    before = contents(run_dir)
    assert ablate.main(args) == 2
    refused_in_one_line(capsys, run_dir)
    assert contents(run_dir) == before


@pytest.mark.reliability(
    "fault", "config.json edited by hand: cache hit, resume, plan, sample, analysis refuse it")
@pytest.mark.parametrize("how", EDITS)
def test_sample_refuses_an_edited_config(finished, tmp_path, capsys, how):
    """Exit 2, one line: the edited model is never built around the old weights."""
    run_dir = copy_of(finished, tmp_path)
    edit(run_dir, how)
    assert sample.main([str(run_dir), "--tokens", "5"]) == 2
    refused_in_one_line(capsys, run_dir)


@pytest.mark.reliability(
    "fault", "config.json edited by hand: cache hit, resume, plan, sample, analysis refuse it")
@pytest.mark.parametrize("how", EDITS)
def test_analysis_reports_an_edited_config_as_a_problem(finished, tmp_path, how):
    """The run is not loaded; the problem names its folder."""
    run_dir = copy_of(finished, tmp_path)
    assert len(load_runstore(run_dir.parents[1], "adhoc").runs) == 1
    edit(run_dir, how)
    loaded = load_runstore(run_dir.parents[1], "adhoc")
    assert len(loaded.runs) == 0
    assert loaded.problems == [f"{run_dir}: {MISMATCH}"]


# --- class 5: a damaged run folder, repaired or refused -------------------------------------------
def damage(run_dir: Path, name: str, how: str) -> None:
    if how == "deleted":
        (run_dir / name).unlink()
    else:
        (run_dir / name).write_bytes(b"\x00{not what it was")


# (state, file) -> the outcome: "repaired" (a complete record), "kept" (a finished run stays as
# recorded, its folder untouched: its record needs no checkpoint) or "refused" (one line, the folder
# untouched)
OUTCOMES = {
    ("finished", store.SUMMARY): "repaired", ("finished", store.CONFIG): "refused",
    ("finished", store.METRICS): "refused", ("finished", store.CHECKPOINT): "kept",
    ("interrupted", store.SUMMARY): "repaired", ("interrupted", store.CONFIG): "refused",
    ("interrupted", store.METRICS): "refused", ("interrupted", store.CHECKPOINT): "refused",
}


@pytest.mark.reliability(
    "fault", "summary, config, metrics or checkpoint deleted or corrupted, then --resume")
@pytest.mark.parametrize("how", ["deleted", "corrupted"])
@pytest.mark.parametrize(("state", "name"), list(OUTCOMES), ids=[f"{s}-{n}" for s, n in OUTCOMES])
def test_a_damaged_run_is_repaired_completely_or_refused_untouched(finished, interrupted, tmp_path,
                                                                   tiny_corpus,
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
        assert (code == 2 and len(err) == 1 and err[0].startswith("error: ") and str(run_dir)
                in err[0]), err
        assert any(fix in err[0] for fix in ("--force", "delete", "restore")), err
        assert contents(run_dir) == before
        return
    assert code == 0, err
    summary = json.loads((run_dir / store.SUMMARY).read_text())
    assert fresh.keys() <= summary.keys()
    for key in ("run_id", "config_hash", "experiment", "preset", "variant", "seed", "status",
                "evals", "step", "params", "flops_per_token", "data_sha256", "initial_val_loss",
                "final_val_loss"):
        assert summary[key] == fresh[key], key
    if outcome == "kept":
        assert contents(run_dir) == before
    else:
        assert "repaired" in summary
        assert summary["resumed_from_step"] == (4 if state == "finished" else 2)


@pytest.mark.reliability(
    "fault", "summary, config, metrics or checkpoint deleted or corrupted, then --resume")
@pytest.mark.parametrize("state", ["finished", "interrupted"])
def test_a_half_record_marked_completed_is_rebuilt_on_resume(finished, interrupted, tmp_path,
                                                             tiny_corpus, capsys, state):
    """What the old --resume left (status completed, no run id, hash, variant, seed or environment): not a cache
    hit; without --resume one line and untouched, with --resume a complete summary."""
    fresh = json.loads((finished / store.SUMMARY).read_text())
    run_dir = copy_of(finished if state == "finished" else interrupted, tmp_path)
    (run_dir / store.SUMMARY).write_text(json.dumps({"status": "completed", "reason": None,
                                                     "final_val_loss": 1.0}))
    before = contents(run_dir)
    assert run_cli(run_dir, tiny_corpus) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {run_dir / store.SUMMARY}: lacks the run's run_id; "
                           "--resume repairs it")
    assert contents(run_dir) == before
    assert run_cli(run_dir, tiny_corpus, "--resume") == 0
    summary = json.loads((run_dir / store.SUMMARY).read_text())
    assert fresh.keys() <= summary.keys() and "repaired" in summary
    assert {k: summary[k] for k in ("run_id", "config_hash", "variant", "seed", "final_val_loss",
                                    "evals")} == \
        {k: fresh[k] for k in ("run_id", "config_hash", "variant", "seed", "final_val_loss",
                               "evals")}


def test_a_folder_recorded_before_the_canonical_form_is_still_read(finished, tmp_path):
    """Its config.json carries the hash of its settings as spelled (a constant lr with warmup_iters
    7, say): true then, so analysis reads it; the same config trains today under its canonical
    id."""
    cfg = json.loads((finished / store.CONFIG).read_text()) | {"warmup_iters": 7}
    as_spelled = config_hash(store.RunConfig.from_flat(cfg).flat(), as_spelled=True)
    run_id = f"{cfg['variant']}-s{cfg['seed']}-{as_spelled[:8]}"
    old = tmp_path / "results" / "adhoc" / run_id
    shutil.copytree(finished, old)
    (old / store.CONFIG).write_text(json.dumps(cfg | {"config_hash": as_spelled, "run_id": run_id}))
    summary = json.loads((old / store.SUMMARY).read_text())  # named as its version named it
    summary |= {"config_hash": as_spelled, "run_id": run_id}
    (old / store.SUMMARY).write_text(json.dumps(summary))
    loaded = load_runstore(tmp_path / "results", "adhoc")
    assert loaded.problems == [] and loaded.runs["run_id"].tolist() == [run_id]
    assert store.RunConfig.from_flat(cfg).run_id == finished.name != run_id


# --- files that disagree: every reader names the disagreement, lists the run as damaged ----------
def drop_last_evaluation(run_dir: Path) -> None:
    lines = (run_dir / store.METRICS).read_text().splitlines(keepends=True)
    (run_dir / store.METRICS).write_text("".join(lines[:-1]))


def drop_middle_evaluation(run_dir: Path) -> None:
    lines = (run_dir / store.METRICS).read_text().splitlines(keepends=True)
    (run_dir / store.METRICS).write_text(lines[0] + lines[2])


def edit_final_val_loss(run_dir: Path) -> None:
    summary = json.loads((run_dir / store.SUMMARY).read_text())
    (run_dir / store.SUMMARY).write_text(json.dumps(summary | {"final_val_loss": 0.5}))


def delete_summary(run_dir: Path) -> None:
    (run_dir / store.SUMMARY).unlink()


# how -> (the file named, the start of what is said of it, whether --resume can repair it)
DISAGREEMENTS = {
    "last evaluation removed": (store.METRICS, "ends at step 2, but summary.json records step 4",
                                True),
    "final_val_loss edited": (store.SUMMARY, "says final_val_loss 0.5, but metrics.jsonl gives",
                              True),
    "summary deleted": (store.SUMMARY, "missing or unreadable", True),
    "middle evaluation removed": (store.METRICS, "lacks the evaluations at steps 2", False),
    "ckpt.pt a step behind": (store.CHECKPOINT, "holds step 2, but the run's last evaluation is "
                              "step 4", False),
}
DISAGREE = {"last evaluation removed": drop_last_evaluation,
            "final_val_loss edited": edit_final_val_loss, "summary deleted": delete_summary,
            "middle evaluation removed": drop_middle_evaluation}
FILES_DISAGREE = "a finished run's files disagree (evaluations, summary, checkpoint)"


def disagreeing(finished: Path, interrupted: Path, tmp_path: Path, how: str) -> Path:
    run_dir = copy_of(finished, tmp_path)
    if how in DISAGREE:
        DISAGREE[how](run_dir)
    else:  # the same run's checkpoint, an evaluation earlier
        shutil.copy(interrupted / store.CHECKPOINT, run_dir / store.CHECKPOINT)
    return run_dir


@pytest.mark.reliability("fault", f"{FILES_DISAGREE}: every reader")
@pytest.mark.parametrize("how", list(DISAGREEMENTS))
def test_every_reader_names_the_disagreement_and_lists_the_run_damaged(finished, interrupted,
                                                                       tmp_path, tiny_corpus,
                                                                       capsys, how):
    """Analysis (status damaged, one problem line), the cache hit, make ablate's plan, sample and
    a rerun say one line naming the file; nothing tabled from whichever file came first, nothing
    rewritten."""
    run_dir = disagreeing(finished, interrupted, tmp_path, how)
    name, says, repairable = DISAGREEMENTS[how]
    before = contents(run_dir)
    loaded = load_runstore(run_dir.parents[1], "adhoc")
    [line] = loaded.problems
    assert line.startswith(f"{run_dir / name}: {says}")
    assert ("--resume repairs it" in line) == repairable
    assert ("delete the run folder" in line) != repairable
    assert loaded.runs["status"].tolist() == ["damaged"]
    assert status_counts(loaded.runs["status"]) == "1 damaged"
    runs = store.RunStore(run_dir.parents[1])
    if repairable:  # no cache hit: make ablate resumes, which repairs it
        assert runs.finished("adhoc", run_dir.name) is False
    else:
        with pytest.raises(store.RunFolderError, match=re.escape(line)):
            runs.finished("adhoc", run_dir.name)
    assert sample.main([str(run_dir), "--tokens", "5"]) == 2
    assert run_cli(run_dir, tiny_corpus) == 2
    assert capsys.readouterr().err.splitlines() == [f"error: {line}"] * 2
    assert contents(run_dir) == before


@pytest.mark.reliability("fault", f"{FILES_DISAGREE}: --resume")
@pytest.mark.parametrize("how", list(DISAGREEMENTS))
def test_resume_repairs_what_another_file_proves_and_refuses_the_rest(finished, interrupted,
                                                                      tmp_path, tiny_corpus,
                                                                      capsys, how):
    """Repaired: the record the run had (its evaluations byte for byte, the summary's numbers),
    one `repaired` line, and the summary says what; refused: one line, the folder untouched."""
    run_dir = disagreeing(finished, interrupted, tmp_path, how)
    name, says, repairable = DISAGREEMENTS[how]
    before = contents(run_dir)
    code = run_cli(run_dir, tiny_corpus, "--resume")
    err = capsys.readouterr().err.splitlines()
    if not repairable:
        assert code == 2 and len(err) == 1, err
        assert err[0].startswith(f"error: {run_dir / name}: {says}"), err
        assert contents(run_dir) == before
        return
    assert code == 0 and err[0].startswith(f"repaired {run_dir / name}: {says}"), err
    fresh = json.loads((finished / store.SUMMARY).read_text())
    summary = json.loads((run_dir / store.SUMMARY).read_text())
    assert (run_dir / store.METRICS).read_bytes() == (finished / store.METRICS).read_bytes()
    for key in ("status", "evals", "step", "initial_val_loss", "final_train_loss",
                "final_val_loss", "best_val_loss", "best_val_step", "tokens", "params", "run_id",
                "config_hash"):
        assert summary[key] == fresh[key], key
    assert summary["repaired"].startswith(f"{name}: {says}")
    assert store.read_run(run_dir).damage is None
    assert run_cli(run_dir, tiny_corpus, "--resume") == 0
    assert "already recorded" in capsys.readouterr().out


def test_a_summary_with_fields_of_its_own_is_no_disagreement(finished, tmp_path):
    """An ensemble member's summary carries `ensemble`: still a finished run, a cache hit."""
    run_dir = copy_of(finished, tmp_path)
    summary = json.loads((run_dir / store.SUMMARY).read_text())
    summary["ensemble"] = {"member": 1, "size": 3}
    (run_dir / store.SUMMARY).write_text(json.dumps(summary))
    assert store.read_run(run_dir).damage is None
    assert store.RunStore(run_dir.parents[1]).finished("adhoc", run_dir.name)


@pytest.mark.reliability("fault", f"{FILES_DISAGREE}: every reader")
def test_the_ablation_plan_refuses_a_run_no_file_can_repair(tmp_path, tiny_corpus, capsys):
    """make ablate's plan names it in one line and exits 2 before anything trains."""
    results = tmp_path / "results"
    args = ["--preset", "smoke", "--experiments", "leave_one_out", "--seeds", "1", *SET,
            "--data", str(tiny_corpus), "--results", str(results), "--dry-run"]
    overrides = SETTINGS | {"data": str(tiny_corpus)}
    planned, _ = plan("smoke", [0], ["leave_one_out"], results, overrides=overrides)
    full = next(c for c in planned.runs if c.variant == "full")
    train_run(full, results, quiet=True)
    run_dir = results / "smoke" / full.run_id
    drop_middle_evaluation(run_dir)
    assert ablate.main(args) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {run_dir / store.METRICS}: lacks the evaluations at steps 2")


@pytest.mark.reliability("bad input", "--resume (or --resume-or-start) with --force")
@pytest.mark.parametrize("resume", ["--resume", "--resume-or-start"])
def test_resume_and_force_together_are_refused_not_a_quiet_retrain(finished, tmp_path,
                                                                   tiny_corpus, capsys, resume):
    """One line, exit 2: the finished run is neither deleted nor retrained."""
    run_dir = copy_of(finished, tmp_path)
    before = contents(run_dir)
    assert run_cli(run_dir, tiny_corpus, resume, "--force") == 2
    assert capsys.readouterr().err == (
        f"error: {resume} and --force contradict each other: {resume} keeps the recorded run "
        "(continuing or repairing it), --force deletes it and trains it again; give one\n")
    assert contents(run_dir) == before
