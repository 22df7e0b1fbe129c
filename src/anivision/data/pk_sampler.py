"""PK batch sampler: every batch holds P distinct classes with K images each.

Batch-hard and weighted triplet losses need positives and negatives inside every batch; a
random batch of 64 images from 100 works often holds a work only once. The PK sampler
guarantees P classes x K images (LSASRD trains with 16 x 4).

pytorch-metric-learning's ``MPerClassSampler`` does the same class sampling but draws from
the library's global NumPy generator (not reproducible per run) and yields a flat index list, so
anivision has its own seeded batch sampler. It also spreads each class's K images over its
*groups* (roles), because the task is to match different roles of a work: a positive pair from
two roles teaches style, a pair from one role mostly teaches character identity.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


class PKSampler(Sampler[list[int]]):
    """Yield batches of ``p * k`` dataset positions: ``p`` distinct labels, ``k`` positions each.

    Use it as ``DataLoader(dataset, batch_sampler=PKSampler(...))``.

    Args:
        labels: (N,) class of each dataset item (e.g. work id).
        p: classes per batch; at most the number of distinct labels.
        k: images per class; a class with fewer than ``k`` images repeats some (with replacement),
            so no class is unusable.
        groups: optional (N,) sub-class of each item (e.g. role id); the ``k`` images of a class
            are then taken round-robin over its groups in random order, so they come from as many
            different groups as possible.
        batches_per_epoch: batches per ``__iter__``; default ``max(1, N // (p * k))`` (about one
            pass over the data).
        seed: base seed; epoch ``e`` uses the generator seeded ``(seed, e)`` (see :meth:`set_epoch`),
            so a resumed run draws the same batches as an uninterrupted one.

    Raises:
        ValueError: ``p`` or ``k`` < 1, or ``p`` larger than the number of classes.
    """

    def __init__(
        self,
        labels: np.ndarray | list[int],
        p: int,
        k: int,
        groups: np.ndarray | list[int] | None = None,
        batches_per_epoch: int | None = None,
        seed: int = 0,
    ) -> None:
        self.labels = np.asarray(labels, dtype=np.int64)
        if p < 1 or k < 1:
            raise ValueError(f"p and k must be >= 1 (got p={p}, k={k})")
        self.classes = np.unique(self.labels)
        if p > len(self.classes):
            raise ValueError(f"p={p} classes per batch, but only {len(self.classes)} classes")
        self.p, self.k, self.seed, self.epoch = int(p), int(k), int(seed), 0
        g = np.zeros_like(self.labels) if groups is None else np.asarray(groups, dtype=np.int64)
        if g.shape != self.labels.shape:
            raise ValueError(f"groups has shape {g.shape}, labels {self.labels.shape}")
        # class -> list of position arrays, one per group: the round-robin's input.
        self._by_class: dict[int, list[np.ndarray]] = {}
        for c in self.classes:
            pos = np.flatnonzero(self.labels == c)
            self._by_class[int(c)] = [pos[g[pos] == grp] for grp in np.unique(g[pos])]
        self.batches_per_epoch = int(batches_per_epoch or max(1, len(self.labels) // (self.p * self.k)))

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches the next ``__iter__`` yields."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.batches_per_epoch

    def _draw_class(self, c: int, rng: np.random.Generator) -> list[int]:
        groups = self._by_class[c]
        # Shuffle inside each group, visit the groups in random order, one image per group per
        # round: the first k positions then cover min(k, n_groups) groups.
        shuffled = [grp[rng.permutation(len(grp))] for grp in groups]
        order = rng.permutation(len(shuffled))
        picked: list[int] = []
        depth = 0
        while len(picked) < self.k and depth < max(len(grp) for grp in shuffled):
            for gi in order:
                if depth < len(shuffled[gi]):
                    picked.append(int(shuffled[gi][depth]))
                    if len(picked) == self.k:
                        break
            depth += 1
        if len(picked) < self.k:
            # Fewer than k images in the class: repeat some rather than drop the class.
            all_pos = np.concatenate(groups)
            picked += [int(x) for x in rng.choice(all_pos, self.k - len(picked), replace=True)]
        return picked

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        queue: list[int] = []
        for _ in range(self.batches_per_epoch):
            # Classes come from a shuffled queue refilled with fresh permutations, so every class
            # appears about equally often; a refill never repeats a class already in the batch.
            batch_classes: list[int] = []
            deferred: list[int] = []
            while len(batch_classes) < self.p:
                if not queue:
                    queue = [int(c) for c in rng.permutation(self.classes)]
                c = queue.pop()
                (deferred if c in batch_classes else batch_classes).append(c)
            queue += deferred  # popped from the end, so they lead the next batch
            yield [i for c in batch_classes for i in self._draw_class(c, rng)]
