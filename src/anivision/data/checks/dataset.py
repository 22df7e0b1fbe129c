"""Checking a dataset: corrupt files, duplicates, near-duplicates, label conflicts, leakage.

:func:`check_dataset` reads every image once (in worker processes if asked), groups copies of
one picture by sha1 and by perceptual hashes (union-find over near-duplicate pairs), and counts
images per class and split.
"""

from __future__ import annotations

import signal
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from anivision.data.checks.collect import _collect, _inspect, _Inspection
from anivision.data.hashing import (
    DHASH_THRESHOLD,
    MAX_LOCAL_DIFFERENCE,
    MIN_CORRELATION,
    PHASH_THRESHOLD,
    file_sha1,
    near_duplicate_pairs,
)
from anivision.data.splits import PARTS
from anivision.errors import AnivisionError
from anivision.progress import progress_bar

#: Images with a shorter side below this many pixels are listed as tiny.
DEFAULT_MIN_SIZE: int = 32


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


def _ignore_sigint() -> None:
    """Pool worker initialiser: leave SIGINT (Ctrl-C) to the parent process.

    The worker starts with SIGINT blocked (see :func:`_start_pool`): ignore it, then unblock.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _start_pool(workers: int) -> Any:
    """A process pool whose workers never see Ctrl-C, with no race at their start.

    A worker forked before its initializer runs would take a Ctrl-C of the process group as a
    ``KeyboardInterrupt`` and die with its task, leaving ``imap`` waiting for a result that never
    comes. SIGINT is therefore blocked
    while the pool starts (the workers inherit the mask and ignore it before unblocking); a
    Ctrl-C in that window stays pending and reaches the parent as soon as it is unblocked.
    """
    import multiprocessing as mp

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        pool = mp.get_context().Pool(workers, initializer=_ignore_sigint)
    except BaseException:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        raise
    try:
        # Unblocking runs a pending handler at once (CPython checks signals in pthread_sigmask).
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    except KeyboardInterrupt:
        pool.terminate()  # workers ignore SIGINT: without this they would outlive the command
        raise
    return pool


def _map_progress(fn: Any, paths: list[str], workers: int, progress: bool, desc: str) -> Iterable[Any]:
    """``map(fn, paths)`` with a progress bar, in ``workers`` processes when above 1."""
    bar = progress_bar(None, progress, total=len(paths), desc=desc, unit="img", leave=False)
    try:
        if workers > 1 and len(paths) > 256:
            # Workers ignore Ctrl-C: the parent alone stops (and terminates them), so an
            # interrupt prints no worker traceback or "Process ForkPoolWorker" line.
            with _start_pool(workers) as pool:
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
            candidates must also pass the dHash, DCT-correlation and local-difference tests of
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
    for it in progress_bar(items, progress, desc="sha1", unit="img", leave=False):
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
            thumbs=np.stack([inspected[s].thumb for s in good]),
            chroma=np.stack([inspected[s].chroma for s in good]),
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
            "max_local_difference": MAX_LOCAL_DIFFERENCE,
        },
    }
