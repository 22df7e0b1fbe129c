"""``anivision data check``: find what is wrong with an image dataset before training on it.

:func:`check_dataset` reads every image once and reports

* counts per class and per split;
* corrupt files (unreadable, zero bytes, truncated, not an image);
* exact duplicates (same sha1 of the bytes) and near-duplicates (same picture resized,
  re-compressed or lightly cropped; see :mod:`anivision.data.hashing`);
* label conflicts: copies of one picture filed under different classes;
* leakage: copies of one picture in different parts of a split (train / val / test), which
  inflate test scores;
* tiny images, the share of greyscale images, non-image files, empty class folders, and
  split rows whose file is missing, changed since the split was made, or not in the split.

:func:`write_check_report` writes the result as ``check.json`` and a readable ``check.md``.
"""

from __future__ import annotations

import csv
import json
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from PIL import Image
from tqdm import tqdm

from anivision.data.folder import read_manifest, scan_class_folders
from anivision.data.hashing import (
    DHASH_THRESHOLD,
    MIN_CORRELATION,
    PHASH_THRESHOLD,
    file_sha1,
    near_duplicate_pairs,
    perceptual_hashes,
)
from anivision.data.images import load_image
from anivision.data.splits import PARTS, read_split
from anivision.files import atomic_write_text
from anivision.errors import AnivisionError

#: Images with a shorter side below this many pixels are listed as tiny.
DEFAULT_MIN_SIZE: int = 32

# Greyscale test on a 64x64 box-filtered thumbnail: channel spread max(R,G,B) - min(R,G,B).
# JPEG chroma noise on grey pictures stays below ~3 on average; a colour area of 1 % or more of
# the picture lifts the 99th percentile above the limit.
_GREY_MEAN_SPREAD = 2.0
_GREY_P99_SPREAD = 12.0

# How many entries of each list check.md shows; check.json always has everything.
_MD_LIMIT = 50


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
    return _Inspection(None, w, h, grey, hashes.phash, hashes.dhash, hashes.signature)


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
        manifest = read_manifest(root)
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


