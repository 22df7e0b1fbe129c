"""Retrieval metrics checked against a naive per-query loop, scikit-learn and a hand example."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score
from sklearn.metrics import pairwise_distances as sk_pairwise_distances

from anivision.errors import AnivisionError
from anivision.metrics.retrieval import pairwise_distances, retrieval_metrics


def naive_retrieval_metrics(dist, query_labels, gallery_labels, max_rank=50, ignore=None):
    """One query at a time, straight from the definitions (the reference implementation)."""
    aps, inps, cmcs, first = [], [], [], []
    n_excluded = 0
    for i in range(dist.shape[0]):
        keep = np.ones(dist.shape[1], bool) if ignore is None else ~ignore[i]
        d = dist[i][keep]
        labels = gallery_labels[keep]
        order = np.argsort(d, kind="stable")
        good = labels[order] == query_labels[i]
        if not good.any():
            n_excluded += 1
            continue
        hits, precisions = 0, []
        for pos, is_good in enumerate(good):
            if is_good:
                hits += 1
                precisions.append(hits / (pos + 1))
        aps.append(sum(precisions) / hits)
        hit_ranks = np.flatnonzero(good) + 1
        inps.append(hits / hit_ranks[-1])
        first.append(hit_ranks[0])
        cmc = np.zeros(max_rank)
        if hit_ranks[0] <= max_rank:
            cmc[hit_ranks[0] - 1 :] = 1.0
        cmcs.append(cmc)
    first = np.array(first)
    return {
        "mAP": float(np.mean(aps)),
        "mINP": float(np.mean(inps)),
        "cmc": np.mean(cmcs, axis=0),
        "rank1": float(np.mean(first <= 1)),
        "rank5": float(np.mean(first <= 5)),
        "rank10": float(np.mean(first <= 10)),
        "n_valid_queries": len(aps),
        "n_excluded_queries": n_excluded,
    }


def _assert_same(got, ref):
    for key in ("mAP", "mINP", "rank1", "rank5", "rank10"):
        assert got[key] == pytest.approx(ref[key], abs=1e-9), key
    np.testing.assert_allclose(got["cmc"], ref["cmc"], atol=1e-9)
    assert got["n_valid_queries"] == ref["n_valid_queries"]
    assert got["n_excluded_queries"] == ref["n_excluded_queries"]


def test_hand_computed_example():
    # Query 0 (label a): ranking a b a b -> hits at ranks 1, 3: AP = (1 + 2/3)/2, INP = 2/3.
    # Query 1 (label b): ranking a a b b -> hits at ranks 3, 4: AP = (1/3 + 2/4)/2, INP = 2/4.
    # Query 2 (label z): no relevant item -> excluded.
    gallery = np.array(["a", "b", "a", "b"])
    dist = np.array(
        [
            [0.1, 0.2, 0.3, 0.4],
            [0.2, 0.9, 0.1, 0.8],
            [0.1, 0.2, 0.3, 0.4],
        ]
    )
    m = retrieval_metrics(dist, np.array(["a", "b", "z"]), gallery, max_rank=5)
    assert m["mAP"] == pytest.approx(((1 + 2 / 3) / 2 + (1 / 3 + 2 / 4) / 2) / 2)
    assert m["mINP"] == pytest.approx((2 / 3 + 2 / 4) / 2)
    np.testing.assert_allclose(m["cmc"], [0.5, 0.5, 1.0, 1.0, 1.0])
    assert m["cmc"].dtype == np.float64 and m["cmc"].shape == (5,)
    assert m["rank1"] == 0.5 and m["rank5"] == 1.0 and m["rank10"] == 1.0
    assert m["n_valid_queries"] == 2 and m["n_excluded_queries"] == 1
    assert np.isnan(m["ap"][2]) and m["ap"][0] == pytest.approx((1 + 2 / 3) / 2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_naive_loop_with_ties_and_unmatched_queries(seed):
    rng = np.random.default_rng(seed)
    n_q, n_g = 60, 90
    # Rounded distances create many ties; query labels 0..9 vs gallery labels 0..7 leave
    # queries without any relevant item.
    dist = np.round(rng.uniform(size=(n_q, n_g)), 1)
    q_labels = rng.integers(0, 10, n_q)
    g_labels = rng.integers(0, 8, n_g)
    got = retrieval_metrics(dist, q_labels, g_labels, max_rank=20)
    ref = naive_retrieval_metrics(dist, q_labels, g_labels, max_rank=20)
    assert ref["n_excluded_queries"] > 0
    _assert_same(got, ref)


def test_ties_in_some_rows_only():
    # Continuous rows take the fast unstable sort, rows with ties the stable one: both must
    # agree with the stable reference order.
    rng = np.random.default_rng(7)
    dist = rng.uniform(size=(40, 60))
    dist[::3] = np.round(dist[::3], 1)
    dist[1, 10:20] = 0.0  # duplicates at distance 0
    q, g = rng.integers(0, 4, 40), rng.integers(0, 4, 60)
    _assert_same(retrieval_metrics(dist, q, g), naive_retrieval_metrics(dist, q, g))


def test_chunking_gives_same_result(monkeypatch):
    rng = np.random.default_rng(3)
    dist = rng.normal(size=(37, 50))
    q, g = rng.integers(0, 5, 37), rng.integers(0, 5, 50)
    whole = retrieval_metrics(dist, q, g)
    import anivision.metrics.retrieval as retrieval

    monkeypatch.setattr(retrieval, "_CHUNK_ELEMENTS", 7 * 50)  # 7 queries per chunk
    _assert_same(retrieval.retrieval_metrics(dist, q, g), whole)


def test_ignore_mask_matches_naive_loop():
    # Query set == gallery set: leave each item's own match out of its ranking.
    rng = np.random.default_rng(4)
    feats = rng.normal(size=(40, 8))
    labels = rng.integers(0, 6, 40)
    dist = pairwise_distances(feats, feats)
    labels[5] = labels[0]
    dist[0, 5] = np.inf  # a relevant item at a real +inf distance: ranked last among kept items
    ignore = np.eye(40, dtype=bool)
    got = retrieval_metrics(dist, labels, labels, max_rank=10, ignore=ignore)
    ref = naive_retrieval_metrics(dist, labels, labels, max_rank=10, ignore=ignore)
    _assert_same(got, ref)
    # Without the mask every query finds itself at rank 1.
    assert retrieval_metrics(dist, labels, labels)["rank1"] == 1.0


def test_map_matches_sklearn_average_precision():
    rng = np.random.default_rng(5)
    dist = rng.uniform(size=(30, 70))  # continuous: no ties
    q, g = rng.integers(0, 4, 30), rng.integers(0, 4, 70)
    m = retrieval_metrics(dist, q, g)
    ref = [average_precision_score(g == q[i], -dist[i]) for i in range(30) if (g == q[i]).any()]
    np.testing.assert_allclose(m["ap"][~np.isnan(m["ap"])], ref, atol=1e-12)
    assert m["mAP"] == pytest.approx(np.mean(ref), abs=1e-12)


def test_small_gallery_and_rank_k_beyond_max_rank():
    dist = np.array([[0.3, 0.1, 0.2]])
    m = retrieval_metrics(dist, np.array([1]), np.array([0, 0, 1]), max_rank=2)
    # Ranking: g1 (0), g2 (1), g0 (0): first hit at rank 2.
    np.testing.assert_allclose(m["cmc"], [0.0, 1.0])
    assert m["rank1"] == 0.0 and m["rank5"] == 1.0
    m = retrieval_metrics(dist, np.array([1]), np.array([0, 0, 1]), max_rank=6)
    np.testing.assert_allclose(m["cmc"], [0, 1, 1, 1, 1, 1])


def test_no_valid_query_raises():
    with pytest.raises(AnivisionError, match="no query"):
        retrieval_metrics(np.zeros((2, 3)), np.array([5, 6]), np.array([0, 1, 2]))


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        retrieval_metrics(np.zeros((2, 3)), np.array([0, 1, 2]), np.array([0, 1, 2]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_pairwise_distances_match_sklearn(metric, dtype):
    rng = np.random.default_rng(6)
    q = rng.normal(size=(20, 16)).astype(dtype)
    g = rng.normal(size=(30, 16)).astype(dtype)
    d = pairwise_distances(q, g, metric)
    assert d.shape == (20, 30) and d.dtype == dtype
    ref = sk_pairwise_distances(q.astype(np.float64), g.astype(np.float64), metric=metric)
    np.testing.assert_allclose(d, ref, atol=1e-4 if dtype == np.float32 else 1e-10)


def test_pairwise_distances_edge_cases():
    x = np.array([[1.0, 0.0], [0.0, 0.0]])
    np.testing.assert_allclose(np.diag(pairwise_distances(x, x)), 0.0, atol=1e-12)
    cos = pairwise_distances(x, x, "cosine")
    assert cos[0, 0] == pytest.approx(0.0) and cos[1, 1] == pytest.approx(1.0)  # zero vector
    with pytest.raises(ValueError):
        pairwise_distances(x, x, "manhattan")
