"""Mirror a run to Weights & Biases: config, one history row per evaluation, summary, samples.

The run folder is the source of truth and W&B a copy of it (W&B config = config.json, history =
metrics.jsonl, summary = summary.json). The mirror keeps its W&B files inside the run folder
(`<run_dir>/wandb/`) and its W&B identity beside them (`wandb/mirror.json`), so a resumed run
continues the same W&B run and first re-sends from metrics.jsonl whatever W&B does not hold yet.
mirror.json's `last_step` is the last row handed to W&B, and `closed` says its W&B run then ended
cleanly, so W&B holds every row up to it; after a kill, W&B's files (offline) or its server (online:
the run's starting step) say what it holds, since a killed wandb-core drops its last ~0.1 s.
Any W&B failure prints one warning and turns the mirror off; training never notices.
`wandb` is imported inside functions: with the mirror off, only torch is needed.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import tempfile
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments import store, wandb_files
from experiments.config import ConfigError, RunConfig
from nanogpt.train import Callback

MODES = ("auto", "online", "offline", "off")
# WANDB_MODE's values (those W&B's own Settings accept) -> what the mirror does with each.
ENV_MODES = {"online": "online", "offline": "offline", "disabled": "disabled", "dryrun": "offline",
             "run": "online", "shared": "online"}
DEFAULT_PROJECT = "nanogpt-ablations"
STATE = "mirror.json"
# A tiny run lasts seconds, so W&B's own defaults (90 s init, unbounded upload at finish) would
# dominate it when the network is down; W&B's environment variables still win.
INIT_TIMEOUT_S, FINISH_TIMEOUT_S = 30.0, 120.0
# Nothing per run beyond what we log: no system-stats sampler, no code/git/machine snapshot,
# no console capture, no launch job, no W&B console chatter.
# The members of an ensemble are W&B runs open at once in one process: each init creates a run of
# its own.
LEAN = dict(x_disable_stats=True, x_disable_meta=True, x_disable_machine_info=True, console="off",
            save_code=False, disable_code=True, disable_git=True, disable_job_creation=True,
            silent=True, reinit="create_new")
# wandb-core buffers the .wandb file for 15 s by default and drops the buffer when its parent is
# SIGKILLed: flush often, so a killed run's W&B file holds all but its last ~0.1 s (measured: no
# extra CPU in wandb-core).
FLUSH_INTERVAL_S = 0.1
OK_STATUSES = ("completed", "pruned")  # finished as intended; anything else ends with exit code 1


@dataclass(frozen=True)
class WandbSettings:
    """Where and how to mirror. mode: auto (online when logged in, else offline; WANDB_MODE wins),
    online, offline or off. project: None means $WANDB_PROJECT, else nanogpt-ablations.
    entity: None means $WANDB_ENTITY, else the user's default entity."""

    mode: str = "auto"
    project: str | None = None
    entity: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"W&B mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.mode != "off":
            # a bad WANDB_MODE is refused here, at the command line, not at a run's start
            env_mode()


def env_mode() -> str | None:
    """WANDB_MODE as 'online', 'offline', 'disabled', or None when unset; ConfigError for a value
    W&B does not know (which W&B itself would report as a failure to start, read as a connection
    problem)."""
    raw = os.environ.get("WANDB_MODE", "").strip()
    if not raw:
        return None
    if raw.lower() not in ENV_MODES:
        raise ConfigError(f"WANDB_MODE={raw!r} is not a W&B mode; set it to one of "
                          f"{', '.join(ENV_MODES)} or unset it (--wandb off turns the mirror off)")
    return ENV_MODES[raw.lower()]


class WandbFolderError(Exception):
    """A folder W&B writes in every run cannot be written; the message names it and the variable
    that moves it."""


def check_folders() -> None:
    """W&B's data folder (artifact staging) and cache folder (its service's log) are writable.

    Checked before anything of W&B starts: where it cannot write its log, wandb-core logs ~20 lines
    to stderr instead, and the run then fails at its finish anyway (an unusable HOME, say).
    """
    from wandb import env

    for var, folder in (("WANDB_DATA_DIR", env.get_data_dir()),
                        ("WANDB_CACHE_DIR", env.get_cache_dir())):
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=folder).close()
        except OSError as e:
            raise WandbFolderError(f"W&B cannot write its folder {folder} ({e.strerror or e}); set "
                                   f"{var} to a writable folder (or HOME to a usable "
                                   "home)") from None


def resolve_mode(mode: str) -> str | None:
    """'online', 'offline', or None (off). Auto asks WANDB_MODE, then whether an API key is
    configured. WandbFolderError where W&B would be on but cannot write its folders."""
    if mode == "off":
        return None
    wanted = env_mode()
    if mode == "auto" and wanted == "disabled":
        return None
    check_folders()
    if mode != "auto":
        return mode
    if wanted:
        return wanted
    import wandb

    wandb.setup(settings=wandb.Settings(**LEAN))  # silent, so login() asks the server nothing
    return "online" if wandb.login(prompt=False, verify=False) else "offline"


def held_step(wandb_dir: Path) -> int:
    """The last evaluation step W&B's offline files in `wandb_dir` hold, read back with W&B's own
    reader; -1 where none can be read (every row is then sent again: a repeat, never a gap)."""
    held = -1
    for log in sorted(wandb_dir.glob("offline-run-*/run-*.wandb")):
        with suppress(ValueError):
            steps = [r["history"]["item"].get("_step", -1) for r in wandb_files.records(log)
                     if r.get("type") == "history"]
            held = max([held, *steps])
    return held


def _timeout(env_var: str, default: float) -> float:
    return float(os.environ.get(env_var) or default)