class _UnionFind:
    """Disjoint sets over ``0..n-1`` with path halving."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _map_progress(fn: Any, paths: list[str], workers: int, progress: bool, desc: str) -> Iterable[Any]:
    """``map(fn, paths)`` with a progress bar, in ``workers`` processes when above 1."""
    bar = tqdm(total=len(paths), desc=desc, unit="img", disable=not progress, leave=False)
    try:
        if workers > 1 and len(paths) > 256:
            import multiprocessing as mp

            with mp.get_context().Pool(workers) as pool:
                for res in pool.imap(fn, paths, chunksize=64):
                    bar.update()
                    yield res
        else:
            for p in paths:
                res = fn(p)
                bar.update()
                yield res
    finally:
        bar.close()


def _sorted_groups(groups: Iterable[list[str]]) -> list[list[str]]:
    return sorted((sorted(g) for g in groups), key=lambda g: (g[0], len(g)))


def check_dataset(
    root: str | Path,
    split_csv: str | Path | None = None,
    min_size: int = DEFAULT_MIN_SIZE,
    near_threshold: int = PHASH_THRESHOLD,
    workers: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Check a dataset for corrupt files, duplicates, label conflicts, leakage and odd images.

    Args:
        root: class-per-folder dataset (``root/<class>/<image>``) or a CSV manifest
            ``path,label[,split]``.
        split_csv: optional split file ``path,label,split,sha1`` (from ``anivision split``);
            relative paths are relative to its folder. Its labels and splits win over folders.
        min_size: images with a shorter side below this (pixels) are listed as tiny.
        near_threshold: largest pHash Hamming distance (of 64 bits) for a near-duplicate;
            candidates must also pass the dHash and DCT-correlation tests of
            :func:`anivision.data.hashing.near_duplicate_pairs`.
        workers: processes decoding and hashing images (1: in this process).
        progress: show tqdm progress bars.

    Returns:
        A JSON-ready dict: ``n_images`` (files checked), ``n_readable``, ``counts``
        (``per_class``, ``per_split``, ``per_class_split``), ``corrupt`` (paths) with
        ``corrupt_reasons`` (path -> problem), ``duplicates``, ``near_duplicates``,
        ``label_conflicts``, ``leakage`` (lists of groups of paths), ``tiny`` (paths),
        ``grayscale_fraction``, ``n_grayscale``, ``ignored`` (non-image files),
        ``empty_classes``, ``split`` (split-file problems, or None), ``files`` (label, split
        and size of every path the lists name), ``settings`` and ``root``.

    Raises:
        AnivisionError: ``root`` or ``split_csv`` is missing or malformed, or holds no images.
    """
    root = Path(root)
    if not root.exists():
        raise AnivisionError(f"{root}: no such folder")
    if min_size < 0:
        raise AnivisionError(f"--min-size must be 0 or more, got {min_size}")
    if not 0 <= near_threshold <= 64:
        raise AnivisionError(f"--near-threshold must be between 0 and 64 bits, got {near_threshold}")
    split_path = Path(split_csv) if split_csv is not None else None
    if split_path is not None and not split_path.is_file():
        raise AnivisionError(f"{split_path}: no such split file")
    items, info = _collect(root, split_path)
    if not items:
        raise AnivisionError(f"{root}: no images to check")

    # Content hashes first: identical files are decoded once, and a read error is a finding.
    sha1s: list[str | None] = []
    read_errors: dict[str, str] = {}
    seen: dict[str, str | None] = {}
    for it in tqdm(items, desc="sha1", unit="img", disable=not progress, leave=False):
        if it.key not in seen:
            try:
                seen[it.key] = file_sha1(it.path)
            except OSError as exc:
                seen[it.key] = None
                read_errors[it.key] = f"cannot read ({exc.strerror or exc})"
        sha1s.append(seen[it.key])
    contents = sorted({s for s in sha1s if s is not None})
    first_path: dict[str, str] = {}
    for it, s in zip(items, sha1s):
        if s is not None:
            first_path.setdefault(s, it.path)
    decoded = _map_progress(_inspect, [first_path[s] for s in contents], workers, progress, "decode+hash")
    inspected: dict[str, _Inspection] = dict(zip(contents, decoded))

    # Per item: corrupt or readable.
    corrupt: dict[str, str] = {}
    readable: list[int] = []
    found: dict[int, _Inspection] = {}  # item index -> what its (readable) content is
    for i, (it, s) in enumerate(zip(items, sha1s)):
        if s is None:
            corrupt[it.path] = read_errors[it.key]
        elif inspected[s].error is not None:
            corrupt[it.path] = inspected[s].error or "unreadable"
        else:
            readable.append(i)
            found[i] = inspected[s]

    # Near-duplicate pairs among distinct readable contents, then groups by union-find.
    good = [s for s in contents if inspected[s].error is None]
    index = {s: u for u, s in enumerate(good)}
    uf = _UnionFind(len(good))
    if len(good) >= 2:
        pairs, _ = near_duplicate_pairs(
            np.stack([inspected[s].phash for s in good]),
            np.stack([inspected[s].dhash for s in good]),
            np.stack([inspected[s].signature for s in good]),
            phash_threshold=near_threshold,
        )
        for a, b in pairs.tolist():
            uf.union(a, b)
    by_content: dict[str | None, list[int]] = defaultdict(list)
    for i in readable:
        by_content[sha1s[i]].append(i)
    by_root: dict[int, list[str]] = defaultdict(list)  # component -> its distinct contents
    for s in good:
        by_root[uf.find(index[s])].append(s)

    duplicates = [[items[i].path for i in members] for members in by_content.values() if len(members) >= 2]
    near, conflicts, leakage = [], [], []
    for comp in by_root.values():
        members = [i for s in comp for i in by_content[s]]
        if len(members) < 2:
            continue
        paths = [items[i].path for i in members]
        if len(comp) >= 2:
            near.append(paths)
        if len({items[i].label for i in members}) >= 2:
            conflicts.append(paths)
        if len({items[i].split for i in members if items[i].split is not None}) >= 2:
            leakage.append(paths)

    classes = sorted({it.label for it in items})
    has_split = any(it.split is not None for it in items)
    per_class = {c: 0 for c in classes}
    per_class_split = {c: {p: 0 for p in PARTS} for c in classes} if has_split else {}
    per_split = {p: 0 for p in PARTS} if has_split else {}
    for i in readable:
        it = items[i]
        per_class[it.label] += 1
        if has_split and it.split is not None:
            per_split[it.split] += 1
            per_class_split[it.label][it.split] += 1
    if has_split:
        per_split["unassigned"] = sum(1 for i in readable if items[i].split is None)

    tiny = [items[i].path for i in readable if min(found[i].width, found[i].height) < min_size]
    n_grey = sum(1 for i in readable if found[i].grey)

    split_info = info.get("split")
    if split_info is not None:
        expected = info["split_expected_sha1"]
        split_info["changed"] = sorted(
            it.path for it, s in zip(items, sha1s) if it.path in expected and s is not None and s != expected[it.path]
        )

    listed = set(corrupt) | set(tiny)
    for group in duplicates + near + conflicts + leakage:
        listed.update(group)
    files: dict[str, dict[str, Any]] = {}
    for i, it in enumerate(items):
        if it.path in listed:
            size = [found[i].width, found[i].height] if i in found else None
            files[it.path] = {"label": it.label, "split": it.split, "size": size}

    return {
        "root": str(root),
        "n_images": len(items),
        "n_readable": len(readable),
        "classes": classes,
        "counts": {"per_class": per_class, "per_split": per_split, "per_class_split": per_class_split},
        "corrupt": sorted(corrupt),
        "corrupt_reasons": dict(sorted(corrupt.items())),
        "duplicates": _sorted_groups(duplicates),
        "near_duplicates": _sorted_groups(near),
        "label_conflicts": _sorted_groups(conflicts),
        "leakage": _sorted_groups(leakage),
        "tiny": sorted(tiny),
        "n_grayscale": n_grey,
        "grayscale_fraction": n_grey / len(readable) if readable else 0.0,
        "ignored": sorted(info["ignored"]),
        "empty_classes": info["empty_classes"],
        "split": split_info,
        "files": dict(sorted(files.items())),
        "settings": {
            "min_size": min_size,
            "phash_threshold": near_threshold,
            "dhash_threshold": DHASH_THRESHOLD,
            "min_correlation": MIN_CORRELATION,
        },
    }


