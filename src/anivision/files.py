"""Atomic file writes (a reader, or a resumed run, sees the old file or the new one, never half),
and the paths a run records (absolute, compared as locations).

Every file anivision writes into a run folder, a cache or a report goes through these: the text
is written to a temporary name beside the target and renamed over it (``os.replace`` is atomic
on POSIX and Windows).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def atomic_write_csv(path: str | Path, rows: list[dict[str, Any]], fields: list[str], float_format: str = "{:.6f}") -> None:
    """Write ``rows`` (dicts keyed by ``fields``) as CSV, atomically; floats use ``float_format``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: (float_format.format(v) if isinstance(v, float) else v) for k, v in r.items()})
    os.replace(tmp, path)


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# ------------------------------------------------------------- recorded paths


def absolute_path(path: str | Path) -> str:
    """``path`` made absolute against the working directory (``~`` expanded, ``..`` folded).

    Symbolic links are kept as given (the path the user chose is the one recorded).
    """
    return os.path.abspath(os.path.expanduser(str(path)))


def same_location(old: str | None, new: str | None, moved_ok: bool = True) -> bool:
    """The same-run rule for a path saved in a run's config.

    True when ``old`` (as saved; a relative one, saved by an older anivision, is taken from the
    working directory) and ``new`` name the same file or folder, or, with ``moved_ok``, when
    ``old`` is not there any more: the data moved, and the run checks what lies at the new
    place by content instead (a classification run by the sha1 of every image).
    """
    if not old or not new:
        return not old and not new
    a, b = absolute_path(old), absolute_path(new)
    if a == b:
        return True
    if not os.path.exists(a):
        return moved_ok
    return os.path.exists(b) and os.path.samefile(a, b)


def absolute_if_file(value: str) -> str:
    """A weights value: an existing file's path made absolute; a name (``none``, ``imagenet``...) as is."""
    return absolute_path(value) if value and os.path.isfile(value) else value
