"""Speed of ``retrieval_metrics`` (vectorised) against per-query loops, on random features.

Usage: python benchmarks/retrieval_metric_speed.py
"""

from __future__ import annotations

import time

import numpy as np

from anivision.metrics.retrieval import pairwise_distances, retrieval_metrics


def per_query_loop(dist: np.ndarray, q: np.ndarray, g: np.ndarray, max_rank: int = 50) -> tuple[float, float]:
    """The straightforward per-query numpy loop (torchreid's style, without camera filtering)."""
    aps, inps = [], []
    for i in range(dist.shape[0]):
        order = np.argsort(dist[i], kind="stable")
        m = (g[order] == q[i]).astype(np.int32)
        if not m.any():
            continue
        pos = np.flatnonzero(m)
        inps.append(m.sum() / (pos.max() + 1))
        prec = m.cumsum() / (np.arange(len(m)) + 1.0)
        aps.append((prec * m).sum() / m.sum())
    return float(np.mean(aps)), float(np.mean(inps))


def pure_python_loop(dist: np.ndarray, q: np.ndarray, g: np.ndarray) -> float:
    """Everything in Python but the sort: how a first implementation often looks."""
    aps = []
    for i in range(dist.shape[0]):
        order = sorted(range(dist.shape[1]), key=lambda j: (dist[i, j], j))
        hits, total, ap = 0, sum(1 for j in order if g[j] == q[i]), 0.0
        if total == 0:
            continue
        for rank, j in enumerate(order, 1):
            if g[j] == q[i]:
                hits += 1
                ap += hits / rank
        aps.append(ap / total)
    return float(np.mean(aps))


def best_of(f, repeats: int = 3):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> None:
    rng = np.random.default_rng(0)
    print("| size | vectorised | per-query numpy loop | pure-Python loop |")
    print("|---|---|---|---|")
    for n, ncls in ((500, 20), (2000, 50), (5000, 100)):
        feats = rng.normal(size=(n, 128)).astype(np.float32)
        labels = rng.integers(0, ncls, n)
        d = pairwise_distances(feats, feats)
        tv, a = best_of(lambda: retrieval_metrics(d, labels, labels))
        tl, (ap, inp) = best_of(lambda: per_query_loop(d, labels, labels), 1)
        assert abs(a["mAP"] - ap) < 1e-9 and abs(a["mINP"] - inp) < 1e-9
        if n <= 500:
            tp, ap2 = best_of(lambda: pure_python_loop(d, labels, labels), 1)
            assert abs(a["mAP"] - ap2) < 1e-9
            pure = f"{tp:.2f} s ({tp / tv:.0f}×)"
        else:
            pure = "not run (minutes)"
        print(f"| {n}×{n} | {tv:.2f} s | {tl:.2f} s ({tl / tv:.1f}×) | {pure} |")


if __name__ == "__main__":
    main()
