"""The run store: one self-describing folder per run, written append-only or atomically.

    <root>/<experiment>/<run_id>/
        config.json     resolved config + config_hash (atomic)
        vocab.json      the tokenizer, so samples decode later (atomic)
        metrics.jsonl   one line per evaluation, flushed and fsynced (append-only)
        summary.json    status, losses, params, FLOPs, environment (atomic; 'running' until the end)
        samples.txt     generated text (atomic)
        ckpt.pt         model + optimizer + RNG state at the last evaluation (atomic)
        best.pt         the same at the evaluation of the lowest val loss so far (atomic; often
            ckpt.pt's inode)

Every reader reads a folder through `read_run`, which checks its files against each other
(`check_run`). This module does not import torch, so analysis on a laptop without torch reads and
checks runs too: experiments.settings hashes a config without it, and a checkpoint's step is in its
zip comment (`write_checkpoint`).
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import math
import os
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# torch-free: config.json is checked against its id
from experiments.settings import RunConfig, config_hash

CONFIG, VOCAB, METRICS, SUMMARY, SAMPLES, CHECKPOINT, BEST_CHECKPOINT = (
    "config.json", "vocab.json", "metrics.jsonl", "summary.json", "samples.txt", "ckpt.pt",
    "best.pt"
)
FORMAT = 1  # run-folder layout version, written into config.json; bump when the layout changes
_UMASK = os.umask(0)
os.umask(_UMASK)


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write to a temp file in the same folder, fsync, then rename over `path`: all or nothing."""
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual file mode
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:  # say which file could not be written (a failed write names no file)
        Path(tmp).unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror, str(path)) from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def link_atomic(source: Path, path: Path) -> None:
    """Make `path` name the file `source` names (a hard link, renamed into place: all or nothing).

    Two names of one checkpoint then cost one write. Where hard links are refused (some network or
    FUSE file systems), `source` is copied instead.
    """
    tmp = path.parent / f".{path.name}.{os.getpid()}.link"
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        write_atomic(path, source.read_bytes())
        return
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2, allow_nan=True) + "\n")


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Records and problems. A torn last line (killed mid-write) is dropped and reported."""
    records, problems = [], []
    if not path.exists():
        return records, problems
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not an object")
            records.append(record)
        except ValueError:
            where = ("torn last line (run killed while writing)" if i >= len(lines) - 1
                     else "malformed line")
            problems.append(f"{path}:{i}: {where}, skipped")
    return records, problems


def remove_partial_writes(run_dir: Path) -> list[Path]:
    """Delete the temp files of atomic writes cut short by a kill (`.<name>.<random>`); returns
    them."""
    partial = [p for p in run_dir.glob(".*") if p.is_file()]
    for p in partial:
        p.unlink()
    return partial


class RunFolderError(ValueError):
    """A run folder that cannot be read (damaged, or from another format); the message names it and
    the fix."""


class RunBusyError(RuntimeError):
    """Another live process is training this run."""


def lock_path(run_dir: Path) -> Path:
    return run_dir.parent / f".{run_dir.name}.lock"


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on one run while training it.

    An flock on `.<run_id>.lock` beside the run folder: the kernel drops it when its holder dies,
    even by SIGKILL, so a crashed run never blocks the next attempt, and two workers (parallel
    ablations, sweep workers) can never write one run folder at once.
    """
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path(run_dir), os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunBusyError(f"{run_dir} is being trained by another process; wait for it or "
                               "stop it") from None
        yield
    finally:
        os.close(fd)


