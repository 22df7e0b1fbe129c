"""EpisodeSampler: episode layout, determinism, small classes, too few classes."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from anivision.data.samplers import EpisodeSampler
from anivision.errors import AnivisionError


def _labels(counts: list[int]) -> np.ndarray:
    return np.concatenate([np.full(n, c) for c, n in enumerate(counts)])


def test_episode_layout() -> None:
    labels = _labels([20, 18, 25, 16, 30, 19])
    s = EpisodeSampler(labels, n_way=5, k_shot=3, n_query=4, n_tasks=50, seed=1)
    idx, classes = s.sample()
    assert idx.shape == (50, 5, 7) and classes.shape == (50, 5)
    for t in range(50):
        assert len(set(classes[t])) == 5  # distinct classes per episode
        assert len(set(idx[t].ravel())) == 35  # no image twice in an episode
        for j in range(5):
            assert (labels[idx[t, j]] == classes[t, j]).all()  # row j is class j, support and queries


def test_iteration_matches_sample_and_is_deterministic() -> None:
    labels = _labels([12] * 6)
    a = EpisodeSampler(labels, 3, 2, 3, n_tasks=20, seed=7)
    idx, _ = a.sample()
    flat = list(a)
    assert len(flat) == len(a) == 20
    assert all(f.shape == (a.episode_size,) for f in flat)
    assert np.array_equal(np.stack(flat), idx.reshape(20, -1))
    assert np.array_equal(np.stack(list(a)), np.stack(flat))  # iterating again restarts the generator
    b = EpisodeSampler(labels, 3, 2, 3, n_tasks=20, seed=7)
    assert np.array_equal(b.sample()[0], idx)
    c = EpisodeSampler(labels, 3, 2, 3, n_tasks=20, seed=8)
    assert not np.array_equal(c.sample()[0], idx)


def test_small_class_error_names_class_and_count() -> None:
    labels = _labels([20, 7, 20, 20, 20, 20])
    names = ["emilia", "rem", "ram", "subaru", "beatrice", "puck"]
    with pytest.raises(AnivisionError, match=r"class 'rem' has 7 images; 5-shot \+ 10-query episodes need 15"):
        EpisodeSampler(labels, 5, 5, 10, 10, class_names=names)


def test_skip_small_classes_warns_and_excludes(caplog: pytest.LogCaptureFixture) -> None:
    labels = _labels([20, 7, 20, 20, 20, 20])
    names = ["emilia", "rem", "ram", "subaru", "beatrice", "puck"]
    with caplog.at_level(logging.WARNING):
        s = EpisodeSampler(labels, 5, 5, 10, 30, skip_small_classes=True, class_names=names)
    assert "rem" in caplog.text
    assert s.excluded == {"rem": 7}
    _, classes = s.sample()
    assert 1 not in classes


def test_too_few_classes() -> None:
    with pytest.raises(AnivisionError, match="5-way episodes need 5 classes; there are only 3"):
        EpisodeSampler(_labels([20, 20, 20]), 5, 1, 5, 10)
    # Enough classes overall, but too few left after skipping the small ones.
    with pytest.raises(AnivisionError, match="only 4 have that"):
        EpisodeSampler(_labels([20, 20, 20, 20, 3]), 5, 1, 5, 10, skip_small_classes=True)


def test_bad_arguments_and_ignored_labels() -> None:
    with pytest.raises(AnivisionError, match="k_shot"):
        EpisodeSampler(_labels([5, 5]), 2, 0, 1, 1)
    labels = np.array([-1] * 10 + [0] * 3 + [1] * 3)  # -1: unreadable images, never sampled
    idx, _ = EpisodeSampler(labels, 2, 1, 2, 5).sample()
    assert (idx >= 10).all()


def test_batch_sampler_for_dataloader() -> None:
    labels = _labels([6] * 4)
    ds = TensorDataset(torch.arange(len(labels)), torch.from_numpy(labels))
    s = EpisodeSampler(labels, 2, 1, 2, n_tasks=3, seed=0)
    batches = [x for x, _ in DataLoader(ds, batch_sampler=s)]
    assert len(batches) == 3
    assert np.array_equal(batches[0].numpy(), next(iter(s)))
