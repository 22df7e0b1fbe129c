"""Atomic file writes: a reader (or a resumed run) sees the old file or the new one, never half.

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
