"""Reading a face-box folder: ``boxes.csv`` (image,x,y,w,h), optional ``images.csv`` and the images.

The layout is that of ``face-boxes``::

    DIR/boxes.csv     image,x,y,w,h           one row per face, pixels of the image
    DIR/images.csv    image,split[,...]       optional: every image (faceless ones too) and its split
    DIR/images/       the image files (or directly in DIR)

Without ``images.csv`` every image in ``DIR/images`` (or named in ``boxes.csv``) is used and has
no split. Images without a box are negatives, not errors. Problems the user should know about
(zero-size boxes, boxes outside the image, listed images whose file is missing) are logged as
one-line warnings with their line number and counted in :attr:`FaceBoxes.problems`; nothing is
dropped silently. A missing file or column is an :class:`~anivision.errors.AnivisionError`.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from anivision.data.images import is_image_file
from anivision.errors import AnivisionError

log = logging.getLogger(__name__)

BOX_COLUMNS = ("image", "x", "y", "w", "h")
#: Split names that select everything.
ALL_SPLITS = ("all", "")


@dataclass
class FaceImage:
    """One image and its face boxes (x0, y0, x1, y1 in its pixels; (0, 4) for a negative)."""

    name: str
    path: Path
    boxes: np.ndarray
    split: str = ""


@dataclass
class FaceBoxes:
    """The images of one split and what was wrong with the folder (kind -> count)."""

    root: Path
    images: list[FaceImage]
    problems: dict[str, int] = field(default_factory=dict)

    @property
    def n_faces(self) -> int:
        return int(sum(len(i.boxes) for i in self.images))

    @property
    def n_negatives(self) -> int:
        return sum(1 for i in self.images if len(i.boxes) == 0)


def _read_csv(path: Path, required: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            cols = [c.strip() for c in (reader.fieldnames or [])]
            missing = [c for c in required if c not in cols]
            if missing:
                raise AnivisionError(f"{path}: missing column(s) {', '.join(missing)} (needs {','.join(required)}; has {','.join(cols) or 'nothing'})")
            return [(i + 2, {(k or "").strip(): (v or "").strip() for k, v in row.items()}) for i, row in enumerate(reader)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise AnivisionError(f"{path}: cannot read it as CSV ({exc})") from exc


def _image_path(root: Path, name: str) -> Path:
    for p in (root / "images" / name, root / name):
        if p.is_file():
            return p
    return root / "images" / name


def _image_size(path: Path) -> tuple[int, int] | None:
    try:
        with Image.open(path) as im:
            return im.size
    except Exception:  # noqa: BLE001 - unreadable files are reported by the caller
        return None


class _Problems:
    """Counts and logs each kind of problem (the first few lines of each kind in full)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def __call__(self, kind: str, msg: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if self.counts[kind] <= 5:
            log.warning("%s", msg)
        elif self.counts[kind] == 6:
            log.warning("... more %s (counted in the summary)", kind)


def _parse_box(path: Path, line: int, row: dict[str, str]) -> tuple[float, float, float, float]:
    try:
        x, y, w, h = (float(row[k]) for k in ("x", "y", "w", "h"))
    except ValueError:
        raise AnivisionError(f"{path}: line {line}: x,y,w,h must be numbers, got {row['x']},{row['y']},{row['w']},{row['h']}") from None
    if not all(np.isfinite(v) for v in (x, y, w, h)):
        raise AnivisionError(f"{path}: line {line}: x,y,w,h must be finite numbers")
    return x, y, w, h


def _check_box(box: tuple[float, float, float, float], size: tuple[int, int], where: str, report: _Problems) -> tuple[float, ...] | None:
    """The box as x0, y0, x1, y1 inside the image, or None (reported) when it cannot be one."""
    x, y, w, h = box
    if w <= 0 or h <= 0:
        report("zero-size boxes", f"{where}: box {w:g}x{h:g} has zero size; skipped")
        return None
    W, H = size
    x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + w, float(W)), min(y + h, float(H))
    if x1 - x0 < 1 or y1 - y0 < 1:
        report("boxes outside the image", f"{where}: box ({x:g},{y:g},{w:g},{h:g}) lies outside the {W}x{H} image; skipped")
        return None
    if (x0, y0, x1, y1) != (x, y, x + w, y + h):
        report("boxes cut at the image border", f"{where}: box ({x:g},{y:g},{w:g},{h:g}) reaches outside the {W}x{H} image; cut at its border")
    return x0, y0, x1, y1


