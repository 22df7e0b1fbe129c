"""Labelled image collections: class-per-folder trees and CSV manifests; where data lies.

Where data lies: a run records the paths it was given as absolute paths
(:func:`absolute_path`), so that it works from any working directory, and finds its images
under a *data root* (:func:`data_root`: a dataset folder itself, or a CSV manifest's folder;
:func:`common_root` when there is no such folder). When data moves, the run is told the new
root and finds each image at the same place relative to it. :func:`~anivision.files.same_location` is the
same-run rule for such a path.
"""

from __future__ import annotations

import csv
import glob
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from anivision.data.images import IMAGE_EXTENSIONS, is_image_file
from anivision.errors import AnivisionError
from anivision.files import absolute_path

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
        sha1s: the sha1 of each file's bytes, when known (a split file records them).
        unreadable: image files found that cannot be read at all, with the reason (a dangling
            symbolic link): listed with the images a run skips, never silently lost.
    """

    paths: list[str]
    labels: list[int]
    classes: list[str]
    splits: list[str] | None = None
    ignored: list[str] = field(default_factory=list)
    sha1s: list[str] | None = None
    unreadable: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: list[int]) -> "LabeledImages":
        """Return the images at ``indices`` with the same class list."""
        return LabeledImages(
            paths=[self.paths[i] for i in indices],
            labels=[self.labels[i] for i in indices],
            classes=list(self.classes),
            splits=[self.splits[i] for i in indices] if self.splits is not None else None,
            sha1s=[self.sha1s[i] for i in indices] if self.sha1s is not None else None,
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
    unreadable: dict[str, str] = {}
    for d in class_dirs:
        found = sorted(f for f in d.rglob("*") if not f.name.startswith("."))
        files = [f for f in found if f.is_file()]
        imgs = [f for f in files if is_image_file(f)]
        ignored.extend(str(f) for f in files if not is_image_file(f))
        for f in found:  # a link whose target is gone is neither a file nor a folder: list it
            if f.is_symlink() and not f.exists():
                unreadable[str(f)] = f"{f}: dangling symbolic link (to {os.readlink(f)})"
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
    if unreadable:
        log.warning("skipping %d dangling symbolic link(s):", len(unreadable))
        for msg in list(unreadable.values())[:20]:
            log.warning("  %s", msg)
    return LabeledImages(paths=paths, labels=labels, classes=classes, ignored=ignored, unreadable=unreadable)


def read_manifest(csv_path: str | Path, allow_duplicates: bool = False) -> LabeledImages:
    """Read a CSV manifest with columns ``path,label[,split]``.

    Relative paths are resolved against the CSV's folder. Classes are sorted by name.

    Args:
        allow_duplicates: accept an image listed twice (``anivision data check`` reports such
            rows as label conflicts and leakage instead of refusing them).

    Raises:
        AnivisionError: missing file, missing columns, no rows, an image listed twice, or one
            blank cell in a split column.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise AnivisionError(f"{csv_path}: no such manifest file")
    cols, rows, lines = read_csv_rows(csv_path, "manifest")
    if "path" not in cols or "label" not in cols:
        raise AnivisionError(f"{csv_path}: manifest needs columns path,label[,split]; found {','.join(cols) or 'none'}")
    if not rows:
        raise AnivisionError(f"{csv_path}: manifest has no rows")
    short = next((n for r, n in zip(rows, lines) if not (r.get("path") or "").strip() or not (r.get("label") or "").strip()), None)
    if short is not None:
        raise AnivisionError(f"{csv_path}: line {short} has no path or no label")
    base = csv_path.parent
    classes = sorted({r["label"] for r in rows})
    index = {c: i for i, c in enumerate(classes)}
    paths = [str(p if Path(p).is_absolute() else base / p) for p in (r["path"] for r in rows)]
    if not allow_duplicates:
        check_unique_rows(csv_path, paths, lines)
    # A split column is used whole or not at all: one blank cell is an error, not a silent
    # fresh split (an entirely blank column means no split).
    has_split = "split" in cols and any((r.get("split") or "").strip() for r in rows)
    if has_split:
        blank = next((n for r, n in zip(rows, lines) if not (r.get("split") or "").strip()), None)
        if blank is not None:
            raise AnivisionError(f"{csv_path}: line {blank} has no split (every row needs train, val or test, or leave the whole column empty)")
        check_split_names(csv_path, [r["split"] for r in rows], lines)
    return LabeledImages(
        paths=paths,
        labels=[index[r["label"]] for r in rows],
        classes=classes,
        splits=[r["split"] for r in rows] if has_split else None,
    )