def lock_held(run_dir: Path) -> bool:
    """True while a live process holds `run_lock(run_dir)`: tells a running run from one that was
    killed."""
    try:
        fd = os.open(lock_path(run_dir), os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the shared lock we may have taken
    return False


def loss_summary(metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """Initial, final and best losses, wall time and throughput from a run's evaluations (in step
    order).

    The recorder writes these into summary.json; analysis computes them the same way for runs read
    from W&B or Optuna, or still running.
    """
    if not metrics:
        return {"evals": 0}
    first, last = metrics[0], metrics[-1]
    finite = [m for m in metrics if isinstance(m.get("val_loss"), int | float)
              and math.isfinite(m["val_loss"])]
    best = min(finite, key=lambda m: m["val_loss"]) if finite else last
    rates = [m["tokens_per_sec"] for m in metrics if m.get("tokens_per_sec")]
    return {
        "evals": len(metrics), "step": last["step"], "initial_train_loss": first.get("train_loss"),
        "initial_val_loss": first.get("val_loss"), "final_train_loss": last.get("train_loss"),
        "final_val_loss": last.get("val_loss"), "best_val_loss": best.get("val_loss"),
        "best_val_step": best["step"], "tokens": last.get("tokens"),
        "wall_time_sec": last.get("elapsed_sec"),
        "tokens_per_sec": sum(rates) / len(rates) if rates else None,
    }


# What names a run: config.json's values of these, which its summary.json repeats.
IDENTITY = ("run_id", "config_hash", "experiment", "preset", "variant", "seed")
RUNNING = "running"  # while its run trains, or after a kill (nothing marked it otherwise)
FINISHED = ("completed", "diverged")  # ended for good: nothing left to train (a cache hit)
STATUSES = (*FINISHED, "failed", "pruned", "interrupted", RUNNING)  # what a summary.json can say
# No summary says it: a reader's verdict on a folder whose files disagree (`check_run`).
DAMAGED = "damaged"
ENDED_AT_LAST_EVALUATION = (*FINISHED, "pruned")  # ckpt.pt holds their last evaluation, for good


def identity(config: dict[str, Any]) -> dict[str, Any]:
    """The values that name a run, from its config.json (or a config's settings, hash and id)."""
    return {k: config.get(k) for k in IDENTITY}


def evaluation_steps(config: dict[str, Any], up_to: int) -> list[int]:
    """The steps a run of `config` (config.json's settings) evaluates at, up to `up_to`: every
    eval_interval and the last step (nanogpt.train)."""
    interval, last = config["eval_interval"], config["max_iters"]
    steps = list(range(0, min(up_to, last) + 1, interval))
    return steps + [last] if last <= up_to and last % interval else steps


@dataclass(frozen=True)
class Damage:
    """Files of one run folder that disagree: the file that is wrong, how, and the repair another
    file proves (None: no file holds what is lost)."""

    path: Path
    problem: str
    repair: str | None = None

    def __str__(self) -> str:
        if self.repair:
            fix = f"--resume repairs it ({self.repair}; make ablate resumes too)"
        else:
            fix = ("no other file holds what is lost: delete the run folder (or pass --force) to "
                   "retrain the run")
        return f"{self.path}: {self.problem}; {fix}"


REBUILT = f"{SUMMARY} is rebuilt from {METRICS}, {CONFIG} and {CHECKPOINT}"


def check_run(path: Path, config: dict[str, Any], summary: dict[str, Any] | None,
              metrics: list[dict[str, Any]], held: dict[str, int]) -> Damage | None:
    """The first disagreement among a run folder's files, or None where they agree.

    Checked in the order the files are trusted: config.json (`read_config` checks it against the
    run id); metrics.jsonl, append-only, the evaluations as they happened (a checkpoint is written
    right after its evaluation's row, so a step it holds is recorded); summary.json, derived from
    them when the run ends (so one that disagrees with complete evaluations is rebuilt from them);
    then the checkpoints of a run that ended. `held`: the step each checkpoint holds
    (`checkpoint_steps`, or what a reader that loaded one knows). Fields a summary has beyond these
    (an ensemble member's, say) are left alone.
    """
    steps = [m.get("step") for m in metrics]
    last = steps[-1] if steps and isinstance(steps[-1], int) else -1
    expected = evaluation_steps(config, last)
    if steps != expected:
        missing = sorted(set(expected) - set(steps))
        return Damage(path / METRICS, f"lacks the evaluations at steps {_steps(missing)}" if missing
                      else "records evaluations twice, out of order or without a step")
    status, recorded_step = (summary or {}).get("status"), (summary or {}).get("step")
    claims = dict(held)
    if status not in (RUNNING, None) and isinstance(recorded_step, int):  # else not written yet
        claims = {SUMMARY: recorded_step, **claims}
    reached = max(claims.values(), default=last)
    if reached > last:
        who = next(name for name, step in claims.items() if step == reached)
        lost = [s for s in evaluation_steps(config, reached) if s > last]
        restorable = lost == [held.get(CHECKPOINT)]  # the one row ckpt.pt keeps a copy of
        recorded = f"ends at step {last}" if steps else "holds no evaluation"
        repair = f"{CHECKPOINT} holds the evaluation of step {reached}" if restorable else None
        return Damage(path / METRICS, f"{recorded}, but {who} records step {reached}", repair)
    if summary is None:
        return Damage(path / SUMMARY, "missing or unreadable", REBUILT)
    named = identity(config)
    wrong = next((k for k, v in named.items() if summary.get(k) != v), None)
    if wrong:
        return Damage(path / SUMMARY, f"lacks the run's {wrong}" if summary.get(wrong) is None else
                      f"names another run ({wrong} {summary[wrong]!r}, config.json "
                      f"{named[wrong]!r})", REBUILT)
    if status not in STATUSES:
        return Damage(path / SUMMARY, f"status {status!r} is none a run records", REBUILT)
    if status == RUNNING:  # its losses are written when it ends
        return None
    if status == "completed" and last != config["max_iters"]:
        return Damage(path / SUMMARY, f"says completed, but {METRICS} ends at step {last} of "
                      f"{config['max_iters']}", REBUILT)
    computed = loss_summary(metrics)  # a summary recorded before one of these existed lacks it
    differ = next((k for k, v in computed.items() if k in summary and not _same(summary[k], v)),
                  None)
    if differ:
        return Damage(path / SUMMARY, f"says {differ} {summary[differ]!r}, but {METRICS} gives "
                      f"{computed[differ]!r}", REBUILT)
    if status in ENDED_AT_LAST_EVALUATION:
        final = {CHECKPOINT: ("last", last), BEST_CHECKPOINT: ("best", computed["best_val_step"])}
        for name, step in held.items():
            which, wanted = final[name]
            if step != wanted:
                return Damage(path / name, f"holds step {step}, but the run's {which} evaluation "
                              f"is step {wanted}")
    return None


def checkpoint_steps(path: Path) -> dict[str, int]:
    """The step each checkpoint of a run folder holds, read without torch from the zip comment
    `write_checkpoint` gave it; one missing, unreadable or written without it is left out."""
    held = {}
    for name in (CHECKPOINT, BEST_CHECKPOINT):
        try:
            with zipfile.ZipFile(path / name) as archive:
                step = json.loads(archive.comment or b"{}").get("step")
        except (OSError, zipfile.BadZipFile, ValueError, AttributeError):
            continue
        if isinstance(step, int):
            held[name] = step
    return held


def write_checkpoint(path: Path, data: bytes, step: int) -> None:
    """A checkpoint (torch.save's bytes: a zip archive) written atomically, with its step in the
    archive's comment, so that readers without torch check it against its run (`check_run`)."""
    archive_bytes = io.BytesIO(data)
    # Append mode rewrites only the central directory, which torch.load reads as before.
    with zipfile.ZipFile(archive_bytes, "a") as archive:
        archive.comment = json.dumps({"step": step}).encode()
    write_atomic(path, archive_bytes.getvalue())


def _steps(steps: list[int]) -> str:
    shown = ", ".join(map(str, steps[:5]))
    return shown + (f" and {len(steps) - 5} more" if len(steps) > 5 else "")


def _same(recorded: Any, computed: Any) -> bool:
    """Equal as JSON keeps them; NaN (a diverged run's loss) equals NaN."""
    both_nan = all(isinstance(v, float) and math.isnan(v) for v in (recorded, computed))
    return both_nan or recorded == computed


@dataclass
class RunRecord:
    """One run folder as read: its config (checked against its id), its summary (empty where
    missing or unreadable), its evaluations, the lines that could not be read, and the first
    disagreement among its files."""

    path: Path
    config: dict[str, Any]
    summary: dict[str, Any]
    metrics: list[dict[str, Any]]
    problems: list[str] = field(default_factory=list)
    damage: Damage | None = None

    @property
    def status(self) -> str:
        """The summary's status, or `damaged` where the files disagree (never tabled)."""
        return DAMAGED if self.damage else self.summary["status"]

    @property
    def samples(self) -> str:
        path = self.path / SAMPLES
        return path.read_text(encoding="utf-8") if path.exists() else ""


def _read_json(path: Path) -> dict[str, Any]:
    obj = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    return obj


def read_config(path: Path) -> dict[str, Any]:
    """A run folder's config.json: readable, of this format, and hashing to the run id it carries
    and its folder is named by (so an edited file is never trusted); RunFolderError naming the
    folder and the fix otherwise."""
    try:
        config = _read_json(path / CONFIG)
    except (OSError, ValueError) as e:
        raise RunFolderError(f"{path / CONFIG}: unreadable ({e}); delete the run folder to retrain "
                             "it") from None
    if config.get("format") != FORMAT:
        raise RunFolderError(
            f"{path}: run folder format {config.get('format', 'unknown')}, but this version reads "
            f"format {FORMAT}; retrain it with --force (or delete the folder)"
        )
    try:
        flat = RunConfig.from_flat(config).flat()
        # A folder recorded before the canonical form carries the hash of its config as spelled:
        # still true.
        hashes = (config_hash(flat), config_hash(flat, as_spelled=True))
        run_id = f"{flat['variant']}-s{flat['seed']}-{config.get('config_hash', '')[:8]}"
        matches = config.get("config_hash") in hashes and config.get("run_id") == run_id
    # settings missing or of the wrong shape
    except (KeyError, TypeError, ValueError, AttributeError):
        matches = False
    if not matches or path.name != config.get("run_id"):
        raise RunFolderError(f"{path}: config.json does not match its run id (edited by hand?); "
                             "delete the folder or restore the file")
    return config


def read_summary(path: Path) -> dict[str, Any] | None:
    """summary.json, or None where it is missing or unreadable (a repair can rebuild it from the
    rest)."""
    try:
        return _read_json(path / SUMMARY)
    except (OSError, ValueError):
        return None


def read_run(path: Path) -> RunRecord:
    """One run, its files checked against each other (`check_run`: a damaged run comes back with
    its `damage`); RunFolderError naming the file if config.json is unreadable, of another format,
    or does not hash to its run id (`read_config`: every reader of a run folder checks it here)."""
    config = read_config(path)
    # The file a run writes last is read first, so a run training now never looks damaged: a
    # checkpoint follows its evaluation's row, and the summary's losses follow every row.
    held = checkpoint_steps(path)
    summary = read_summary(path)
    metrics, problems = read_jsonl(path / METRICS)
    damage = check_run(path, config, summary, metrics, held)
    return RunRecord(path, config, summary or {}, metrics, problems, damage)


def run_status(path: Path) -> str | None:
    """A run folder's status from its summary; None if it has none (yet) or it cannot be read."""
    try:
        return _read_json(path / SUMMARY).get("status")
    except (OSError, ValueError):
        return None


class RunStore:
    """All runs under one results folder."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def experiment_dir(self, experiment: str) -> Path:
        path = (self.root / experiment).resolve()
        if path.parent != self.root.resolve():
            raise ValueError(f"experiment '{experiment}' would escape the results folder "
                             f"{self.root}")
        return path

    def run_dir(self, experiment: str, run_id: str) -> Path:
        path = (self.experiment_dir(experiment) / run_id).resolve()
        if path.parent != self.experiment_dir(experiment):
            raise ValueError(f"run '{experiment}/{run_id}' would escape the results folder "
                             f"{self.root}")
        return path

    def finished(self, experiment: str, run_id: str) -> bool:
        """True if the run ended for good (completed or diverged) and its files agree: nothing
        left to train. A damaged run is no cache hit: False where --resume repairs it (an ablation
        resumes every run), RunFolderError where no file can (as for an edited config)."""
        path = self.run_dir(experiment, run_id)
        if not (path / CONFIG).exists() and not (path / SUMMARY).exists():
            return False  # nothing recorded yet (or a folder a kill left before its first write)
        if lock_held(path):
            return False  # another process trains it now (its files are still being written)
        record = read_run(path)
        if record.damage and not record.damage.repair:
            raise RunFolderError(str(record.damage))
        return record.status in FINISHED

    def runs(self, experiment: str | None = None) -> Iterator[RunRecord | str]:
        """Every run (as a RunRecord) or, for a folder that cannot be read, a problem string."""
        base = self.root / experiment if experiment else self.root
        pattern = f"*/{CONFIG}" if experiment else f"*/*/{CONFIG}"
        for config_path in sorted(base.glob(pattern)):
            try:
                yield read_run(config_path.parent)
            except ValueError as e:
                yield str(e)
