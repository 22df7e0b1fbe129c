"""Stratified, frozen train/val/test splits saved as CSV with content hashes.

A split file has columns ``path,label,split,sha1`` and, optionally, ``root``:

- without ``root`` (``anivision split``): paths are relative to the split file's folder when
  possible, so a dataset and its split can move together;
- with ``root`` (the ``split.csv`` a run keeps): ``root`` is the absolute data root and each
  path is relative to it (``/`` separators), so the file works from any working directory and
  wherever the run folder goes. When the data moves, :func:`read_split` with ``root=NEW``
  finds every image at the same place under the new root.

The sha1 of each file is recorded so that a split used later can prove it still describes the
same images, wherever they now lie.
"""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path

import numpy as np

from anivision.data.folder import SPLIT_NAMES, LabeledImages, check_split_names, check_unique_rows, common_root, read_csv_rows, reroot
from anivision.errors import AnivisionError
from anivision.files import absolute_path, replacing

#: Named presets from the studies anivision reproduces.
SPLIT_PRESETS: dict[str, tuple[float, float, float]] = {
    "70/15/15": (0.70, 0.15, 0.15),  # emotion study (ViT vs CNN)
    "72/18/10": (0.72, 0.18, 0.10),  # AniWho: 90/10, then 20% of train to validation
    "70/30": (0.70, 0.0, 0.30),  # anime-vs-selfie study: no validation split
}
PARTS = SPLIT_NAMES


def parse_ratios(text: str) -> tuple[float, float, float]:
    """Parse ``"70/15/15"``, ``"70/30"`` (train/test) or fractions like ``"0.8/0.1/0.1"``.

    Returns:
        (train, val, test) fractions summing to 1.
    """
    if text in SPLIT_PRESETS:
        return SPLIT_PRESETS[text]
    try:
        parts = [float(x) for x in text.replace(",", "/").split("/")]
    except ValueError:
        raise AnivisionError(f"--ratios '{text}': expected numbers like 70/15/15 or 70/30") from None
    if len(parts) == 2:
        parts = [parts[0], 0.0, parts[1]]
    if len(parts) != 3 or any(p < 0 for p in parts) or sum(parts) <= 0:
        raise AnivisionError(f"--ratios '{text}': expected train/val/test like 70/15/15 or train/test like 70/30")
    total = sum(parts)
    if parts[0] == 0:
        raise AnivisionError(f"--ratios '{text}': the train share must be above 0")
    return (parts[0] / total, parts[1] / total, parts[2] / total)


def _allocate(n: int, ratios: tuple[float, float, float]) -> list[int]:
    """Split ``n`` items into counts per part: largest remainder, at least one for each non-zero ratio."""
    want = [r * n for r in ratios]
    counts = [int(np.floor(w)) for w in want]
    order = np.argsort([-(w - c) for w, c in zip(want, counts)], kind="stable")
    for i in order[: n - sum(counts)]:
        counts[int(i)] += 1
    # Every non-empty part gets at least one image; take it from the largest part.
    for i, r in enumerate(ratios):
        if r > 0 and counts[i] == 0:
            j = int(np.argmax(counts))
            if counts[j] <= 1:
                break
            counts[j] -= 1
            counts[i] += 1
    return counts


def stratified_split(labels: list[int], classes: list[str], ratios: tuple[float, float, float], seed: int = 42) -> list[str]:
    """Assign each item to ``train``/``val``/``test``, class by class.

    Args:
        labels: (N,) class index of each item.
        classes: class names (for error messages).
        ratios: (train, val, test) fractions summing to 1; a zero part stays empty.
        seed: shuffling seed; the same seed and labels give the same split.

    Returns:
        (N,) split names.

    Raises:
        AnivisionError: a class has too few images to put one in every non-empty part.
    """
    labels_arr = np.asarray(labels)
    rng = np.random.default_rng(seed)
    need = sum(1 for r in ratios if r > 0)
    out = [""] * len(labels)
    for c, name in enumerate(classes):
        idx = np.flatnonzero(labels_arr == c)
        if len(idx) < need:
            pct = "/".join(f"{round(r * 100)}" for r in ratios if r > 0)
            raise AnivisionError(
                f"class '{name}' has {len(idx)} image(s): a {pct} split needs at least {need} per class"
            )
        idx = idx[rng.permutation(len(idx))]
        counts = _allocate(len(idx), ratios)
        start = 0
        for part, k in zip(PARTS, counts):
            for i in idx[start : start + k]:
                out[int(i)] = part
            start += k
    return out


