"""Feature and decoded-image caches: reused when nothing changed, rebuilt when anything did."""

import os
import time

import numpy as np
import torch

from anivision.data.cache import decode_images
from anivision.embeddings import embed_paths
from anivision.models.backbone import create_backbone, data_config

from conftest import TINY_CNN, make_class_folders


def _paths(root):
    return sorted(str(p) for p in root.rglob("*.png"))


def _n_files(d):
    return len(list((d / "features").glob("*.npz"))) if (d / "features").exists() else 0


def test_feature_cache_reuse_and_invalidation(tmp_path, monkeypatch):
    root = make_class_folders(tmp_path / "d", n_classes=2, n_per_class=4)
    paths = _paths(root)
    cache = tmp_path / "cache"
    torch.manual_seed(0)
    bb = create_backbone(TINY_CNN, "none").eval()
    cfg = data_config(bb, 32)
    calls = {"n": 0}
    real_forward = bb.forward

    def counting_forward(x):
        calls["n"] += 1
        return real_forward(x)

    monkeypatch.setattr(bb, "forward", counting_forward)
    e1 = embed_paths(bb, paths, cfg, cache_dir=cache, progress=False)
    n_first = calls["n"]
    assert n_first > 0 and e1.features.shape == (8, bb.num_features) and e1.valid.all()
    e2 = embed_paths(bb, paths, cfg, cache_dir=cache, progress=False)
    assert calls["n"] == n_first  # served from the cache: no forward pass
    np.testing.assert_array_equal(e1.features, e2.features)

    # Each of these must invalidate: image size, data (a rewritten file), the file list, the weights.
    embed_paths(bb, paths, data_config(bb, 40), cache_dir=cache, progress=False)
    assert calls["n"] > n_first
    n = calls["n"]
    time.sleep(0.01)
    os.utime(paths[0], None)
    embed_paths(bb, paths, cfg, cache_dir=cache, progress=False)
    assert calls["n"] > n
    n = calls["n"]
    embed_paths(bb, paths[:-1], cfg, cache_dir=cache, progress=False)
    assert calls["n"] > n
    n = calls["n"]
    with torch.no_grad():
        next(bb.parameters()).add_(0.1)
    e3 = embed_paths(bb, paths, cfg, cache_dir=cache, progress=False)
    assert calls["n"] > n
    assert not np.allclose(e3.features, e1.features)
    assert _n_files(cache) == 5


def test_decoded_cache_is_memory_mapped_and_lists_corrupt(tmp_path):
    root = make_class_folders(tmp_path / "d", n_classes=2, n_per_class=3)
    bad = root / "class0" / "bad.png"
    bad.write_bytes(b"\x89PNG broken")
    paths = _paths(root)
    d1 = decode_images(paths, 24, cache_dir=tmp_path / "c", progress=False)
    assert d1.pixels.shape == (7, 24, 24, 3) and d1.pixels.dtype == np.uint8
    assert d1.valid.sum() == 6 and d1.skipped == [str(bad)] and str(bad) in d1.errors[str(bad)]
    d2 = decode_images(paths, 24, cache_dir=tmp_path / "c", progress=False)
    assert isinstance(d2.pixels, np.memmap)  # read from disk, not held in RAM
    np.testing.assert_array_equal(np.asarray(d1.pixels), np.asarray(d2.pixels))
    assert d2.skipped == [str(bad)]


def test_embedding_a_subset_of_rows(tmp_path):
    root = make_class_folders(tmp_path / "d", n_classes=2, n_per_class=4)
    paths = _paths(root)
    (root / "class0" / "bad.png").write_bytes(b"not an image")
    paths = sorted(paths + [str(root / "class0" / "bad.png")])
    bad = paths.index(str(root / "class0" / "bad.png"))
    cache = tmp_path / "cache"
    torch.manual_seed(0)
    bb = create_backbone(TINY_CNN, "none").eval()
    cfg = data_config(bb, 32)
    full = embed_paths(bb, paths, cfg, cache_dir=cache, progress=False)
    good = [i for i in range(len(paths)) if i != bad]
    rows = np.array([good[4], bad, good[0], good[6]])
    sub = embed_paths(bb, paths, cfg, cache_dir=cache, progress=False, indices=rows)
    assert sub.features.shape == (4, bb.num_features)
    assert sub.valid.tolist() == [True, False, True, True] and sub.skipped == [paths[bad]]
    np.testing.assert_allclose(sub.features, full.features[rows], rtol=1e-5, atol=1e-6)
    # Another subset is another cache entry, not the first one's rows.
    other = embed_paths(bb, paths, cfg, cache_dir=cache, progress=False, indices=rows[::-1])
    np.testing.assert_allclose(other.features, full.features[rows[::-1]], rtol=1e-5, atol=1e-6)
    assert _n_files(cache) == 3
