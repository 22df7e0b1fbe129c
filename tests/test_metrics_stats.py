"""Confidence intervals and paired bootstrap: known values and sanity checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from anivision.metrics.stats import (
    episode_ci95,
    mean_ci,
    mean_ci95,
    paired_bootstrap,
    paired_bootstrap_diff,
)


def test_mean_ci_known_values():
    mean, half = mean_ci([1, 2, 3, 4, 5])
    # s = sqrt(2.5), t_{0.975, 4} = 2.7764451...
    assert mean == 3.0
    assert half == pytest.approx(2.7764451051977987 * math.sqrt(2.5) / math.sqrt(5), rel=1e-9)
    low, high = sps.t.interval(0.95, 4, loc=3.0, scale=sps.sem([1, 2, 3, 4, 5]))
    assert (mean - half, mean + half) == pytest.approx((low, high), rel=1e-12)
    _, half_n = mean_ci([1, 2, 3, 4, 5], method="normal")
    assert half_n == pytest.approx(1.959963984540054 * math.sqrt(2.5) / math.sqrt(5), rel=1e-9)
    assert mean_ci95([1, 2, 3, 4, 5]) == (mean, half)
    _, half_90 = mean_ci([1, 2, 3, 4, 5], confidence=0.9)
    assert half_90 < half


def test_mean_ci_edge_cases():
    mean, half = mean_ci([0.7])
    assert mean == 0.7 and math.isnan(half)
    assert mean_ci([0.5, 0.5, 0.5]) == (0.5, 0.0)
    with pytest.raises(ValueError):
        mean_ci([])
    with pytest.raises(ValueError):
        mean_ci([1.0, 2.0], method="bogus")


def test_mean_ci_coverage():
    # The t interval of n=4 normal samples should cover the true mean ~95% of the time.
    rng = np.random.default_rng(0)
    samples = rng.normal(loc=2.0, size=(2000, 4))
    covered = 0
    for row in samples:
        m, h = mean_ci(row)
        covered += abs(m - 2.0) <= h
    assert 0.93 < covered / len(samples) < 0.97


def test_episode_ci95_uses_population_std():
    accs = np.array([0.5, 0.6, 0.7, 0.8])
    assert episode_ci95(accs) == pytest.approx(1.96 * np.std(accs) / 2.0, rel=1e-12)
    assert episode_ci95([0.5] * 10) == 0.0


def test_paired_bootstrap_identical_predictions():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 5, 300)
    pred = np.where(rng.random(300) < 0.7, y, (y + 1) % 5)
    r = paired_bootstrap(y, pred, pred.copy(), n_boot=500)
    assert r["diff"] == 0.0 and r["ci_low"] == 0.0 and r["ci_high"] == 0.0
    assert r["p_value"] == 1.0
    assert r["acc_a"] == r["acc_b"] == pytest.approx(np.mean(pred == y))


def test_paired_bootstrap_clear_winner():
    y = np.arange(200) % 4
    r = paired_bootstrap(y, y, (y + 1) % 4, n_boot=1000)
    assert r["diff"] == 1.0 and r["ci_low"] == 1.0 and r["ci_high"] == 1.0
    assert r["p_value"] == pytest.approx(1.0 / 1001)


def test_paired_bootstrap_matches_normal_approximation_and_is_seeded():
    rng = np.random.default_rng(2)
    n = 2000
    y = rng.integers(0, 10, n)
    pred_a = np.where(rng.random(n) < 0.80, y, (y + 1) % 10)
    pred_b = np.where(rng.random(n) < 0.75, y, (y + 2) % 10)
    r = paired_bootstrap(y, pred_a, pred_b, n_boot=2000, seed=0)
    d = (pred_a == y).astype(float) - (pred_b == y)
    assert r["diff"] == pytest.approx(d.mean())
    half = 1.96 * d.std(ddof=1) / math.sqrt(n)
    # Percentile bootstrap ~ normal interval for a mean of 2000 items.
    assert r["ci_low"] == pytest.approx(d.mean() - half, abs=0.006)
    assert r["ci_high"] == pytest.approx(d.mean() + half, abs=0.006)
    assert r["ci_low"] < r["diff"] < r["ci_high"]
    assert r["p_value"] < 0.01  # a 5-point gap on 2000 images is real
    assert paired_bootstrap(y, pred_a, pred_b, n_boot=2000, seed=0) == r
    assert paired_bootstrap(y, pred_a, pred_b, n_boot=2000, seed=1) != r


def test_paired_bootstrap_no_real_difference_has_large_p():
    rng = np.random.default_rng(3)
    n = 500
    y = rng.integers(0, 3, n)
    pred_a = np.where(rng.random(n) < 0.7, y, (y + 1) % 3)
    pred_b = np.where(rng.random(n) < 0.7, y, (y + 1) % 3)
    # Both models are 70% accurate; this seeded draw shows a 3.2-point gap by chance.
    r = paired_bootstrap_diff((pred_a == y), (pred_b == y), n_boot=1000)
    assert r["diff"] == pytest.approx(0.032)
    assert r["ci_low"] < 0.0 < r["ci_high"]
    assert r["p_value"] > 0.2


def test_paired_bootstrap_blocks_do_not_change_the_distribution(monkeypatch):
    import anivision.metrics.stats as stats

    a = np.random.default_rng(4).random(100)
    b = np.random.default_rng(5).random(100)
    monkeypatch.setattr(stats, "_BOOT_BLOCK_ELEMENTS", 100 * 7)  # 7 resamples per block
    r = stats.paired_bootstrap_diff(a, b, n_boot=300)
    assert r["n_boot"] == 300
    assert r["ci_low"] < r["diff"] < r["ci_high"]


def test_paired_bootstrap_validation():
    with pytest.raises(ValueError):
        paired_bootstrap(np.zeros(3), np.zeros(3), np.zeros(4))