def read_csv_rows(csv_path: Path, what: str) -> tuple[list[str], list[dict[str, str]], list[int]]:
    """The columns, rows and each row's line number of a UTF-8 CSV file.

    Raises:
        AnivisionError: the file is not UTF-8 text (naming the line), or not CSV.
    """
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            cols = list(reader.fieldnames or [])
            rows, lines = [], []
            for r in reader:
                rows.append(r)
                lines.append(reader.line_num)
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1 if isinstance(exc.object, bytes) else "?"
        raise AnivisionError(
            f"{csv_path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} near line {line}); save the {what} as UTF-8"
        ) from None
    except csv.Error as exc:
        raise AnivisionError(f"{csv_path}: not a readable CSV {what} ({exc})") from None
    return cols, rows, lines


#: The split names a manifest or split file may use.
SPLIT_NAMES = ("train", "val", "test")


def check_split_names(csv_path: str | Path, splits: list[str], lines: list[int]) -> None:
    """Refuse a split cell other than train, val or test (``TEST``, ``valid``), naming its line."""
    for s, n in zip(splits, lines):
        if s not in SPLIT_NAMES:
            raise AnivisionError(f"{csv_path}: line {n}: unknown split name '{s}' (expected train, val or test)")


def check_files_exist(csv_path: str | Path, paths: list[str]) -> None:
    """Refuse a manifest that lists images which are not there, naming the first and the count."""
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise AnivisionError(f"{csv_path}: image {missing[0]} does not exist{more}; fix the manifest's paths (relative ones are read from its folder)")


def check_unique_rows(csv_path: str | Path, paths: list[str], lines: list[int]) -> None:
    """Refuse a CSV that lists one image twice (it could land in both train and test).

    Args:
        csv_path: the file (for the message).
        paths: each row's image path, resolved.
        lines: each row's line number in the file (the header is line 1).

    Raises:
        AnivisionError: naming the repeated row and the row it repeats.
    """
    first: dict[str, int] = {}
    for p, n in zip(paths, lines):
        key = absolute_path(p)
        if key in first:
            raise AnivisionError(f"{csv_path}: line {n} repeats the image of line {first[key]} ({p})")
        first[key] = n


def load_labeled(data: str | Path) -> LabeledImages:
    """Index ``data``: a class-per-folder tree, or a ``.csv`` manifest."""
    p = Path(data)
    if p.suffix.lower() == ".csv":
        images = read_manifest(p)
        check_files_exist(p, images.paths)
        return images
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


# ---------------------------------------------------------------------------- where data lies


def data_root(data: str | Path) -> str:
    """The folder images of ``data`` are found under: a dataset folder itself, or a manifest's folder."""
    p = absolute_path(data)
    return os.path.dirname(p) if p.lower().endswith(".csv") else p


def common_root(paths: list[str]) -> str:
    """The deepest folder holding every file of ``paths`` (absolute)."""
    absolute = [absolute_path(p) for p in paths]
    if not absolute:
        raise ValueError("common_root of no paths")
    if len(set(absolute)) == 1:
        return os.path.dirname(absolute[0])
    try:
        return os.path.commonpath(absolute)
    except ValueError:  # different drives (Windows): no common folder
        return os.path.dirname(absolute[0])


def images_root(paths: list[str], data: str | Path | None = None) -> str:
    """The data root a run records for ``paths``: ``data``'s root when every image lies under
    it, else the images' common folder."""
    if data:
        root = data_root(data)
        if all(absolute_path(p).startswith(root.rstrip(os.sep) + os.sep) for p in paths):
            return root
    return common_root(paths)


def reroot(path: str, old_root: str, new_root: str) -> str:
    """``path`` moved from under ``old_root`` to the same place under ``new_root``."""
    return os.path.join(absolute_path(new_root), os.path.relpath(absolute_path(path), absolute_path(old_root)))
