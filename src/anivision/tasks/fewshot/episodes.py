"""N-way K-shot episodes on cached embeddings: 1,000 episodes are one batched gather and a few
batched matmuls, with the prototype maths of :mod:`anivision.models.protonet`."""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np
import torch

from anivision.data.samplers import EpisodeSampler
from anivision.errors import AnivisionError
from anivision.metrics.stats import episode_ci95
from anivision.models.protonet import check_distance, episode_distances, prototypes


def evaluate_episodes(
    features: np.ndarray | torch.Tensor,
    episodes: np.ndarray,
    k_shot: int,
    distance: str = "euclidean",
    max_chunk_bytes: int = 256 << 20,
) -> np.ndarray:
    """Accuracy of a prototypical classifier on each episode, vectorised over episodes.

    For a chunk of t episodes (bounding memory), the (t, N, K, D) supports are gathered and
    averaged into (t, N, D) prototypes and the (t, N * Q, D) queries are gathered; distances
    are batched matmuls, then argmins and accuracies are batched too. Computed in float64 so
    that the argmin does not depend on summation order (the naive loop in the tests gives
    exactly the same per-episode accuracies).

    Args:
        features: (M, D) embeddings.
        episodes: (T, N, K + Q) int indices into ``features``, support first (from
            :meth:`EpisodeSampler.sample`).
        k_shot: K.
        distance: ``"euclidean"`` (squared) or ``"cosine"``.
        max_chunk_bytes: memory bound of one gathered chunk.

    Returns:
        (T,) float64 accuracy of each episode, in [0, 1].
    """
    check_distance(distance)
    feats = torch.as_tensor(features if isinstance(features, torch.Tensor) else np.asarray(features)).to(torch.float64)
    ep = torch.as_tensor(np.asarray(episodes, dtype=np.int64))
    t_all, n_way, per_class = ep.shape
    n_query = per_class - k_shot
    if n_query < 1:
        raise AnivisionError(f"episodes have {per_class} images per class; {k_shot}-shot leaves no queries")
    chunk = max(1, int(max_chunk_bytes // max(1, n_way * per_class * feats.shape[1] * 8)))
    # Query j of class c has episode label c: queries are laid out class by class.
    target = torch.arange(n_way).repeat_interleave(n_query)
    out = torch.empty(t_all, dtype=torch.float64)
    for s in range(0, t_all, chunk):
        e = ep[s : s + chunk]
        protos = prototypes(feats[e[:, :, :k_shot]])  # (t, N, K, D) -> (t, N, D)
        queries = feats[e[:, :, k_shot:].reshape(e.shape[0], n_way * n_query)]  # (t, N * Q, D)
        dist = episode_distances(queries, protos, distance)  # (t, N * Q, N)
        out[s : s + chunk] = (dist.argmin(-1) == target).to(torch.float64).mean(-1)
    return out.numpy()


def episode_accuracy(
    features: np.ndarray,
    labels: np.ndarray,
    n_way: int,
    k_shot: int,
    n_query: int,
    episodes: int,
    seed: int = 0,
    distance: str = "euclidean",
    skip_small_classes: bool = False,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Mean accuracy ± 95% CI of ``episodes`` seeded N-way K-shot episodes on embeddings.

    Args:
        features: (M, D) embeddings of readable images.
        labels: (M,) class ids.

    Returns:
        ``accuracy`` and ``ci95`` (fractions), ``std``, ``n_way``, ``k_shot``, ``n_query``,
        ``episodes``, ``classes`` (those episodes drew from), ``excluded_classes``, ``seconds``.
    """
    sampler = EpisodeSampler(labels, n_way, k_shot, n_query, episodes, seed=seed, skip_small_classes=skip_small_classes, class_names=class_names)
    t0 = time.perf_counter()
    idx, _ = sampler.sample()
    accs = evaluate_episodes(features, idx, k_shot, distance)
    names = [str(class_names[c]) if class_names is not None else str(c) for c in sampler.class_ids]
    return {
        "accuracy": float(accs.mean()),
        "ci95": episode_ci95(accs),
        "std": float(accs.std()),
        "n_way": n_way,
        "k_shot": k_shot,
        "n_query": n_query,
        "episodes": episodes,
        "distance": distance,
        "seed": seed,
        "classes": names,
        "excluded_classes": sampler.excluded,
        "seconds": time.perf_counter() - t0,
    }
