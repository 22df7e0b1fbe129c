"""User-facing errors, and how the command line reports an interruption.

Anything a user can cause (a missing path, an empty dataset, weights that do not fit)
raises :class:`AnivisionError` with a one-line message naming the file and the
problem. The CLI prints that line and exits non-zero; ``--debug`` shows the traceback.
OS errors on a named file (a full disk, a read-only folder) are mapped to such a line in one
place, the CLI's handler (:func:`anivision.files.os_error_line`).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import TracebackType


class AnivisionError(Exception):
    """An error caused by the user's input, reported as one line without a traceback."""


#: What Ctrl-C prints; commands that resume from their last finished epoch add how to go on.
INTERRUPTED = "interrupted"
INTERRUPTED_RESUMABLE = "interrupted (rerun the same command to resume)"

_CLI_NAMES = ("anivision", "anivision.exe", "anivision-script.py", "-m")


def quiet_interrupts_while_starting() -> None:
    """Make Ctrl-C while the ``anivision`` command is still importing print one line, not a traceback.

    ``anivision.cli.main`` handles Ctrl-C itself once it runs, but the console script imports
    the package (torch, timm: seconds) before that. Installed only when the process is the
    command line (``sys.argv[0]`` is the console script or ``python -m``), so a program or
    notebook that imports anivision keeps Python's own hook.
    """
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if name not in _CLI_NAMES or getattr(sys.excepthook, "_anivision", False):
        return
    previous = sys.excepthook

    def hook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            print(INTERRUPTED, file=sys.stderr)
        else:
            previous(kind, exc, tb)

    hook._anivision = True  # type: ignore[attr-defined]
    sys.excepthook = hook
    # A KeyboardInterrupt raised inside a library's import can be swallowed by its broad
    # ``except`` (the command would then run on, Ctrl-C ignored). While starting, Ctrl-C
    # therefore ends the process at once; ``cli.main`` restores Python's handler
    # (:func:`end_of_startup`) before a command runs, so commands see KeyboardInterrupt as usual.
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _exit_interrupted)


def _exit_interrupted(signum: int, frame: object) -> None:
    """SIGINT while the command line imports: one line, exit 130, nothing else runs."""
    try:
        print(INTERRUPTED, file=sys.stderr, flush=True)
    finally:
        os._exit(130)


def end_of_startup() -> None:
    """Give Ctrl-C back to Python (``KeyboardInterrupt``) once the command line has imported."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is _exit_interrupted:
        signal.signal(signal.SIGINT, signal.default_int_handler)
