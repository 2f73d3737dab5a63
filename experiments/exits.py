"""The one ending every command line shares: `error: ...` on stderr and an exit code that says what happened.

    2   bad input: nothing was started (or written); the message says what to change
    1   a run (or the command's work) failed: a full disk, a dead worker, a database that went away
    130 interrupted (Ctrl-C, SIGTERM): what was finished is kept; the message says how to resume

Torch-free, so analysis and the sweeps' command lines end the same way as the trainers'.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

BAD_INPUT, FAILED, INTERRUPTED = 2, 1, 130


class CommandFailed(Exception):  # noqa: N818 - an outcome, worded by the command that raises it
    """The command's work failed after it started (exit 1); the message says why and what to do."""


def disk_error(e: OSError) -> str:
    """A failed write as one line: which file, why, and what to do."""
    where = e.filename or "the results folder"
    return (f"cannot write {where} ({e.strerror or e}); free disk space or choose a writable --results folder, "
            "then rerun with --resume: nothing written so far is marked complete")


def run_command(body: Callable[[], int], bad_input: tuple[type[BaseException], ...], interrupted: str,
                word: Callable[[str], str] = str) -> int:
    """`body()`'s exit code, or the shared ending for what it raised. `word` rewrites each message (the
    sweeps redact a storage password); `interrupted` says what survives a Ctrl-C and how to go on."""
    try:
        return body()
    except bad_input as e:
        return error(word(str(e)), BAD_INPUT)
    except KeyboardInterrupt:
        print(f"interrupted: {interrupted}", file=sys.stderr)
        return INTERRUPTED
    except CommandFailed as e:
        return error(word(str(e)), FAILED)
    except OSError as e:
        return error(word(disk_error(e)), FAILED)


def error(message: str, code: int = BAD_INPUT) -> int:
    """Print one `error:` line and return the exit code to end with."""
    print(f"error: {message}", file=sys.stderr)
    return code
