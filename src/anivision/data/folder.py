"""Labelled image collections: class-per-folder trees and CSV manifests."""

from __future__ import annotations

import csv
import glob
import logging
from dataclasses import dataclass, field
from pathlib import Path

from anivision.data.images import IMAGE_EXTENSIONS, is_image_file
from anivision.errors import AnivisionError

log = logging.getLogger(__name__)


@dataclass
class LabeledImages:
    """A list of image files with integer labels.

    Attributes:
        paths: image file paths (strings, as given or found).
        labels: class index of each path, ``0 <= label < len(classes)``.
        classes: class names; ``classes[label]`` is the name of a label.
        splits: optional split name per path (``train``/``val``/``test``) from a manifest.
        ignored: files found in class folders that are not images (listed, never silently lost).
    """

    paths: list[str]
    labels: list[int]
    classes: list[str]
    splits: list[str] | None = None
    ignored: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: list[int]) -> "LabeledImages":
        """Return the images at ``indices`` with the same class list."""
        return LabeledImages(
            paths=[self.paths[i] for i in indices],
            labels=[self.labels[i] for i in indices],
            classes=list(self.classes),
            splits=[self.splits[i] for i in indices] if self.splits is not None else None,
        )

    def class_counts(self) -> dict[str, int]:
        """Number of images per class name, in class order."""
        counts = {c: 0 for c in self.classes}
        for y in self.labels:
            counts[self.classes[y]] += 1
        return counts


def scan_class_folders(root: str | Path, allow_empty_classes: bool = False) -> LabeledImages:
    """Index a class-per-folder dataset: ``root/<class>/<image>``.

    Images may sit in nested folders below a class folder. Classes are sorted by name.

    Args:
        root: dataset folder.
        allow_empty_classes: keep class folders that hold no image (else an error).

    Returns:
        The indexed images; ``ignored`` lists non-image files found.

    Raises:
        AnivisionError: ``root`` is missing or not a folder, has no class folders, a class
            folder holds no image, or there are no images at all.
    """
    root = Path(root)
    if not root.exists():
        raise AnivisionError(f"{root}: no such folder")
    if not root.is_dir():
        raise AnivisionError(f"{root}: not a folder (expected one sub-folder per class, or a .csv manifest)")
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise AnivisionError(f"{root}: no class sub-folders (expected {root}/<class>/<image>)")
    paths: list[str] = []
    labels: list[int] = []
    classes: list[str] = []
    ignored: list[str] = []
    for d in class_dirs:
        files = sorted(f for f in d.rglob("*") if f.is_file() and not f.name.startswith("."))
        imgs = [f for f in files if is_image_file(f)]
        ignored.extend(str(f) for f in files if not is_image_file(f))
        if not imgs:
            if allow_empty_classes:
                continue
            raise AnivisionError(f"{d}: class folder has no images (looked for {', '.join(IMAGE_EXTENSIONS)})")
        label = len(classes)
        classes.append(d.name)
        paths.extend(str(f) for f in imgs)
        labels.extend([label] * len(imgs))
    if not paths:
        raise AnivisionError(f"{root}: empty dataset, no images found")
    if ignored:
        log.warning("%s: ignored %d non-image file(s), e.g. %s", root, len(ignored), ignored[0])
    return LabeledImages(paths=paths, labels=labels, classes=classes, ignored=ignored)


def read_manifest(csv_path: str | Path) -> LabeledImages:
    """Read a CSV manifest with columns ``path,label[,split]``.

    Relative paths are resolved against the CSV's folder. Classes are sorted by name.

    Raises:
        AnivisionError: missing file, missing columns, or no rows.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise AnivisionError(f"{csv_path}: no such manifest file")
    with open(csv_path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        cols = reader.fieldnames or []
        if "path" not in cols or "label" not in cols:
            raise AnivisionError(f"{csv_path}: manifest needs columns path,label[,split]; found {','.join(cols) or 'none'}")
        rows = list(reader)
    if not rows:
        raise AnivisionError(f"{csv_path}: manifest has no rows")
    base = csv_path.parent
    classes = sorted({r["label"] for r in rows})
    index = {c: i for i, c in enumerate(classes)}
    paths = [str(p if Path(p).is_absolute() else base / p) for p in (r["path"] for r in rows)]
    has_split = "split" in cols and all(r.get("split") for r in rows)
    return LabeledImages(
        paths=paths,
        labels=[index[r["label"]] for r in rows],
        classes=classes,
        splits=[r["split"] for r in rows] if has_split else None,
    )


def load_labeled(data: str | Path) -> LabeledImages:
    """Index ``data``: a class-per-folder tree, or a ``.csv`` manifest."""
    p = Path(data)
    if p.suffix.lower() == ".csv":
        return read_manifest(p)
    return scan_class_folders(p)


def expand_inputs(inputs: list[str]) -> list[str]:
    """Files, folders (recursively, image files only) and glob patterns -> sorted unique paths.

    Raises:
        AnivisionError: an input matches nothing.
    """
    out: list[str] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(str(f) for f in p.rglob("*") if f.is_file() and is_image_file(f))
            if not found:
                raise AnivisionError(f"{p}: folder has no images")
            out.extend(found)
        elif p.exists():
            out.append(str(p))
        else:
            matches = sorted(m for m in glob.glob(item, recursive=True) if Path(m).is_file())
            if not matches:
                raise AnivisionError(f"{item}: no such file, folder or pattern match")
            out.extend(matches)
    return list(dict.fromkeys(out))
