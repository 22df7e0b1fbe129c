"""Retrieval metrics on a query-by-gallery distance matrix: mAP, mINP and the CMC curve.

The definitions follow the re-identification literature (Market-1501 evaluation, and mINP from
Ye et al., "Deep Learning for Person Re-identification: A Survey and Outlook", TPAMI 2021),
without camera filtering: a gallery item is relevant to a query when their labels are equal.

The whole computation is vectorised: one stable ``argsort`` per query row, a boolean match
matrix, and per-hit arithmetic on the positions of the relevant items. Queries are processed in
chunks so memory stays bounded for large galleries. ``tests/test_metrics_retrieval.py`` checks
every value against a plain per-query loop and scikit-learn's average precision.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from anivision.errors import AnivisionError

# Elements of the (chunk, n_gallery) work arrays; ~4M keeps the int64 argsort result at
# ~32 MB per chunk whatever the gallery size.
_CHUNK_ELEMENTS = 1 << 22


def pairwise_distances(
    query_feats: np.ndarray, gallery_feats: np.ndarray, metric: str = "euclidean"
) -> np.ndarray:
    """Distances between every query and every gallery feature vector.

    Args:
        query_feats: (n_query, D) float32 or float64 features.
        gallery_feats: (n_gallery, D) features of the same dimension.
        metric: ``"euclidean"`` (L2 distance) or ``"cosine"`` (``1 - cosine similarity``,
            in [0, 2]; an all-zero vector has distance 1 to everything).

    Returns:
        (n_query, n_gallery) distances, smaller = more similar; float32 when both inputs are
        float32, float64 otherwise.
    """
    q = np.asarray(query_feats)
    g = np.asarray(gallery_feats)
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(f"features must be (n, D) with equal D, got {q.shape} and {g.shape}")
    dtype = np.result_type(q.dtype, g.dtype, np.float32)
    q = q.astype(dtype, copy=False)
    g = g.astype(dtype, copy=False)
    if metric == "euclidean":
        # ||q - g||^2 = ||q||^2 + ||g||^2 - 2 q.g: one matrix product instead of an (n, m, D)
        # broadcast. Rounding can make near-zero values slightly negative, hence the clip.
        sq = (q * q).sum(axis=1)[:, None] + (g * g).sum(axis=1)[None, :] - 2.0 * (q @ g.T)
        return np.sqrt(np.maximum(sq, 0.0, out=sq), out=sq)
    if metric == "cosine":
        eps = np.finfo(dtype).tiny
        qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), eps)
        gn = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), eps)
        return np.clip(1.0 - qn @ gn.T, 0.0, 2.0)
    raise ValueError(f"unknown metric {metric!r}; use 'euclidean' or 'cosine'")


def retrieval_metrics(
    dist: np.ndarray,
    query_labels: np.ndarray,
    gallery_labels: np.ndarray,
    max_rank: int = 50,
    ignore: np.ndarray | None = None,
) -> dict[str, Any]:
    """mAP, mINP and CMC of a ranking of the gallery for each query.

    Each query's gallery is sorted by ascending distance with a stable sort, so tied distances
    keep gallery order (lower index first) and results are deterministic. Queries with no
    relevant gallery item have undefined AP/INP/CMC; they are excluded from every average and
    counted in ``n_excluded_queries``.

    For one query with R relevant items at 1-based ranks ``r_1 < ... < r_R``:

    - ``AP = (1/R) * sum_j j / r_j`` (precision at each hit, averaged over the hits);
    - ``INP = R / r_R`` (how deep one must look to find the hardest, last, match);
    - the query counts towards ``cmc[k-1]`` when ``r_1 <= k``.

    Args:
        dist: (n_query, n_gallery) distances, smaller = more similar.
        query_labels: (n_query,) labels (ints or strings).
        gallery_labels: (n_gallery,) labels comparable with ``query_labels``.
        max_rank: length of the returned CMC curve.
        ignore: optional (n_query, n_gallery) bool, True where a gallery item must be left out
            of that query's ranking altogether, e.g. the query itself when the query set is also
            the gallery. Ranks are then counted over the remaining items only.

    Returns:
        Dict with ``mAP``, ``mINP``, ``rank1``, ``rank5``, ``rank10`` (floats in [0, 1];
        rank-k is computed directly, so it is valid even when ``max_rank < k``), ``cmc``
        ((max_rank,) float64 array), ``ap`` and ``inp`` ((n_query,) float64 arrays, NaN for
        excluded queries; for paired bootstraps), ``n_valid_queries``, ``n_excluded_queries``.

    Raises:
        AnivisionError: when no query has a relevant item in the gallery.
    """
    dist = np.asarray(dist)
    query_labels = np.asarray(query_labels)
    gallery_labels = np.asarray(gallery_labels)
    if dist.ndim != 2:
        raise ValueError(f"dist must be 2-D (n_query, n_gallery), got shape {dist.shape}")
    n_query, n_gallery = dist.shape
    if query_labels.shape != (n_query,) or gallery_labels.shape != (n_gallery,):
        raise ValueError(
            f"labels {query_labels.shape}/{gallery_labels.shape} do not match dist {dist.shape}"
        )
    if ignore is not None:
        ignore = np.asarray(ignore, dtype=bool)
        if ignore.shape != dist.shape:
            raise ValueError(f"ignore has shape {ignore.shape}, dist has {dist.shape}")
    if max_rank < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    if np.isnan(dist).any():
        # argsort would silently rank NaN last; a NaN distance means broken features upstream.
        raise ValueError("dist contains NaN")

    # Compare small ints instead of the caller's labels (often strings): the per-chunk gather
    # and equality test over (chunk, n_gallery) elements are then cheap whatever the label type.
    _, codes = np.unique(np.concatenate([query_labels, gallery_labels]), return_inverse=True)
    q_codes = codes[:n_query].astype(np.int32)
    g_codes = codes[n_query:].astype(np.int32)

    ap = np.full(n_query, np.nan)
    inp = np.full(n_query, np.nan)
    first_rank = np.zeros(n_query, dtype=np.int64)  # 0 = no relevant item

    chunk = max(1, _CHUNK_ELEMENTS // max(n_gallery, 1))
    for start in range(0, n_query, chunk):
        stop = min(start + chunk, n_query)
        d = dist[start:stop]
        if ignore is not None:
            # Push ignored items to the end so they cannot displace anything; their ranks are
            # then recomputed over kept items below, which also covers real +inf distances.
            d = np.where(ignore[start:stop], np.inf, d)
        order = np.argsort(d, axis=1, kind="stable")
        matches = g_codes[order] == q_codes[start:stop, None]
        if ignore is not None:
            dropped = np.take_along_axis(ignore[start:stop], order, axis=1)
            matches &= ~dropped
            kept_rank = np.cumsum(~dropped, axis=1)

        # Work only on the hits: np.nonzero returns them row by row in rank order, so the
        # j-th hit of a row is its offset from the row's first hit.
        rows, cols = np.nonzero(matches)
        ranks = kept_rank[rows, cols] if ignore is not None else cols + 1
        n_rel = np.bincount(rows, minlength=stop - start)
        first_hit = np.concatenate(([0], np.cumsum(n_rel)[:-1]))
        valid = n_rel > 0
        j = np.arange(rows.size) - first_hit[rows] + 1
        ap_sum = np.bincount(rows, weights=j / ranks, minlength=stop - start)

        idx = np.arange(start, stop)[valid]
        ap[idx] = ap_sum[valid] / n_rel[valid]
        last_rank = ranks[first_hit[valid] + n_rel[valid] - 1]
        inp[idx] = n_rel[valid] / last_rank
        first_rank[idx] = ranks[first_hit[valid]]

    valid_all = first_rank > 0
    n_valid = int(valid_all.sum())
    if n_valid == 0:
        raise AnivisionError(
            "no query has a relevant gallery item: query and gallery labels never match"
        )
    fr = first_rank[valid_all]
    # Histogram of first-hit ranks (everything beyond max_rank in one overflow bin that is
    # dropped), cumulated: cmc[k-1] = fraction of queries whose first hit is at rank <= k.
    hist = np.bincount(np.minimum(fr, max_rank + 1) - 1, minlength=max_rank + 1)[:max_rank]
    cmc = np.cumsum(hist) / n_valid

    return {
        "mAP": float(np.mean(ap[valid_all])),
        "mINP": float(np.mean(inp[valid_all])),
        "cmc": cmc.astype(np.float64),
        "rank1": float(np.mean(fr <= 1)),
        "rank5": float(np.mean(fr <= 5)),
        "rank10": float(np.mean(fr <= 10)),
        "ap": ap,
        "inp": inp,
        "n_valid_queries": n_valid,
        "n_excluded_queries": int(n_query - n_valid),
    }
