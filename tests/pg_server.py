"""A throwaway PostgreSQL server for tests: initdb + pg_ctl in a temp folder, 127.0.0.1 only.

initdb refuses to run as root, so as root the server runs as the `postgres` user (Debian's
package makes it). The folder lives outside pytest's temp root, which is mode 700 and closed
to that user. Trust auth on 127.0.0.1: any password in a URL is accepted and never checked,
which lets tests put a secret in the URL and prove it is never printed or stored.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


def pg_bin() -> Path | None:
    """The folder holding initdb and pg_ctl: on PATH, or the newest Debian
    /usr/lib/postgresql/N/bin."""
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).parent
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
                   key=lambda p: int(p.parent.parent.name))
    return found[-1].parent if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def postgres_server() -> Iterator[tuple[str, int]]:
    """Start a server; yields (host, port) and stops it (and deletes its files) on exit."""
    bin_dir = pg_bin()
    if bin_dir is None:
        raise RuntimeError(
            "PostgreSQL not found: install Debian's `postgresql` package (.ci/run does)")
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="nanogpt-pg-"))
    if as_postgres:
        shutil.chown(root, "postgres", "postgres")
    data, port = root / "data", free_port()
    pg_ctl = [*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(data)]
    try:
        subprocess.run([*as_postgres, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres",
                        "--auth=trust", "--no-sync", "-E", "UTF8"], check=True, capture_output=True,
                       text=True)
        # fsync off: a test database need not survive a power cut.
        subprocess.run([*pg_ctl, "-w", "-l", str(root / "server.log"), "-o",
                        f"-k {root} -p {port} -c listen_addresses=127.0.0.1 -F", "start"],
                       check=True, capture_output=True, text=True)
        yield "127.0.0.1", port
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def create_database(host: str, port: int, name: str) -> None:
    import psycopg2

    conn = psycopg2.connect(host=host, port=port, user="postgres", dbname="postgres")
    try:
        conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()
