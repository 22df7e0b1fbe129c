"""User-facing errors.

Anything a user can cause (a missing path, an empty dataset, weights that do not fit)
raises :class:`AnivisionError` with a one-line message naming the file and the
problem. The CLI prints that line and exits non-zero; ``--debug`` shows the traceback.
"""


class AnivisionError(Exception):
    """An error caused by the user's input, reported as one line without a traceback."""
