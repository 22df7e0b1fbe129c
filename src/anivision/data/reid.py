"""Style re-identification data: ``work/role`` image trees, CSV manifests and the cross-role protocol.

LSASRD-style data is a two-level tree, ``ROOT/<work>/<role>/<image>``: a *work* (an anime, a
rendering style) holds several *roles* (characters), each with several images. The task is to
tell, from images of *different* roles, whether they come from the same work, so the label that
is retrieved is the work and the role is what must not leak between query and gallery.

The protocol (LSASRD, section 4 of ``PAPERS.md``):

- k-fold cross-validation by work: the works are shuffled once (seeded) and dealt into ``k``
  folds; in fold ``i`` the works of fold ``i`` are test works and all other works train.
- Inside the test works, each work's roles are split into query roles (``query_ratio``, 40% by
  default: LSASRD has 293 query roles of 732) and gallery roles, so no role is ever on both
  sides. A work with a single role cannot be split; it is excluded from the test set of its fold
  and counted, never silently dropped.

Roles are identified by ``(work, role)`` because two works may both have a role called
``"main"``.
"""

from __future__ import annotations

import csv
import logging
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from anivision.data.images import is_image_file
from anivision.errors import AnivisionError

log = logging.getLogger(__name__)

#: Default fraction of each test work's roles that go to the query side.
DEFAULT_QUERY_RATIO = 0.4
#: Default number of folds (LSASRD: 5 folds of 38 works).
DEFAULT_FOLDS = 5


@dataclass
class ReidImages:
    """Images with a work (the retrieved label) and a role (the identity kept apart) each.

    Attributes:
        paths: image files.
        works: work name of each image.
        roles: role name of each image (unique only within its work).
        ignored: files that were found but not used (non-images, images outside a role folder).
    """

    paths: list[str]
    works: list[str]
    roles: list[str]
    ignored: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not (len(self.paths) == len(self.works) == len(self.roles)):
            raise ValueError("paths, works and roles must have the same length")

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def work_names(self) -> list[str]:
        """Sorted distinct work names."""
        return sorted(set(self.works))

    def work_ids(self, work_names: list[str] | None = None) -> np.ndarray:
        """(N,) int64 index of each image's work in ``work_names`` (default: all works, sorted); -1 if absent."""
        names = work_names if work_names is not None else self.work_names
        lut = {w: i for i, w in enumerate(names)}
        return np.array([lut.get(w, -1) for w in self.works], dtype=np.int64)

    def role_keys(self) -> list[tuple[str, str]]:
        """``(work, role)`` of each image: the global identity of its role."""
        return list(zip(self.works, self.roles))

    def roles_per_work(self) -> dict[str, list[str]]:
        """Sorted role names of every work, works in sorted order."""
        out: dict[str, set[str]] = {}
        for w, r in zip(self.works, self.roles):
            out.setdefault(w, set()).add(r)
        return {w: sorted(out[w]) for w in sorted(out)}

    def work_counts(self) -> dict[str, dict[str, int]]:
        """``{work: {"roles": n_roles, "images": n_images}}``, works sorted."""
        images = Counter(self.works)
        return {w: {"roles": len(rs), "images": images[w]} for w, rs in self.roles_per_work().items()}

    def role_counts(self) -> dict[str, int]:
        """``{"work/role": n_images}``, sorted."""
        c = Counter(f"{w}/{r}" for w, r in zip(self.works, self.roles))
        return dict(sorted(c.items()))

    def subset(self, indices: list[int] | np.ndarray) -> "ReidImages":
        """The images at ``indices``, in that order."""
        idx = [int(i) for i in indices]
        return ReidImages([self.paths[i] for i in idx], [self.works[i] for i in idx], [self.roles[i] for i in idx])


def summarize(data: ReidImages, max_works: int = 30) -> str:
    """A human-readable summary: totals, then images and roles per work, then role-size spread."""
    wc = data.work_counts()
    rc = list(data.role_counts().values())
    lines = [
        f"{len(data)} images, {len(wc)} works, {len(rc)} roles"
        + (f"; {len(data.ignored)} file(s) ignored" if data.ignored else ""),
        f"images per role: min {min(rc)}, median {int(np.median(rc))}, max {max(rc)}",
        f"{'work':<32} {'roles':>6} {'images':>7}",
    ]
    for i, (w, c) in enumerate(wc.items()):
        if i == max_works:
            lines.append(f"... and {len(wc) - max_works} more works")
            break
        lines.append(f"{w:<32} {c['roles']:>6} {c['images']:>7}")
    single = [w for w, c in wc.items() if c["roles"] < 2]
    if single:
        lines.append(f"{len(single)} work(s) with a single role (cannot be split into query/gallery): {', '.join(single[:10])}")
    return "\n".join(lines)


