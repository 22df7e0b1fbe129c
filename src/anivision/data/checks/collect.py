"""Listing the files a data check covers, and decoding, measuring and hashing each one.

Files come from a class-per-folder tree or a CSV manifest, plus an optional split file whose
labels and parts win over the folders (:func:`_collect`); :func:`_inspect` decodes one file.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from anivision.data.folder import read_manifest, scan_class_folders
from anivision.data.hashing import perceptual_hashes
from anivision.data.images import load_image
from anivision.data.splits import read_split
from anivision.errors import AnivisionError

# Greyscale test on a 64x64 box-filtered thumbnail: channel spread max(R,G,B) - min(R,G,B).
# JPEG chroma noise on grey pictures stays below ~3 on average; a colour area of 1 % or more of
# the picture lifts the 99th percentile above the limit.
_GREY_MEAN_SPREAD = 2.0
_GREY_P99_SPREAD = 12.0


@dataclass
class _Item:
    """One image file to check: where it is and what the dataset says about it."""

    path: str  # as shown in the report
    key: str  # resolved path, to match folder files with split rows
    label: str
    split: str | None = None


@dataclass
class _Inspection:
    """What decoding one file's content found (picklable, for worker processes)."""

    error: str | None
    width: int = 0
    height: int = 0
    grey: bool = False
    phash: np.ndarray | None = None
    dhash: np.ndarray | None = None
    signature: np.ndarray | None = None
    thumb: np.ndarray | None = None
    chroma: np.ndarray | None = None


def _inspect(path: str) -> _Inspection:
    """Decode ``path`` fully, measure it and hash it; never raises for a bad image."""
    try:
        img = load_image(path)
    except AnivisionError as exc:
        # load_image names the file first; keep only the problem, the report names the file.
        msg = str(exc)
        prefix = f"{path}: "
        return _Inspection(error=msg[len(prefix):] if msg.startswith(prefix) else msg)
    except Exception as exc:  # noqa: BLE001 - a decoder bug on one file must not stop the check
        return _Inspection(error=f"cannot decode ({type(exc).__name__}: {exc})")
    w, h = img.size
    thumb = np.asarray(img.resize((64, 64), Image.Resampling.BOX), dtype=np.int16)
    r, g, b = thumb[..., 0], thumb[..., 1], thumb[..., 2]
    # Element-wise max/min over three planes: ~20x faster than a reduction over a length-3 axis.
    spread = np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)
    grey = bool(spread.mean() < _GREY_MEAN_SPREAD and np.percentile(spread, 99) < _GREY_P99_SPREAD)
    hashes = perceptual_hashes(img)
    return _Inspection(None, w, h, grey, hashes.phash, hashes.dhash, hashes.signature, hashes.thumb, hashes.chroma)


def _abspath(path: str | Path) -> str:
    """Absolute path without touching the disk: enough to tell files apart within one listing."""
    return os.path.abspath(path)


def _read_recorded_sha1(split_csv: Path) -> list[str]:
    """The ``sha1`` column of a split file, row by row ('' where absent)."""
    with open(split_csv, newline="", encoding="utf-8") as fh:
        return [row.get("sha1") or "" for row in csv.DictReader(fh)]


def _collect(root: Path, split_csv: Path | None) -> tuple[list[_Item], dict[str, Any]]:
    """List the files to check from a class-per-folder tree or manifest, plus a split file.

    Returns:
        The items, and facts found on the way: ``ignored`` non-image files, ``empty_classes``,
        and split problems (``unassigned``, ``missing``, ``changed``, ``label_mismatch``).
    """
    info: dict[str, Any] = {"ignored": [], "empty_classes": []}
    items: list[_Item] = []
    if root.suffix.lower() == ".csv" and root.is_file():
        manifest = read_manifest(root, allow_duplicates=True)  # duplicates are findings here, not errors
        splits = manifest.splits or [None] * len(manifest)
        for p, y, s in zip(manifest.paths, manifest.labels, splits):
            items.append(_Item(p, _abspath(p), manifest.classes[y], s))
    else:
        # Empty class folders are a finding of the check, not a reason to stop it.
        images = scan_class_folders(root, allow_empty_classes=True)
        items = [_Item(p, _abspath(p), images.classes[y]) for p, y in zip(images.paths, images.labels)]
        info["ignored"] = list(images.ignored)
        info["empty_classes"] = sorted(
            d.name for d in root.iterdir()
            if d.is_dir() and not d.name.startswith(".") and d.name not in set(images.classes)
        )
    if split_csv is None:
        return items, info

    split = read_split(split_csv, verify=False)  # validates columns and split names
    recorded = _read_recorded_sha1(split_csv)
    # Split rows and folder files may reach one file by different routes (symlinks, ".."):
    # match them on real paths, resolved only when a split file is given (it costs a stat each).
    for it in items:
        it.key = os.path.realpath(it.path)
    by_key = {it.key: it for it in items if it.split is None}
    missing: list[str] = []
    mismatch: list[str] = []
    expected_sha1: dict[str, str] = {}
    for p, y, s, sha in zip(split.paths, split.labels, split.splits or [], recorded):
        label = split.classes[y]
        key = os.path.realpath(p)
        it = by_key.pop(key, None)
        if it is not None:
            if it.label != label:
                mismatch.append(it.path)
            it.label, it.split = label, s  # the split file is what training will use
        elif Path(p).is_file():
            # Outside DIR, or listed twice: check it too (a file listed in two parts is leakage).
            it = _Item(p, key, label, s)
            items.append(it)
        else:
            missing.append(p)
            continue
        if sha:
            expected_sha1[it.path] = sha
    info["split_expected_sha1"] = expected_sha1
    info["split"] = {
        "csv": str(split_csv),
        "unassigned": sorted(it.path for it in by_key.values()),
        "missing": missing,
        "label_mismatch": mismatch,
    }
    return items, info