# ------------------------------------------------------------------------------ report


def has_blocking_problems(result: dict[str, Any]) -> bool:
    """True when the result shows leakage or label conflicts (what ``--strict`` fails on)."""
    return bool(result["leakage"] or result["label_conflicts"])


def _cell(text: Any) -> str:
    """A Markdown table cell: pipes escaped, newlines flattened."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _short(path: str, root: str) -> str:
    """``path`` relative to the dataset root when it lies inside it (shorter tables)."""
    try:
        rel = os.path.relpath(path, root)
    except ValueError:  # other drive on Windows
        return path
    return path if rel.startswith("..") else rel


def _group_section(title: str, why: str, groups: list[list[str]], result: dict[str, Any]) -> list[str]:
    lines = [f"## {title} ({len(groups)} group{'s' if len(groups) != 1 else ''})", "", why, ""]
    if not groups:
        return lines + ["None.", ""]
    files, root = result["files"], result["root"]
    lines += ["| group | file | class | split | size |", "|---:|---|---|---|---|"]
    for g, group in enumerate(groups[:_MD_LIMIT], start=1):
        for path in group:
            f = files.get(path, {})
            size = "x".join(map(str, f["size"])) if f.get("size") else ""
            lines.append(f"| {g} | {_cell(_short(path, root))} | {_cell(f.get('label', ''))} | {f.get('split') or ''} | {size} |")
    if len(groups) > _MD_LIMIT:
        lines.append(f"\n... {len(groups) - _MD_LIMIT} more group(s) in check.json.")
    return lines + [""]


def _list_section(
    title: str, paths: list[str], root: str, extra: dict[str, str] | None = None, level: int = 2
) -> list[str]:
    lines = [f"{'#' * level} {title} ({len(paths)})", ""]
    if not paths:
        return lines + ["None.", ""]
    for p in paths[:_MD_LIMIT]:
        lines.append(f"- `{_short(p, root)}`" + (f": {extra[p]}" if extra and p in extra else ""))
    if len(paths) > _MD_LIMIT:
        lines.append(f"- ... {len(paths) - _MD_LIMIT} more in check.json")
    return lines + [""]


def render_markdown(result: dict[str, Any]) -> str:
    """The human-readable report of a :func:`check_dataset` result."""
    root = result["root"]
    n_conf, n_leak = len(result["label_conflicts"]), len(result["leakage"])
    verdict = "**Blocking problems**: leakage or label conflicts found (`--strict` fails)." if (
        n_conf or n_leak
    ) else "No leakage and no label conflicts."
    s = result["settings"]
    lines = [
        f"# Data check: `{root}`",
        "",
        verdict,
        "",
        "| check | result |",
        "|---|---:|",
        f"| image files | {result['n_images']} |",
        f"| readable | {result['n_readable']} |",
        f"| corrupt | {len(result['corrupt'])} |",
        f"| exact-duplicate groups | {len(result['duplicates'])} |",
        f"| near-duplicate groups | {len(result['near_duplicates'])} |",
        f"| label conflicts | {n_conf} |",
        f"| leakage across splits | {n_leak} |",
        f"| tiny (< {s['min_size']} px) | {len(result['tiny'])} |",
        f"| greyscale | {result['n_grayscale']} ({100 * result['grayscale_fraction']:.1f}%) |",
        f"| non-image files | {len(result['ignored'])} |",
        "",
        "## Counts",
        "",
    ]
    counts = result["counts"]
    if counts["per_class_split"]:
        lines += ["| class | images | train | val | test |", "|---|---:|---:|---:|---:|"]
        for c, n in counts["per_class"].items():
            ps = counts["per_class_split"][c]
            lines.append(f"| {_cell(c)} | {n} | {ps['train']} | {ps['val']} | {ps['test']} |")
        ps = counts["per_split"]
        lines.append(f"| **all** | **{result['n_readable']}** | {ps['train']} | {ps['val']} | {ps['test']} |")
        if ps.get("unassigned"):
            lines.append(f"\n{ps['unassigned']} readable image(s) are in no split.")
    else:
        lines += ["| class | images |", "|---|---:|"]
        lines += [f"| {_cell(c)} | {n} |" for c, n in counts["per_class"].items()]
        lines.append(f"| **all** | **{result['n_readable']}** |")
    if result["empty_classes"]:
        lines.append(f"\nEmpty class folders: {', '.join(result['empty_classes'])}.")
    lines.append("")
    lines += _list_section("Corrupt files", result["corrupt"], root, result["corrupt_reasons"])
    lines += _group_section(
        "Leakage", "Copies of one picture (exact or near) in different split parts: test scores will be too high.",
        result["leakage"], result,
    )
    lines += _group_section(
        "Label conflicts", "Copies of one picture (exact or near) filed under different classes.",
        result["label_conflicts"], result,
    )
    lines += _group_section("Exact duplicates", "Byte-identical files (same sha1).", result["duplicates"], result)
    lines += _group_section(
        "Near duplicates",
        f"The same picture resized, re-compressed or lightly cropped (pHash <= {s['phash_threshold']} bits, "
        f"dHash <= {s['dhash_threshold']} bits, DCT correlation >= {s['min_correlation']}). "
        "Groups may also hold byte-identical copies.",
        result["near_duplicates"], result,
    )
    sizes = {p: "x".join(map(str, f["size"])) for p, f in result["files"].items() if f.get("size")}
    lines += _list_section(f"Tiny images, shorter side < {s['min_size']} px", result["tiny"], root, sizes)
    split = result.get("split")
    if split:
        checks = (
            ("Rows whose file is missing", "missing"),
            ("Changed since the split was made (sha1 differs)", "changed"),
            ("Folder class differs from the split's label", "label_mismatch"),
            ("In the folder but in no split", "unassigned"),
        )
        lines += [f"## Split file `{split['csv']}`", ""]
        lines += [f"- {title.lower()}: {len(split[key])}" for title, key in checks] + [""]
        for title, key in checks:
            if split[key]:
                lines += _list_section(title, split[key], root, level=3)
    if result["ignored"]:
        lines += _list_section("Non-image files (ignored)", result["ignored"], root)
    return "\n".join(lines).rstrip() + "\n"


def write_check_report(result: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``check.md`` and ``check.json`` into ``out_dir`` (created if needed).

    Args:
        result: the dict :func:`check_dataset` returns.
        out_dir: report folder.

    Returns:
        ``(md_path, json_path)``.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise AnivisionError(f"{out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    md_path, json_path = out / "check.md", out / "check.json"
    atomic_write_text(json_path, json.dumps(result, indent=2) + "\n")
    atomic_write_text(md_path, render_markdown(result))
    return md_path, json_path
