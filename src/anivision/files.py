"""Atomic file writes (a reader, or a resumed run, sees the old file or the new one, never half),
the paths a run records (absolute, compared as locations), and reading the files a run keeps.

Every file anivision writes into a run folder, a cache or a report goes through these: the text
is written to a temporary name beside the target (:func:`temp_path`: ``NAME.PID.tmp``) and
renamed over it (``os.replace`` is atomic on POSIX and Windows). A write that fails removes its
temporary file; one a killed process left is removed by :func:`sweep_temp_files` when the next
run or cache starts there.
"""

from __future__ import annotations

import csv
import errno
import json
import logging
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from anivision.errors import AnivisionError

log = logging.getLogger(__name__)

#: A temporary file of :func:`temp_path` (and the hidden ones of other writers): ``[.]NAME.PID.tmp[.EXT]``.
TEMP_NAME = re.compile(r"^\.?(?P<name>.+?)\.(?P<pid>\d+)\.tmp(\.[a-z0-9]+)*$")


def temp_path(path: str | Path) -> Path:
    """The temporary name a write of ``path`` goes through: ``NAME.PID.tmp`` beside it."""
    path = Path(path)
    return path.with_name(f"{path.name}.{os.getpid()}.tmp")


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Write ``path`` atomically: yields the temporary path to write, then renames it over ``path``.

    On any error (a full disk, a read-only folder, Ctrl-C) the temporary file is removed and the
    error goes on; ``path`` keeps its old content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        remove_quietly(tmp)
        raise


def remove_quietly(path: str | Path) -> None:
    """Remove a file if it is there; a failure to remove is not worth a second error."""
    try:
        os.unlink(path)
    except OSError:
        pass


def pid_alive(pid: int) -> bool:
    """True when a process ``pid`` runs on this machine (or may: one we may not signal)."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def sweep_temp_files(folder: str | Path, recursive: bool = False) -> list[Path]:
    """Remove the temporary files (``[.]NAME.PID.tmp[.EXT]``) in ``folder`` whose process is gone.

    A process killed mid-write (kill -9, a power cut) cannot clean up after itself; the next run
    or cache that starts in the folder does. Files of a live process are left alone.

    Returns:
        The removed files.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for p in folder.rglob("*") if recursive else folder.iterdir():
        m = TEMP_NAME.match(p.name)
        if m and p.is_file() and not p.is_symlink() and not pid_alive(int(m.group("pid"))):
            remove_quietly(p)
            removed.append(p)
    if removed:
        log.info("%s: removed %d temporary file(s) left by a killed process", folder, len(removed))
    return removed


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and rename."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def atomic_write_csv(path: str | Path, rows: list[dict[str, Any]], fields: list[str], float_format: str = "{:.6f}") -> None:
    """Write ``rows`` (dicts keyed by ``fields``) as CSV, atomically; floats use ``float_format``."""
    with replacing(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: (float_format.format(v) if isinstance(v, float) else v) for k, v in r.items()})


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


# ------------------------------------------------------------- reading a run's files


def read_json(path: str | Path, expect: type | None = None) -> Any:
    """The JSON of a file anivision wrote (a run's config, classes, gallery...), checked.

    Args:
        path: the file.
        expect: the type the top level must have (``dict`` or ``list``), or None.

    Raises:
        AnivisionError: one line naming the file: missing, not UTF-8, not valid JSON (a
            damaged or hand-edited file), or of another shape than ``expect``.
    """
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AnivisionError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise AnivisionError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); the file is damaged") from None
    except json.JSONDecodeError as exc:
        raise AnivisionError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); the file is damaged or was edited") from None
    if expect is not None and not isinstance(obj, expect):
        want = {dict: "an object", list: "a list"}.get(expect, expect.__name__)
        raise AnivisionError(f"{path}: expected {want} in this JSON file, found {type(obj).__name__}; the file is damaged or was edited")
    return obj


def read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file (never a pickle).

    Raises:
        AnivisionError: one line naming the file: missing, truncated or not a safetensors file.
    """
    path = Path(path)
    if not path.is_file():
        raise AnivisionError(f"{path}: no such file")
    try:
        return load_file(str(path))
    except (SafetensorError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AnivisionError(f"{path}: damaged or truncated weights file ({first}); copy or train it again") from None


# ------------------------------------------------------------- OS errors, as one line


#: OS errors that mean "the output place cannot take this write", each with the user's remedy.
OS_ERROR_HINTS = {
    errno.ENOSPC: "no space left on the device; free some space or choose another location",
    errno.EDQUOT: "disk quota exceeded; free some space or choose another location",
    errno.EROFS: "read-only file system; choose a writable location",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EISDIR: "is a folder; expected a file",
    errno.ENOTDIR: "a part of this path is a file, not a folder",
    errno.EEXIST: "already exists and is not a folder",
    errno.ENOENT: "no such file or folder",
    errno.ENAMETOOLONG: "file name too long",
    errno.EMFILE: "too many open files",
    errno.EIO: "input/output error (a failing disk?)",
}


def os_error_line(exc: OSError) -> str | None:
    """The one line an OS error on a named file becomes (``PATH: what; what to do``), else None.

    The path is the target of a rename (``filename2``), else the file the call named. Applied in
    one place, the CLI's error handler, so every command maps ENOSPC, EROFS, EACCES... alike.
    """
    path = exc.filename2 or exc.filename
    if path is None:
        return None
    path = os.fsdecode(path)
    m = TEMP_NAME.match(os.path.basename(path))
    if m:  # name the file being written, not its temporary name
        path = os.path.join(os.path.dirname(path), m.group("name"))
    what = OS_ERROR_HINTS.get(exc.errno or 0) or (exc.strerror or type(exc).__name__).lower()
    return f"{path}: {what}"