def scan_reid_tree(root: str | Path, strict: bool = True) -> ReidImages:
    """Index ``root/<work>/<role>/<image>`` (images may sit deeper below a role folder).

    Args:
        root: dataset folder.
        strict: when True, images directly inside a work folder (no role) are ignored and listed;
            when False (search galleries) they get the role ``"-"``, and images directly inside
            ``root`` get the work ``"-"``.

    Returns:
        The images sorted by path; ``ignored`` lists unused files.

    Raises:
        AnivisionError: ``root`` missing or not a folder, or no image in any role folder.
    """
    root = Path(root)
    if not root.exists():
        raise AnivisionError(f"{root}: no such folder")
    if not root.is_dir():
        raise AnivisionError(f"{root}: not a folder (expected {root}/<work>/<role>/<image>, or a .csv manifest)")
    paths: list[str] = []
    works: list[str] = []
    roles: list[str] = []
    ignored: list[str] = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not p.is_file():
            continue
        depth = len(rel.parts)
        if not is_image_file(p):
            if depth > 1:  # metadata beside the works (synth.json, a README) is not data
                ignored.append(str(p))
            continue
        if depth >= 3:
            work, role = rel.parts[0], rel.parts[1]
        elif not strict:
            work, role = (rel.parts[0], "-") if depth == 2 else ("-", "-")
        else:
            ignored.append(str(p))
            continue
        paths.append(str(p))
        works.append(work)
        roles.append(role)
    if not paths:
        raise AnivisionError(f"{root}: no images found in role folders (expected {root}/<work>/<role>/<image>)")
    if strict and all(len(Path(p).relative_to(root).parts) >= 4 for p in paths):
        log.warning(
            "%s: every image is 3+ folders deep; if the first level is a split (train/test), point --data at a "
            "folder of works or list the images in a path,work,role CSV", root,
        )
    if ignored:
        log.warning("%s: ignoring %d file(s) that are not images in a <work>/<role>/ folder, e.g. %s", root, len(ignored), ignored[0])
    return ReidImages(paths, works, roles, ignored)


def read_reid_csv(path: str | Path) -> ReidImages:
    """Read a ``path,work,role`` CSV (header required; relative paths are relative to the CSV's folder).

    Raises:
        AnivisionError: missing file, missing columns, empty cells, or no rows.
    """
    path = Path(path)
    if not path.is_file():
        raise AnivisionError(f"{path}: no such file")
    base = path.parent
    paths: list[str] = []
    works: list[str] = []
    roles: list[str] = []
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        cols = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in ("path", "work", "role") if c not in cols]
        if missing:
            raise AnivisionError(f"{path}: missing column(s) {', '.join(missing)} (header must include path,work,role)")
        for line_no, row in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            if not row["path"] or not row["work"] or not row["role"]:
                raise AnivisionError(f"{path}: line {line_no}: empty path, work or role")
            p = Path(row["path"])
            paths.append(str(p if p.is_absolute() else base / p))
            works.append(row["work"])
            roles.append(row["role"])
    if not paths:
        raise AnivisionError(f"{path}: no rows")
    return ReidImages(paths, works, roles)


def load_reid(path: str | Path, strict: bool = True) -> ReidImages:
    """A ``work/role`` tree (folder) or a ``path,work,role`` CSV (file ending in ``.csv``)."""
    p = Path(path)
    if p.suffix.lower() == ".csv":
        return read_reid_csv(p)
    return scan_reid_tree(p, strict=strict)


# ----------------------------------------------------------------------------------------------
# Protocol
# ----------------------------------------------------------------------------------------------


def kfold_works(works: list[str], n_folds: int = DEFAULT_FOLDS, seed: int = 0) -> list[list[str]]:
    """Deal the distinct works into ``n_folds`` folds of near-equal size (seeded shuffle).

    The result depends only on the *set* of works, the fold count and the seed, so a baseline
    evaluated later with the same arguments sees exactly the folds a training run saw.

    Args:
        works: work names (duplicates are fine).
        n_folds: number of folds, 2 <= n_folds <= number of works.
        seed: shuffle seed.

    Returns:
        ``n_folds`` sorted lists of test works; together they partition the works.

    Raises:
        AnivisionError: fewer than 2 folds, or more folds than works.
    """
    names = sorted(set(works))
    if n_folds < 2:
        raise AnivisionError(f"--folds must be at least 2 (got {n_folds}): each fold trains on the other folds' works")
    if n_folds > len(names):
        raise AnivisionError(f"--folds {n_folds} is more than the {len(names)} works in the data")
    order = np.random.default_rng(seed).permutation(len(names))
    return [sorted(names[i] for i in part) for part in np.array_split(order, n_folds)]