def _list_images(root: Path, boxes_csv: Path, box_rows: list[tuple[int, dict[str, str]]]) -> dict[str, str]:
    """image name -> split, from ``images.csv`` or the folder."""
    images_csv = root / "images.csv"
    if images_csv.is_file():
        splits: dict[str, str] = {}
        for line, row in _read_csv(images_csv, ("image",)):
            if row["image"] in splits:
                raise AnivisionError(f"{images_csv}: line {line}: image {row['image']} is listed twice")
            splits[row["image"]] = row.get("split", "")
        return splits
    folder = root / "images" if (root / "images").is_dir() else root
    names = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and is_image_file(p)}
    names |= {row["image"] for _, row in box_rows}
    return {n: "" for n in sorted(names)}


def read_face_boxes(root: str | Path, split: str = "all") -> FaceBoxes:
    """The images of ``split`` under ``root`` with their boxes (see the module docstring).

    Args:
        root: the folder holding ``boxes.csv``.
        split: a value of ``images.csv``'s ``split`` column, or ``all``.

    Raises:
        AnivisionError: no folder or ``boxes.csv``, a missing column, a non-numeric box, an
            unknown split, or no readable image in the split.
    """
    root = Path(root)
    boxes_csv = root / "boxes.csv"
    if not root.is_dir():
        raise AnivisionError(f"{root}: no such folder (expected boxes.csv, images.csv and images/ inside)")
    if not boxes_csv.is_file():
        raise AnivisionError(f"{boxes_csv}: no such file (expected a CSV with columns {','.join(BOX_COLUMNS)})")
    box_rows = _read_csv(boxes_csv, BOX_COLUMNS)
    splits = _list_images(root, boxes_csv, box_rows)
    if split not in ALL_SPLITS:
        known = sorted({s for s in splits.values() if s})
        if split not in known:
            has = f"it has {', '.join(known)}" if known else "it has no split column"
            raise AnivisionError(f"--split {split}: no image of {root / 'images.csv'} is in that split ({has}; or use --split all)")
    report = _Problems()
    by_image: dict[str, list[tuple[int, tuple[float, float, float, float]]]] = {}
    for line, row in box_rows:
        box = _parse_box(boxes_csv, line, row)
        if row["image"] not in splits:
            report("boxes of unlisted images", f"{boxes_csv}: line {line}: image {row['image']} is not in images.csv; box skipped")
            continue
        by_image.setdefault(row["image"], []).append((line, box))
    images = []
    for name, s in splits.items():
        if split not in ALL_SPLITS and s != split:
            continue
        path = _image_path(root, name)
        size = _image_size(path) if path.is_file() else None
        if size is None:
            why = "missing" if not path.is_file() else "unreadable"
            report(f"{why} images", f"{path}: listed but {why}; skipped with its {len(by_image.get(name, []))} box(es)")
            continue
        kept = [b for line, raw in by_image.get(name, []) if (b := _check_box(raw, size, f"{boxes_csv}: line {line}", report))]
        images.append(FaceImage(name, path, np.array(kept, np.float32).reshape(-1, 4), s))
    if not images:
        raise AnivisionError(f"{root}: no readable image in split '{split}'")
    data = FaceBoxes(root, images, dict(report.counts))
    log.info("%s: %d image(s) (%d without a face), %d face(s)", root, len(images), data.n_negatives, data.n_faces)
    return data