class WandbMirror(Callback):
    """One run's W&B mirror. Created by `start` (off when settings is None or W&B fails to
    start)."""

    def __init__(self, run_dir: Path, cfg: RunConfig):
        self.run_dir, self.cfg = run_dir, cfg
        self.state_path = run_dir / "wandb" / STATE
        self.state: dict[str, Any] = {}
        self.run: Any = None  # the live wandb Run while the mirror is on

    @classmethod
    def start(cls, settings: WandbSettings | None, run_dir: Path, cfg: RunConfig) -> WandbMirror:
        mirror = cls(run_dir, cfg)
        if settings is not None:
            mirror._guard("start", mirror._start, settings)
        return mirror

    def on_eval(self, metrics: dict[str, Any], checkpoint_state) -> None:
        self._guard("log", self._log, metrics)

    def close(self, summary: dict[str, Any], samples: str | None = None) -> None:
        """Send what W&B is missing, the final summary and the samples; end the W&B run."""
        self._guard("finish", self._finish, summary, samples)

    def _start(self, settings: WandbSettings) -> None:
        mode = resolve_mode(settings.mode)
        if mode is None:
            return
        import wandb

        resuming = self.state_path.exists()
        if resuming:
            self.state = json.loads(self.state_path.read_text(encoding="utf-8"))
        else:
            # Our own id, kept in the run folder: `--force` (a fresh folder) gets a new W&B run, and
            # a kill during init still leaves the id for the resume.
            self.state = {"id": secrets.token_hex(6), "last_step": -1, "entity": settings.entity,
                          "project": (settings.project or os.environ.get("WANDB_PROJECT")
                                      or DEFAULT_PROJECT)}
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
        if resuming and not self.state.get("closed"):  # killed: W&B may lack what it was handed
            self.state["last_step"] = held_step(self.state_path.parent) if mode == "offline" else -1
        self.state["closed"] = False
        store.write_json(self.state_path, self.state)
        cfg = self.cfg
        self.run = wandb.init(
            id=self.state["id"], resume="allow" if resuming else None, mode=mode, dir=self.run_dir,
            project=self.state["project"], entity=self.state["entity"],
            group=cfg.group or cfg.experiment, job_type=cfg.job_type,
            # W&B refuses longer tags
            name=f"{cfg.variant}-s{cfg.seed}", tags=list(dict.fromkeys(tag[:64]
                                     for tag in (cfg.preset, cfg.variant, cfg.experiment, *cfg.tags)
                                                                       if tag)),
            # exactly config.json
            config=json.loads((self.run_dir / store.CONFIG).read_text(encoding="utf-8")),
            settings=wandb.Settings(**LEAN,
                                    init_timeout=_timeout("WANDB_INIT_TIMEOUT", INIT_TIMEOUT_S),
                                    finish_timeout=_timeout("WANDB_FINISH_TIMEOUT",
                                                            FINISH_TIMEOUT_S),
                                    finish_timeout_raises=True,
                                    x_transaction_log_flush_interval=FLUSH_INTERVAL_S),
        )
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")
        self._catch_up()

    def _catch_up(self) -> None:
        """Log the evaluations in metrics.jsonl that W&B has not seen (after a resume or a lost
        log)."""
        metrics, _ = store.read_jsonl(self.run_dir / store.METRICS)
        for row in metrics:
            self._log(row)

    def _log(self, row: dict[str, Any]) -> None:
        # _step = the training step, so a resumed run continues where its checkpoint left off; rows
        # W&B already holds (this or an earlier attempt) are skipped: "step must only increase".
        if (self.run is None or row["step"] <= self.state["last_step"]
            or row["step"] < self.run.starting_step):
            return
        self.run.log(row, step=row["step"], commit=True)
        self.state["last_step"] = row["step"]
        store.write_json(self.state_path, self.state)

    def _finish(self, summary: dict[str, Any], samples: str | None) -> None:
        if self.run is None:
            return
        import wandb

        self._catch_up()  # e.g. the evaluation a callback stopped the run at
        self.run.summary.update(summary)  # exactly summary.json
        if samples is not None:
            cfg = self.cfg
            self.run.summary["samples"] = wandb.Table(
                columns=["run_id", "variant", "seed", "step", "text"],
                data=[[cfg.run_id, cfg.variant, cfg.seed, summary.get("step"), samples]])
        run, self.run = self.run, None
        run.finish(exit_code=0 if summary.get("status") in OK_STATUSES else 1)
        self.state["closed"] = True  # finish wrote every row W&B was handed
        store.write_json(self.state_path, self.state)

    def _guard(self, action: str, fn: Callable[..., None], *args: Any) -> None:
        """Run one W&B step; on any failure warn once, turn the mirror off and carry on."""
        if self.run is None and action != "start":
            return
        try:
            fn(*args)
        except Exception as e:
            first_line = next(iter(str(e).splitlines()), "")
            advice = "" if isinstance(e, WandbFolderError) else (
                " Without a working W&B connection use --wandb offline (then `wandb sync`) or "
                "--wandb off.")
            print(f"warning: W&B mirror off for {self.cfg.experiment}/{self.cfg.run_id} ({action} "
                  f"failed: {type(e).__name__}: {first_line}); training and the local record in "
                  f"{self.run_dir} continue."
                  + advice, file=sys.stderr, flush=True)
            self._abandon()

    def _abandon(self) -> None:
        """End the broken W&B run and service as far as they still answer, so the next run starts
        clean."""
        run, self.run = self.run, None
        wandb = sys.modules.get("wandb")
        # wandb.teardown may sys.exit with the service's exit code: that must not end training.
        with suppress(Exception, SystemExit):
            if run is not None:
                run.finish(exit_code=1)
        with suppress(Exception, SystemExit):
            if wandb is not None:
                wandb.teardown()