def split_roles(roles: list[str], query_ratio: float, seed: int, work: str) -> tuple[list[str], list[str]]:
    """Split one work's roles into (query roles, gallery roles), both non-empty.

    ``round(query_ratio * n)`` roles go to the query side, clamped to ``[1, n - 1]``. The shuffle
    is seeded by ``seed`` and the work's name, so a work's split does not depend on which other
    works are in the data or in the fold.

    Raises:
        ValueError: fewer than two roles (the caller excludes such works).
    """
    rs = sorted(set(roles))
    if len(rs) < 2:
        raise ValueError(f"work {work!r} has {len(rs)} role(s); need 2 to split")
    n_query = min(max(int(round(query_ratio * len(rs))), 1), len(rs) - 1)
    rng = np.random.default_rng([seed, zlib.crc32(work.encode("utf-8"))])
    perm = rng.permutation(len(rs))
    return sorted(rs[i] for i in perm[:n_query]), sorted(rs[i] for i in perm[n_query:])


@dataclass
class Fold:
    """One fold of the cross-role protocol.

    Attributes:
        index: fold number, 0-based.
        train_works: works whose images train the model (sorted).
        test_works: works held out for this fold (sorted), including excluded ones.
        train_idx: (n_train,) positions in the data of the training images.
        query_idx: (n_query,) positions of the query images.
        gallery_idx: (n_gallery,) positions of the gallery images.
        query_roles: ``{work: [roles]}`` on the query side.
        gallery_roles: ``{work: [roles]}`` on the gallery side.
        excluded_works: test works with a single role, left out of query and gallery.
    """

    index: int
    train_works: list[str]
    test_works: list[str]
    train_idx: np.ndarray
    query_idx: np.ndarray
    gallery_idx: np.ndarray
    query_roles: dict[str, list[str]]
    gallery_roles: dict[str, list[str]]
    excluded_works: list[str]

    def describe(self) -> dict[str, object]:
        """JSON-able definition (works and roles, no indices): what ``folds.json`` stores."""
        return {
            "fold": self.index,
            "train_works": self.train_works,
            "test_works": self.test_works,
            "query_roles": self.query_roles,
            "gallery_roles": self.gallery_roles,
            "excluded_works": self.excluded_works,
            "n_train": int(len(self.train_idx)),
            "n_query": int(len(self.query_idx)),
            "n_gallery": int(len(self.gallery_idx)),
        }


def make_folds(
    data: ReidImages,
    n_folds: int = DEFAULT_FOLDS,
    query_ratio: float = DEFAULT_QUERY_RATIO,
    seed: int = 0,
) -> list[Fold]:
    """All folds of the cross-role, k-fold-by-work protocol.

    Args:
        data: the images.
        n_folds: number of folds (each work is a test work in exactly one).
        query_ratio: fraction of each test work's roles on the query side, in (0, 1).
        seed: seed of the work shuffle and of the role splits.

    Returns:
        The folds, in order. Single-role test works are excluded from query and gallery (and
        logged with a count); they still train in the other folds.

    Raises:
        AnivisionError: bad ratio or fold count, or a fold left with no query/gallery at all.
    """
    if not 0.0 < query_ratio < 1.0:
        raise AnivisionError(f"--query-ratio must be between 0 and 1 (got {query_ratio})")
    fold_works = kfold_works(data.works, n_folds, seed)
    roles_of = data.roles_per_work()
    works = data.works
    keys = data.role_keys()
    folds: list[Fold] = []
    for i, test in enumerate(fold_works):
        test_set = set(test)
        q_roles: dict[str, list[str]] = {}
        g_roles: dict[str, list[str]] = {}
        excluded: list[str] = []
        for w in test:
            if len(roles_of[w]) < 2:
                excluded.append(w)
                continue
            q_roles[w], g_roles[w] = split_roles(roles_of[w], query_ratio, seed, w)
        q_set = {(w, r) for w, rs in q_roles.items() for r in rs}
        g_set = {(w, r) for w, rs in g_roles.items() for r in rs}
        train_idx = np.array([j for j, w in enumerate(works) if w not in test_set], dtype=np.int64)
        query_idx = np.array([j for j, k in enumerate(keys) if k in q_set], dtype=np.int64)
        gallery_idx = np.array([j for j, k in enumerate(keys) if k in g_set], dtype=np.int64)
        if excluded:
            log.warning(
                "fold %d: %d test work(s) have a single role and cannot be split into query and gallery roles; "
                "excluded from this fold's evaluation: %s",
                i, len(excluded), ", ".join(excluded[:10]) + (" ..." if len(excluded) > 10 else ""),
            )
        if len(query_idx) == 0 or len(gallery_idx) == 0:
            raise AnivisionError(
                f"fold {i}: no test work has two or more roles (test works: {', '.join(test)}); "
                "each work needs at least 2 role folders to be split into query and gallery"
            )
        train = sorted(set(data.work_names) - test_set)
        folds.append(Fold(i, train, list(test), train_idx, query_idx, gallery_idx, q_roles, g_roles, excluded))
    return folds
