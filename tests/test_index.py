"""Gallery indexes (anivision.index): exact top-k against a full sort, faiss against exact,
IVF-PQ recall, files, appending, and the one-line errors."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from anivision.errors import AnivisionError
from anivision.index import VectorIndex, build_index, ivfpq_params, top_k_smallest
from anivision.metrics.retrieval import pairwise_distances


def _data(n: int = 3000, q: int = 40, dim: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, dim)).astype(np.float32), rng.standard_normal((q, dim)).astype(np.float32)


def _brute(q: np.ndarray, g: np.ndarray, metric: str, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Today's path: the full distance matrix and a full stable argsort of every row."""
    full = pairwise_distances(q.astype(np.float64), g.astype(np.float64), "cosine" if metric == "cosine" else "euclidean")
    full = full ** 2 if metric == "sqeuclidean" else full
    order = np.argsort(full, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(full, order, axis=1), order


def _recall(truth: np.ndarray, found: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(truth, found)]))


def test_top_k_smallest_matches_a_full_stable_sort_ties_included():
    rng = np.random.default_rng(1)
    d = rng.integers(0, 5, size=(30, 200)).astype(np.float32)  # many ties
    for k in (1, 7, 200, 500):
        vals, cols = top_k_smallest(d, k)
        full = np.argsort(d, axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(vals, np.take_along_axis(d, full, axis=1))
        # within a tie the stable sort keeps the lower column first; argpartition may pick other
        # tied columns at the k-th value, but each row's order is by (value, column)
        assert (np.diff(vals, axis=1) >= 0).all()
        same_val = np.diff(vals, axis=1) == 0
        assert (np.diff(cols, axis=1)[same_val] > 0).all()
        if k >= 200:
            np.testing.assert_array_equal(cols, full)


@pytest.mark.parametrize("metric", ["cosine", "euclidean", "sqeuclidean"])
def test_exact_index_equals_full_argsort(metric, monkeypatch):
    g, q = _data()
    monkeypatch.setattr("anivision.index.CHUNK_BYTES", 7 * len(g) * 4)  # several query chunks
    dist, ids = build_index(g, "exact", metric).search(q, 10)
    want_d, want_i = _brute(q, g, metric, 10)
    np.testing.assert_array_equal(ids, want_i)
    np.testing.assert_allclose(dist, want_d, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("metric", ["cosine", "euclidean", "sqeuclidean"])
def test_faiss_flat_equals_exact(metric):
    g, q = _data(seed=2)
    de, ie = build_index(g, "exact", metric).search(q, 10)
    df, i_f = build_index(g, "faiss", metric).search(q, 10)
    np.testing.assert_array_equal(i_f, ie)
    np.testing.assert_allclose(df, de, rtol=1e-4, atol=1e-4)


def test_ivfpq_recall_on_clustered_data():
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((80, 64)).astype(np.float32) * 2.0
    g = centres[rng.integers(0, 80, 20000)] + rng.standard_normal((20000, 64)).astype(np.float32)
    q = centres[rng.integers(0, 80, 100)] + rng.standard_normal((100, 64)).astype(np.float32)
    _, truth = build_index(g, "exact", "cosine").search(q, 10)
    ivf = build_index(g, "ivfpq", "cosine")
    assert ivf.params["nlist"] == 128 and 64 % ivf.params["m"] == 0
    _, found = ivf.search(q, 10)
    assert _recall(truth, found) > 0.9
    _, codes_only = build_index(g, "ivfpq", "cosine", rerank=0).search(q, 10)
    assert 0.3 < _recall(truth, codes_only) < _recall(truth, found) + 1e-9
    _, one_list = ivf.search(q, 10, nprobe=1)  # fewer lists visited: lower recall, as it should
    assert _recall(truth, one_list) < _recall(truth, found)


def test_ivfpq_params_are_sensible():
    p = ivfpq_params(1_000_000, 1280)
    assert p == {"nlist": 1024, "m": 64, "nbits": 8, "nprobe": 64, "train_size": 65536}
    assert ivfpq_params(1000, 7)["m"] == 1 and ivfpq_params(1000, 7)["nlist"] == 25
    with pytest.raises(AnivisionError, match="at least 256 vectors"):
        ivfpq_params(100, 64)


@pytest.mark.parametrize("kind", ["exact", "faiss", "ivfpq"])
def test_save_load_round_trip_and_append(kind, tmp_path):
    g, q = _data(n=4000, seed=4)
    ids = np.arange(4000, dtype=np.int64) * 3 + 5
    index = build_index(g[:3000], kind, "euclidean", fingerprint="fp-a", ids=ids[:3000])
    index.save(tmp_path / "ix")
    meta = json.loads((tmp_path / "ix" / "index.json").read_text())
    assert meta["kind"] == kind and meta["dim"] == 48 and meta["count"] == 3000 and meta["fingerprint"] == "fp-a"
    assert not list((tmp_path / "ix").glob("*.tmp"))
    loaded = VectorIndex.load(tmp_path / "ix", dim=48, fingerprint="fp-a")
    for a, b in zip(index.search(q, 5), loaded.search(q, 5)):
        np.testing.assert_array_equal(a, b)
    loaded.add(g[3000:], ids[3000:])  # append: the stored vectors stay as they are
    loaded.save(tmp_path / "ix")
    again = VectorIndex.load(tmp_path / "ix")
    assert len(again) == 4000
    d, found = again.search(g[3500:3510], 1)  # the appended vectors find themselves, by their ids
    np.testing.assert_array_equal(found[:, 0], ids[3500:3510])
    if kind != "ivfpq":
        np.testing.assert_array_equal(again.search(q, 5)[1], build_index(g, kind, "euclidean", ids=ids).search(q, 5)[1])


def test_wrong_dimension_and_other_model_are_one_line_errors(tmp_path):
    g, q = _data(n=500)
    index = build_index(g, "exact", "cosine", fingerprint="tf_efficientnet_lite0:abc")
    with pytest.raises(AnivisionError, match="dimension 32, the index holds 48-d") as e:
        index.search(q[:, :32], 3)
    assert "\n" not in str(e.value)
    with pytest.raises(AnivisionError, match="dimension 32"):
        index.add(q[:, :32])
    index.save(tmp_path / "ix")
    with pytest.raises(AnivisionError, match="built with tf_efficientnet_lite0:abc") as e:
        VectorIndex.load(tmp_path / "ix", fingerprint="resnet50:def")
    assert "\n" not in str(e.value)
    with pytest.raises(AnivisionError, match="48-d vectors .* 1280-d"):
        VectorIndex.load(tmp_path / "ix", dim=1280)
    (tmp_path / "ix" / "ids.npy").write_bytes(np.lib.format.magic(1, 0) + b"")  # a broken file
    np.save(tmp_path / "ix" / "ids.npy", np.arange(3))
    with pytest.raises(AnivisionError, match="disagree"):
        VectorIndex.load(tmp_path / "ix")
    with pytest.raises(AnivisionError, match="not an index folder"):
        VectorIndex.load(tmp_path / "nothing")
    with pytest.raises(AnivisionError, match="--index must be one of"):
        VectorIndex(4, kind="hnsw")


def test_faiss_missing_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss -> ImportError, as when it is not installed
    with pytest.raises(AnivisionError, match=r'faiss is not installed .*anivision\[index\]'):
        VectorIndex(8, kind="faiss")
    with pytest.raises(AnivisionError, match=r'anivision\[index\]'):
        build_index(np.zeros((300, 8), np.float32), "ivfpq")


def test_float64_exact_index_keeps_float64():
    g, q = _data(n=200)
    d, _ = build_index(g.astype(np.float64), "exact", "sqeuclidean").search(q, 3)
    assert d.dtype == np.float64
