"""Stratified, frozen train/val/test splits saved as CSV with content hashes.

A split file has columns ``path,label,split,sha1``. Paths are stored relative to the split
file's folder when possible, so a dataset and its split can move together. The sha1 of each
file is recorded so that a split used later can prove it still describes the same images.
"""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path

import numpy as np

from anivision.data.folder import LabeledImages
from anivision.errors import AnivisionError

#: Named presets from the studies anivision reproduces.
SPLIT_PRESETS: dict[str, tuple[float, float, float]] = {
    "70/15/15": (0.70, 0.15, 0.15),  # emotion study (ViT vs CNN)
    "72/18/10": (0.72, 0.18, 0.10),  # AniWho: 90/10, then 20% of train to validation
    "70/30": (0.70, 0.0, 0.30),  # anime-vs-selfie study: no validation split
}
PARTS = ("train", "val", "test")


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


def write_split(images: LabeledImages, splits: list[str], out_csv: str | Path) -> Path:
    """Write ``path,label,split,sha1`` rows atomically (temp file + rename)."""
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    base = out_csv.parent.resolve()
    tmp = out_csv.with_name(out_csv.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "split", "sha1"])
        for p, y, s in zip(images.paths, images.labels, splits):
            rel = os.path.relpath(Path(p).resolve(), base)
            w.writerow([rel.replace(os.sep, "/"), images.classes[y], s, file_sha1(p)])
    os.replace(tmp, out_csv)
    return out_csv


def read_split(split_csv: str | Path, verify: bool = True) -> LabeledImages:
    """Read a split file written by :func:`write_split`.

    Args:
        split_csv: the CSV.
        verify: re-hash every file and fail if one changed since the split was made.

    Raises:
        AnivisionError: missing file or columns, a missing image, or a changed image.
    """
    split_csv = Path(split_csv)
    if not split_csv.is_file():
        raise AnivisionError(f"{split_csv}: no such split file")
    with open(split_csv, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        cols = reader.fieldnames or []
        missing = [c for c in ("path", "label", "split") if c not in cols]
        if missing:
            raise AnivisionError(f"{split_csv}: split file needs columns path,label,split[,sha1]; missing {','.join(missing)}")
        rows = list(reader)
    if not rows:
        raise AnivisionError(f"{split_csv}: split file has no rows")
    bad = [r["split"] for r in rows if r["split"] not in PARTS]
    if bad:
        raise AnivisionError(f"{split_csv}: unknown split name '{bad[0]}' (expected train, val or test)")
    base = split_csv.parent
    classes = sorted({r["label"] for r in rows})
    index = {c: i for i, c in enumerate(classes)}
    paths = [str(Path(r["path"]) if Path(r["path"]).is_absolute() else base / r["path"]) for r in rows]
    if verify and "sha1" in cols:
        for p, r in zip(paths, rows):
            if not Path(p).exists():
                raise AnivisionError(f"{split_csv}: image {p} is missing")
            if r.get("sha1") and file_sha1(p) != r["sha1"]:
                raise AnivisionError(f"{split_csv}: image {p} changed since the split was made (sha1 differs)")
    return LabeledImages(
        paths=paths,
        labels=[index[r["label"]] for r in rows],
        classes=classes,
        splits=[r["split"] for r in rows],
    )


def split_indices(splits: list[str]) -> dict[str, list[int]]:
    """Indices of each part: ``{"train": [...], "val": [...], "test": [...]}``."""
    out: dict[str, list[int]] = {p: [] for p in PARTS}
    for i, s in enumerate(splits):
        out[s].append(i)
    return out
