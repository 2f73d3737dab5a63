"""Where a study lives: a SQLite file (default), a PostgreSQL server, or a journal file.

    sqlite:///results/<study>/optuna.db    default; embedded, heartbeats, a few local workers
    postgresql://user@host:5432/db         many workers on many machines; put the password in
                                           PGPASSWORD or ~/.pgpass rather than in the URL
    path/to/study.journal                  JournalStorage on a file: no database, fast, no
                                           heartbeats

Anything with `://` is a SQLAlchemy URL; anything else is a journal file (as in optuna-dashboard).
A password in a URL never leaves this module unredacted: every message we print goes through
`redact`, and worker processes receive the URL in the environment, not on their command line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

STORAGE_ENV = "NANOGPT_SWEEP_STORAGE"
DB_FILE = "optuna.db"
MAX_RETRIES = 3  # a trial whose worker keeps dying is given up after this many restarts


class StorageError(ValueError):
    """The storage cannot be opened; the message (already redacted) says why and what to do."""


@dataclass(frozen=True)
class Heartbeat:
    """Workers beat every `interval` s; a RUNNING trial silent for `grace` s is failed and
    retried."""

    interval: int = 10
    grace: int = 30


def default_storage(study_dir: Path) -> str:
    return f"sqlite:///{(study_dir / DB_FILE).resolve()}"


def choose(cli_value: str | None, study_dir: Path) -> str:
    """--storage, else $NANOGPT_SWEEP_STORAGE, else the study's own SQLite file."""
    return cli_value or os.environ.get(STORAGE_ENV) or default_storage(study_dir)


def is_url(spec: str) -> bool:
    return "://" in spec


def _password(spec: str) -> str | None:
    if not is_url(spec):
        return None
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(spec).password
    except (ArgumentError, ValueError):  # unparsable: hide everything between '://' and '@'
        head = spec.split("://", 1)[1]
        return head.rsplit("@", 1)[0].split(":", 1)[-1] if "@" in head else None


def redact(text: str, spec: str) -> str:
    """`text` with the storage password (plain or URL-quoted) replaced by ***."""
    from urllib.parse import quote

    password = _password(spec)
    if not password:
        return text
    for form in {password, quote(password, safe=""), quote(password)}:
        text = text.replace(form, "***")
    return text


def local_file(spec: str) -> Path | None:
    """The file a SQLite or journal storage lives in; None for a database server."""
    if spec.startswith("sqlite:///"):
        return Path(spec.removeprefix("sqlite:///"))
    return None if is_url(spec) else Path(spec)


def display_name(spec: str) -> str:
    """A printable name for the storage: the URL without its password, or the journal path."""
    return redact(spec, spec) if is_url(spec) else f"journal file {spec}"


def open_storage(spec: str, heartbeat: Heartbeat | None = None) -> BaseStorage:
    """An Optuna storage for `spec`; heartbeats (and retry of stale trials) on databases."""
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage

    local = local_file(spec)
    try:
        if local:
            local.parent.mkdir(parents=True, exist_ok=True)
        if not is_url(spec):
            return JournalStorage(JournalFileBackend(spec, lock_obj=JournalFileOpenLock(spec)))
        sqlite = local is not None
        engine_kwargs = {"pool_pre_ping": True}
        if sqlite:
            # Workers wait for the file's lock rather than fail (optuna #820); pysqlite's own
            # transaction handling is off so that `_lock_on_begin` decides when transactions start.
            engine_kwargs = {"connect_args": {"timeout": 60, "isolation_level": None}}
        beats = {}
        if heartbeat is not None:
            beats = {"heartbeat_interval": heartbeat.interval, "grace_period": heartbeat.grace,
                     "heartbeat_stale_trial_callback": RetryHeartbeatStaleTrialCallback(
                         # the objective reports the resumed run's evals itself
                         max_retry=MAX_RETRIES)}
        # SQLAlchemy 2.1 reads plain postgresql:// as psycopg 3; the driver we install is psycopg2.
        url = (spec.replace("postgresql://", "postgresql+psycopg2://", 1)
               if spec.startswith("postgresql://") else spec)
        rdb = RDBStorage(url, engine_kwargs=engine_kwargs, **beats)
        if sqlite:
            _lock_on_begin(rdb.engine)
        return rdb
    except Exception as e:  # noqa: BLE001 - SQLAlchemy/driver errors have many types; all mean "cannot open"
        raise StorageError(
            f"cannot open the study storage {display_name(spec)}: "
            f"{redact(str(e).splitlines()[0], spec)}. Check the URL (sqlite:///FILE, "
            "postgresql://USER@HOST:PORT/DB) or give a journal file path"
        ) from None


def absolute(spec: str) -> str:
    """The same storage named from any folder (a report's notebook runs in analysis/): a relative
    SQLite or journal path made absolute."""
    local = local_file(spec)
    if local is None or local.is_absolute():
        return spec
    return f"sqlite:///{local.resolve()}" if is_url(spec) else str(local.resolve())


def check(spec: str, study_dir: Path) -> None:
    """Refuse, before anything is made, a storage no worker could share or that would make folders
    elsewhere: an in-memory SQLite database, or a file in a folder that does not exist."""
    if spec.startswith("sqlite:") and (spec.rstrip("/") in ("sqlite:", "sqlite:/", "sqlite://")
                                       or ":memory:" in spec or "mode=memory" in spec):
        raise StorageError(f"{display_name(spec)} is an in-memory database: the study would vanish "
                           f"with its process; give a file, e.g. {default_storage(study_dir)}")
    local = local_file(spec)
    if (local is not None and local.parent.resolve() != study_dir.resolve()
        and not local.parent.is_dir()):
        raise StorageError(f"storage {display_name(spec)}: folder {local.parent} does not exist; "
                           "create it first, or leave --storage out to use the study's own file")


def open_existing(spec: str) -> BaseStorage:
    """A storage to read, never to create: a SQLite or journal file must already exist (opening
    would make an empty one). FileNotFoundError names the file."""
    local = local_file(spec)
    if local is not None and not local.is_file():
        kind = "SQLite file" if is_url(spec) else "journal file"
        raise FileNotFoundError(f"{local}: no such {kind}; give the sweep's storage (a URL or a "
                                "journal path)")
    return open_storage(spec)


def _lock_on_begin(engine) -> None:
    """Start every SQLite transaction with the write lock (BEGIN IMMEDIATE).

    Optuna pops an enqueued trial by reading it as WAITING, then marking it RUNNING. PostgreSQL
    locks the row in between (SELECT ... FOR UPDATE); SQLite ignores that, and two workers here
    popped the same trial (optuna #4002). Holding the lock from the read on makes the pop atomic.
    """
    from sqlalchemy import event

    event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
