"""The one ending every command line shares: `error: ...` on stderr and an exit code that says what
happened (the table of codes: docs/running.md, "Exit codes").

SIGTERM (what `kill` and a cluster scheduler send before SIGKILL) ends a command exactly as Ctrl-C
does, with 130 rather than 143: one outcome, one code. Once either arrives, further ones are ignored
while the command records what it was doing (seconds), so a second Ctrl-C never cuts a record short
or prints a traceback. Every entry point parses its arguments with `ArgumentParser`: argparse's
refusals end the same way.

Torch-free, so analysis and the sweeps' command lines end the same way as the trainers'.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

BAD_INPUT = 2  # nothing was started (or written); the message says what to change
FAILED = 1  # its work failed after it started: a full disk, a dead worker, a lost database
INTERRUPTED = 130  # Ctrl-C or SIGTERM: what was finished is kept; the message says how to go on
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class ArgumentParser(argparse.ArgumentParser):
    """The parser of every entry point: a usage error ends as any bad input does (one `error:` line,
    exit 2), and a negative number in any notation (`--lrs -1e-3`) is a value for the command to
    check, not an unknown option (argparse before 3.13 takes only `-1` and `-.5` for numbers)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-\.?\d")  # argparse 3.13's own pattern

    def error(self, message: str) -> NoReturn:
        self.exit(BAD_INPUT, f"error: {message}; see {self.prog} --help\n")


class CommandFailed(Exception):  # noqa: N818 - an outcome, worded by the command that raises it
    """The command's work failed after it started (exit 1); the message says why and what to do."""


def disk_error(e: OSError) -> str:
    """A failed write as one line: which file, why, and what to do."""
    where = e.filename or "the results folder"
    return (f"cannot write {where} ({e.strerror or e}); free disk space or choose a writable "
            "--results folder, then rerun with --resume: nothing written so far is marked complete")


def run_command(body: Callable[[], int], bad_input: tuple[type[BaseException], ...],
                interrupted: str | None, word: Callable[[str], str] = str) -> int:
    """`body()`'s exit code, or the shared ending for what it raised. `word` rewrites each message
    (the sweeps redact a storage password); `interrupted` says what survives a Ctrl-C and how to go
    on (None: a process another one started and speaks for, which says nothing of its own)."""
    with stop_on_signals():
        try:
            return body()
        except bad_input as e:
            return error(word(str(e)), BAD_INPUT)
        except KeyboardInterrupt:
            if interrupted is not None:
                print(f"interrupted: {interrupted}", file=sys.stderr)
            return INTERRUPTED
        except CommandFailed as e:
            return error(word(str(e)), FAILED)
        except OSError as e:
            return error(word(disk_error(e)), FAILED)


def stopping() -> None:
    """The command is stopping: Ctrl-C and SIGTERM are ignored from now to its exit (it is recording
    what it was doing). Called by the handler below, and where the stop came from elsewhere (a
    worker that was stopped)."""
    if threading.current_thread() is threading.main_thread():
        for stop in STOP_SIGNALS:
            signal.signal(stop, signal.SIG_IGN)


def _stop(signum: int, frame: Any) -> None:
    stopping()  # the first signal stops the command; the rest wait for it
    raise KeyboardInterrupt


@contextmanager
def signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM blocked in this thread while it starts worker processes: a process
    inherits the mask, so a signal that reaches a worker before it has installed its handlers waits
    for them instead of killing it (the worker unblocks them: `release_signals`)."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def release_signals() -> None:
    """In a worker started under `signals_held`, once its handlers are installed: what arrived
    meanwhile is delivered now."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Ctrl-C or SIGTERM raises KeyboardInterrupt here, once. Without one, the handlers before are
    restored after; after one the command is ending, and later signals stay ignored to its exit (a
    second Ctrl-C that lands in the interpreter's shutdown would print a traceback).

    A signal the process was started with ignored (a background job's SIGINT) stays ignored.
    """
    # only the main thread sets handlers
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    for stop, default in ((signal.SIGINT, signal.default_int_handler),
                          (signal.SIGTERM, signal.SIG_DFL)):
        if before[stop] is default:
            signal.signal(stop, _stop)
    try:
        yield
    finally:
        stopped = any(before[s] is not signal.SIG_IGN and signal.getsignal(s) is signal.SIG_IGN
                      for s in before)
        if not stopped:
            for stop, handler in before.items():
                signal.signal(stop, handler)


def error(message: str, code: int = BAD_INPUT) -> int:
    """Print one `error:` line and return the exit code to end with."""
    print(f"error: {message}", file=sys.stderr)
    return code
