"""User-facing errors, and how the command line reports an interruption.

Anything a user can cause (a missing path, an empty dataset, weights that do not fit)
raises :class:`AnivisionError` with a one-line message naming the file and the
problem. The CLI prints that line and exits non-zero; ``--debug`` shows the traceback.
OS errors on a named file (a full disk, a read-only folder) are mapped to such a line in one
place, the CLI's handler (:func:`anivision.files.os_error_line`).
"""

from __future__ import annotations

import os
import sys
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
