"""optuna-dashboard on 127.0.0.1 for a study: `python -m sweeps.dashboard --study NAME [--port
8080]`.

Finds the storage the same way the workers do (--storage, $NANOGPT_SWEEP_STORAGE, or the study's
SQLite file), so the URL, and any password in it, never has to be typed on a command line.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

from experiments import cli, exits, store
from experiments.settings import ConfigError, check_name
from sweeps import storage

HOST = "127.0.0.1"  # the dashboard can edit studies: never serve it beyond this machine


def build_parser() -> argparse.ArgumentParser:
    p = exits.ArgumentParser(prog="python -m sweeps.dashboard",
                             description=__doc__.split("\n\n")[0])
    p.add_argument("--study", required=True, help="the study's name (finds its default SQLite "
                                                  "file)")
    p.add_argument("--storage",
                   help="study storage (default: $NANOGPT_SWEEP_STORAGE, else "
                        "<results>/<study>/optuna.db)")
    cli.add_results_argument(p)
    p.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (default 8080)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return exits.run_command(lambda: _serve(args), (ConfigError, storage.StorageError),
                             "the dashboard stopped; the study is unchanged")


def _serve(args: argparse.Namespace) -> int:
    from optuna_dashboard import run_server

    results = args.results or cli.default_results()
    folder = store.RunStore(results).experiment_dir(check_name("study", args.study))
    spec = storage.choose(args.storage, folder)
    try:
        opened = storage.open_existing(spec)
    except FileNotFoundError as e:
        raise ConfigError(f"{e}; run a sweep first (make sweep) or pass --storage") from None
    print(f"optuna-dashboard for {storage.display_name(spec)} at "
          f"http://{HOST}:{args.port}/dashboard (Ctrl-C stops it)", file=sys.stderr, flush=True)
    # A server records nothing, so a signal ends it at once: the shared handler's KeyboardInterrupt,
    # landing in a request, is swallowed by wsgiref, which would keep serving with further signals
    # ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        run_server(opened, host=HOST, port=args.port)
    except OSError as e:
        raise exits.CommandFailed(f"cannot serve on {HOST}:{args.port} ({e.strerror}); pick "
                                  "another --port") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