def file_sha1(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha1 of a file's bytes."""
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_split(images: LabeledImages, splits: list[str], out_csv: str | Path, root: str | Path | None = None) -> Path:
    """Write ``path,label,split,sha1`` rows atomically (temp file + rename).

    Args:
        images: the images; their ``sha1s``, when known, are written as they are (not re-hashed).
        splits: split name of each image.
        out_csv: the file.
        root: the data root: paths are then written relative to it, and it is recorded in a
            ``root`` column (a run's own split). Default: paths relative to ``out_csv``'s folder.
    """
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    base = absolute_path(root) if root is not None else str(out_csv.parent.resolve())
    with replacing(out_csv) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "split", "sha1"] + (["root"] if root is not None else []))
        for i, (p, y, s) in enumerate(zip(images.paths, images.labels, splits)):
            full = absolute_path(p) if root is not None else str(Path(p).resolve())
            rel = os.path.relpath(full, base).replace(os.sep, "/")
            sha1 = images.sha1s[i] if images.sha1s else file_sha1(p)
            w.writerow([rel, images.classes[y], s, sha1] + ([base] if root is not None else []))
    return out_csv


def _split_rows(split_csv: Path) -> tuple[list[dict[str, str]], list[str]]:
    """The rows and columns of a split file, checked.

    Raises:
        AnivisionError: missing file or columns, no rows, or an unknown split name.
    """
    if not split_csv.is_file():
        raise AnivisionError(f"{split_csv}: no such split file")
    cols, rows, lines = read_csv_rows(split_csv, "split file")
    missing = [c for c in ("path", "label", "split") if c not in cols]
    if missing:
        raise AnivisionError(f"{split_csv}: split file needs columns path,label,split[,sha1]; missing {','.join(missing)}")
    if not rows:
        raise AnivisionError(f"{split_csv}: split file has no rows")
    for r, n in zip(rows, lines):
        if not (r["split"] or "").strip():
            raise AnivisionError(f"{split_csv}: line {n} has no split (expected train, val or test)")
        if not (r["path"] or "").strip() or not (r["label"] or "").strip():
            raise AnivisionError(f"{split_csv}: line {n} has no path or no label")
    check_split_names(split_csv, [r["split"] for r in rows], lines)
    check_unique_rows(split_csv, _recorded_paths(split_csv, rows), lines)
    return rows, cols


def _recorded_paths(split_csv: Path, rows: list[dict[str, str]]) -> list[str]:
    """Absolute image paths as the file records them (relative to ``root``, else to the file's folder)."""
    out = []
    for r in rows:
        p = Path(r["path"])
        base = r.get("root") or str(split_csv.parent)
        out.append(absolute_path(p if p.is_absolute() else Path(base) / p))
    return out


def split_root(split_csv: str | Path) -> str:
    """The data root of a split file: its ``root`` column, else the common folder of its images."""
    split_csv = Path(split_csv)
    rows, _ = _split_rows(split_csv)
    return rows[0].get("root") or common_root(_recorded_paths(split_csv, rows))


def read_split(split_csv: str | Path, verify: bool = True, root: str | Path | None = None, hint: str = "") -> LabeledImages:
    """Read a split file written by :func:`write_split` (or by hand: ``path,label,split[,sha1][,root]``).

    Args:
        split_csv: the CSV.
        verify: re-hash every file and fail if one changed since the split was made.
        root: the data's new root: each image is looked for at its place relative to the
            recorded root (:func:`split_root`), under ``root`` instead.
        hint: appended to the missing-image errors (what the user can pass instead).

    Raises:
        AnivisionError: missing file or columns, a missing data root or image, or a changed image.
    """
    split_csv = Path(split_csv)
    rows, cols = _split_rows(split_csv)
    paths = _recorded_paths(split_csv, rows)
    recorded = rows[0].get("root") or common_root(paths)
    if root is not None:
        if not Path(root).is_dir():
            raise AnivisionError(f"{root}: no such data folder")
        paths = [reroot(p, recorded, root) for p in paths]
    elif verify and not Path(recorded).is_dir():
        raise AnivisionError(f"{split_csv}: the images' folder {recorded} is missing{hint}")
    classes = sorted({r["label"] for r in rows})
    index = {c: i for i, c in enumerate(classes)}
    sha1s = [r.get("sha1") or "" for r in rows]
    if verify and "sha1" in cols:
        for p, h in zip(paths, sha1s):
            if not Path(p).exists():
                raise AnivisionError(f"{split_csv}: image {p} is missing{hint}")
            if h and file_sha1(p) != h:
                raise AnivisionError(f"{split_csv}: image {p} changed since the split was made (sha1 differs)")
    return LabeledImages(
        paths=paths,
        labels=[index[r["label"]] for r in rows],
        classes=classes,
        splits=[r["split"] for r in rows],
        sha1s=sha1s if all(sha1s) else None,
    )


def split_indices(splits: list[str]) -> dict[str, list[int]]:
    """Indices of each part: ``{"train": [...], "val": [...], "test": [...]}``."""
    out: dict[str, list[int]] = {p: [] for p in PARTS}
    for i, s in enumerate(splits):
        out[s].append(i)
    return out
