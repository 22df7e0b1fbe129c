"""Class-disjoint splits: few-shot accuracy is only meaningful on classes never trained on.

A run freezes its split as ``classes.json`` (:class:`ClassSplit`): the training classes give the
episodes, the validation classes choose the best epoch and the test classes stay held out.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from anivision.data.folder import LabeledImages
from anivision.data.splits import PARTS, parse_ratios
from anivision.errors import AnivisionError
from anivision.files import atomic_write_json

#: Default class split: 60/20/20 of the classes (16 classes -> 10/3/3; AniWho used 90/20/20 of 130).
DEFAULT_CLASS_RATIOS = "60/20/20"


@dataclass
class ClassSplit:
    """Class-disjoint partition of a dataset's classes, frozen as ``classes.json``.

    Attributes:
        train: classes episodes are trained on.
        val: classes that choose the best checkpoint.
        test: held-out classes, never seen in training.
        unused: classes left out when explicit counts sum to fewer than all classes.
        seed: the shuffling seed.
        spec: the counts or ratios the split was made from (e.g. ``"10/3/3"``).
    """

    train: list[str]
    val: list[str]
    test: list[str]
    unused: list[str] = dataclasses.field(default_factory=list)
    seed: int = 0
    spec: str = ""

    def part(self, name: str) -> list[str]:
        """Classes of ``train``, ``val``, ``test``, ``unseen`` (val + test: never trained on) or ``all``."""
        if name == "all":
            return self.train + self.val + self.test
        if name == "unseen":
            return self.val + self.test
        if name not in PARTS:
            raise AnivisionError(f"unknown split '{name}' (choose train, val, test, unseen or all)")
        return list(getattr(self, name))

    def save(self, path: str | Path) -> None:
        atomic_write_json(path, dataclasses.asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> "ClassSplit":
        """Read ``classes.json`` (or the ``classes.json`` of a run folder)."""
        p = Path(path)
        if p.is_dir():
            p = p / "classes.json"
        if not p.is_file():
            raise AnivisionError(f"{p}: no such class-split file (classes.json)")
        try:
            d = json.loads(p.read_text())
            return cls(**{k: d[k] for k in ("train", "val", "test")}, unused=d.get("unused", []), seed=int(d.get("seed", 0)), spec=str(d.get("spec", "")))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise AnivisionError(f"{p}: not a class-split file (needs train, val, test class lists)") from exc


def _allocate(n: int, ratios: tuple[float, float, float]) -> list[int]:
    """Largest-remainder allocation of ``n`` classes; each non-zero ratio gets at least one."""
    want = [r * n for r in ratios]
    counts = [int(math.floor(w)) for w in want]
    for i in sorted(range(3), key=lambda i: -(want[i] - counts[i]))[: n - sum(counts)]:
        counts[i] += 1
    for i, r in enumerate(ratios):
        if r > 0 and counts[i] == 0:
            j = int(np.argmax(counts))
            if counts[j] > 1:
                counts[j] -= 1
                counts[i] += 1
    return counts


def parse_class_counts(text: str) -> tuple[int, int, int]:
    """Parse ``"10/3/3"`` (train/val/test classes) or ``"10/3"`` (train/test, no validation)."""
    try:
        parts = [int(x) for x in text.replace(",", "/").split("/")]
    except ValueError:
        raise AnivisionError(f"--classes '{text}': expected class counts like 10/3/3 (train/val/test)") from None
    if len(parts) == 2:
        parts = [parts[0], 0, parts[1]]
    if len(parts) != 3 or any(p < 0 for p in parts) or parts[0] < 1:
        raise AnivisionError(f"--classes '{text}': expected train/val/test class counts like 10/3/3, train at least 1")
    return parts[0], parts[1], parts[2]


def class_disjoint_split(
    classes: Sequence[str], counts: str | None = None, ratios: str | None = None, seed: int = 0
) -> ClassSplit:
    """Shuffle class names (seeded) and cut them into train/val/test classes.

    Args:
        classes: all class names of the dataset.
        counts: ``"10/3/3"``: exact numbers of classes; they may sum to fewer than all classes
            (the rest are recorded as ``unused``).
        ratios: ``"60/20/20"`` or fractions: shares of the classes (largest remainder, at
            least one class for each non-zero share). Default :data:`DEFAULT_CLASS_RATIOS`.
        seed: seed of the shuffle; the same classes and seed give the same split.

    Raises:
        AnivisionError: both or bad specs, or more classes asked for than exist.
    """
    if counts and ratios:
        raise AnivisionError("give either --classes (counts) or --ratios, not both")
    names = sorted(classes)
    n = len(names)
    if counts:
        c = parse_class_counts(counts)
        if sum(c) > n:
            raise AnivisionError(f"--classes {counts} asks for {sum(c)} classes; the dataset has {n}")
        spec = counts
    else:
        spec = ratios or DEFAULT_CLASS_RATIOS
        c = tuple(_allocate(n, parse_ratios(spec)))  # type: ignore[assignment]
    order = np.random.default_rng(seed).permutation(n)
    shuffled = [names[i] for i in order]
    a, b, t = c
    # Within each part classes are sorted, so the file reads well and does not leak the order.
    return ClassSplit(
        train=sorted(shuffled[:a]),
        val=sorted(shuffled[a : a + b]),
        test=sorted(shuffled[a + b : a + b + t]),
        unused=sorted(shuffled[a + b + t :]),
        seed=int(seed),
        spec=spec,
    )


def select_classes(images: LabeledImages, names: Sequence[str], source: str) -> tuple[list[int], np.ndarray, list[str]]:
    """Images of the classes ``names``, relabelled 0..len(names)-1.

    Returns:
        (indices into ``images``, (n,) int64 labels, class names in label order).

    Raises:
        AnivisionError: a class is not in the dataset.
    """
    index = {c: i for i, c in enumerate(images.classes)}
    missing = [c for c in names if c not in index]
    if missing:
        raise AnivisionError(f"{source}: class(es) {', '.join(missing)} not found in the dataset ({len(images.classes)} classes)")
    remap = {index[c]: j for j, c in enumerate(names)}
    idx = [i for i, y in enumerate(images.labels) if y in remap]
    labels = np.asarray([remap[images.labels[i]] for i in idx], dtype=np.int64)
    return idx, labels, list(names)
