"""Batch samplers over labelled datasets.

:class:`EpisodeSampler` draws few-shot episodes (N-way, K-shot, Q-query tasks) from the labels
of a dataset, for prototypical-network training and evaluation. It yields plain index arrays,
so it works as a ``DataLoader(batch_sampler=...)`` over images and equally as an index source
for cached embeddings (``features[indices]``).
"""

from __future__ import annotations

import logging
from typing import Iterator, Sequence

import numpy as np

from anivision.errors import AnivisionError

log = logging.getLogger(__name__)


class EpisodeSampler:
    """Seeded N-way, K-shot, Q-query episode sampler.

    Each episode picks ``n_way`` distinct classes, then ``k_shot + n_query`` distinct images of
    each class: the first ``k_shot`` are the support set, the rest the queries. Within an
    episode, class ``j`` (its position in the episode) is the episode label ``j``.

    Iteration yields one flat ``(n_way * (k_shot + n_query),)`` int64 array per episode, class
    by class (``[c0 support, c0 queries, c1 support, ...]``), which is the layout
    :meth:`sample` returns reshaped to ``(T, N, K + Q)``. Every iteration restarts the
    generator from ``seed``, so iterating twice gives the same episodes, and :meth:`sample`
    gives exactly the episodes iteration yields.

    Args:
        labels: (M,) class id of every item; negative ids are ignored (e.g. unreadable images).
        n_way: N, classes per episode.
        k_shot: K, support images per class.
        n_query: Q, query images per class.
        n_tasks: T, episodes per iteration.
        seed: seed of the ``numpy.random.Generator``.
        skip_small_classes: exclude classes with fewer than ``k_shot + n_query`` items (with a
            logged warning) instead of raising.
        class_names: name of each class id, for messages; default ``"<id>"``.

    Raises:
        AnivisionError: bad N/K/Q/T, a class too small for ``k_shot + n_query`` (unless
            ``skip_small_classes``), or fewer than ``n_way`` usable classes.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray,
        n_way: int,
        k_shot: int,
        n_query: int,
        n_tasks: int,
        seed: int = 0,
        skip_small_classes: bool = False,
        class_names: Sequence[str] | None = None,
    ) -> None:
        for name, value, low in (("n_way", n_way, 2), ("k_shot", k_shot, 1), ("n_query", n_query, 1), ("n_tasks", n_tasks, 1)):
            if int(value) < low:
                raise AnivisionError(f"{name} must be at least {low}, got {value}")
        self.n_way, self.k_shot, self.n_query, self.n_tasks = int(n_way), int(k_shot), int(n_query), int(n_tasks)
        self.seed = int(seed)
        labels_arr = np.asarray(labels, dtype=np.int64).ravel()
        need = self.k_shot + self.n_query

        def name_of(c: int) -> str:
            return str(class_names[c]) if class_names is not None and 0 <= c < len(class_names) else str(c)

        ids = np.unique(labels_arr[labels_arr >= 0])
        # Items of each class, kept as index arrays: sampling reads them every episode.
        pools = {int(c): np.flatnonzero(labels_arr == c) for c in ids}
        if len(pools) < self.n_way:
            listed = ", ".join(name_of(int(c)) for c in ids) or "none"
            raise AnivisionError(
                f"{self.n_way}-way episodes need {self.n_way} classes; there are only {len(pools)} ({listed}); "
                "lower --n-way or use more classes"
            )
        small = {c: len(p) for c, p in pools.items() if len(p) < need}
        #: Classes left out because they are too small: name -> number of items.
        self.excluded: dict[str, int] = {name_of(c): n for c, n in small.items()}
        if small and not skip_small_classes:
            c, n = next(iter(small.items()))
            more = f" (and {len(small) - 1} more class(es) too small)" if len(small) > 1 else ""
            raise AnivisionError(
                f"class '{name_of(c)}' has {n} images; {self.k_shot}-shot + {self.n_query}-query episodes need {need}{more}; "
                "lower --k-shot/--n-query or pass --skip-small-classes"
            )
        for c, n in small.items():
            log.warning("skipping class '%s': %d images, %d-shot + %d-query episodes need %d", name_of(c), n, self.k_shot, self.n_query, need)
        #: Class ids episodes draw from, sorted.
        self.class_ids = np.asarray(sorted(c for c in pools if c not in small), dtype=np.int64)
        self._pools = [pools[int(c)] for c in self.class_ids]
        if len(self.class_ids) < self.n_way:
            usable = ", ".join(name_of(int(c)) for c in self.class_ids) or "none"
            raise AnivisionError(
                f"{self.n_way}-way episodes need {self.n_way} classes with at least {need} images each; "
                f"only {len(self.class_ids)} have that ({usable}); lower --n-way or use more classes"
            )

    @property
    def episode_size(self) -> int:
        """Items per episode: ``n_way * (k_shot + n_query)``."""
        return self.n_way * (self.k_shot + self.n_query)

    def __len__(self) -> int:
        return self.n_tasks

    def _episode(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        per_class = self.k_shot + self.n_query
        chosen = rng.choice(len(self.class_ids), size=self.n_way, replace=False)
        idx = np.empty((self.n_way, per_class), dtype=np.int64)
        for j, c in enumerate(chosen):
            pool = self._pools[int(c)]
            idx[j] = pool[rng.choice(len(pool), size=per_class, replace=False)]
        return idx, self.class_ids[chosen]

    def __iter__(self) -> Iterator[np.ndarray]:
        rng = np.random.default_rng(self.seed)
        for _ in range(self.n_tasks):
            idx, _classes = self._episode(rng)
            yield idx.reshape(-1)

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """All episodes at once (the same ones iteration yields).

        Returns:
            ``(indices, classes)``: indices (T, N, K + Q) int64 item positions, support first
            along the last axis; classes (T, N) int64 class id of each episode class.
        """
        rng = np.random.default_rng(self.seed)
        idx = np.empty((self.n_tasks, self.n_way, self.k_shot + self.n_query), dtype=np.int64)
        classes = np.empty((self.n_tasks, self.n_way), dtype=np.int64)
        for t in range(self.n_tasks):
            idx[t], classes[t] = self._episode(rng)
        return idx, classes
