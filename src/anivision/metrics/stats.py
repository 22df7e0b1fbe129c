"""Uncertainty for reported numbers: confidence intervals and paired bootstrap comparisons.

Three conventions live here, each where it belongs:

- :func:`mean_ci` for a handful of repeated runs (seeds): Student-t interval with the sample
  standard deviation (``ddof=1``), because with 3-5 seeds the normal 1.96 understates the
  uncertainty (t_{0.975, 2} = 4.30).
- :func:`episode_ci95` for few-shot episodes: ``1.96 * std / sqrt(T)`` with the population std
  (``ddof=0``), the formula of the prototypical-networks code and easyfsl, so numbers are
  comparable with published few-shot tables (T is in the hundreds or thousands, where the
  difference is negligible anyway).
- :func:`paired_bootstrap` for "is model A better than model B on this test set": resampling
  test items keeps the pairing, which is far more sensitive than comparing two separate CIs.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

# Bootstrap resamples are drawn in blocks of about this many indices to bound memory.
_BOOT_BLOCK_ELEMENTS = 1 << 22


def mean_ci(
    values: Sequence[float] | np.ndarray, confidence: float = 0.95, method: str = "t"
) -> tuple[float, float]:
    """Mean and confidence-interval half width of independent repeated measurements.

    ``half_width = q * s / sqrt(n)`` with ``s`` the sample standard deviation (``ddof=1``) and
    ``q`` the two-sided quantile of Student's t with ``n - 1`` degrees of freedom
    (``method="t"``, right for a few seeds) or of the standard normal (``method="normal"``,
    1.96 at 95%).

    Args:
        values: (n,) measurements, e.g. test accuracy of each seed.
        confidence: coverage of the interval, in (0, 1).
        method: ``"t"`` or ``"normal"``.

    Returns:
        ``(mean, half_width)``; the interval is ``mean +- half_width``. ``half_width`` is NaN
        when ``n == 1`` (one run says nothing about its spread).
    """
    from scipy import stats as sps  # scipy comes with scikit-learn; imported only when used

    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("mean_ci needs at least one value")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    mean = float(x.mean())
    if x.size == 1:
        return mean, float("nan")
    p = 0.5 + confidence / 2.0
    if method == "t":
        q = float(sps.t.ppf(p, df=x.size - 1))
    elif method == "normal":
        q = float(sps.norm.ppf(p))
    else:
        raise ValueError(f"unknown method {method!r}; use 't' or 'normal'")
    return mean, q * float(x.std(ddof=1)) / math.sqrt(x.size)


def mean_ci95(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """95% Student-t interval of a mean: ``mean_ci(values, 0.95, method="t")``."""
    return mean_ci(values, 0.95, method="t")


def episode_ci95(accs: Sequence[float] | np.ndarray) -> float:
    """Half width of the 95% interval of mean few-shot episode accuracy.

    ``1.96 * std(accs, ddof=0) / sqrt(T)``: the population std, as the prototypical networks
    reference code and easyfsl compute it, so the number matches published tables.

    Args:
        accs: (T,) accuracy of each episode (fractions or percentages; the result has the
            same unit).

    Returns:
        The half width; report ``mean(accs) +- episode_ci95(accs)``.
    """
    x = np.asarray(accs, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("episode_ci95 needs at least one episode")
    return float(1.96 * x.std(ddof=0) / math.sqrt(x.size))


def paired_bootstrap_diff(
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, float]:
    """Paired bootstrap of ``mean(scores_a) - mean(scores_b)`` over shared test items.

    Each resample draws n items with replacement and takes the mean of the per-item
    differences, so an item that is hard for both models stays hard for both. Works for any
    per-item score: 0/1 correctness, per-query AP, per-image loss.

    The interval is the percentile interval of the resampled differences. The two-sided p-value
    tests "no difference" by centring the bootstrap distribution on zero:
    ``p = (1 + #{|d* - d| >= |d|}) / (1 + n_boot)`` (Davison & Hinkley 1997, the +1 keeps it
    from being exactly 0 with a finite number of resamples).

    Args:
        scores_a: (n,) per-item scores of model A.
        scores_b: (n,) per-item scores of model B on the same items, in the same order.
        n_boot: number of bootstrap resamples.
        seed: seed of the ``numpy.random.Generator``; same seed, same answer.
        confidence: coverage of the interval.

    Returns:
        Dict with ``diff`` (observed mean difference A - B), ``ci_low``, ``ci_high``,
        ``p_value``, ``n_boot``.
    """
    a = np.asarray(scores_a, dtype=np.float64).ravel()
    b = np.asarray(scores_b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired scores must have equal length, got {a.size} and {b.size}")
    if a.size == 0:
        raise ValueError("paired bootstrap needs at least one item")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    d = a - b
    n = d.size
    observed = float(d.mean())

    rng = np.random.default_rng(seed)
    boot = np.empty(n_boot)
    block = max(1, _BOOT_BLOCK_ELEMENTS // n)
    for start in range(0, n_boot, block):
        stop = min(start + block, n_boot)
        idx = rng.integers(0, n, size=(stop - start, n))
        boot[start:stop] = d[idx].mean(axis=1)

    alpha = 1.0 - confidence
    low, high = np.quantile(boot, [alpha / 2.0, 1.0 - alpha / 2.0])
    # Tolerance so that resampled means equal to |d| up to rounding still count as "as extreme".
    extreme = np.abs(boot - observed) >= abs(observed) - 1e-12
    p_value = (1.0 + float(extreme.sum())) / (1.0 + n_boot)
    return {
        "diff": observed,
        "ci_low": float(low),
        "ci_high": float(high),
        "p_value": p_value,
        "n_boot": int(n_boot),
    }


def paired_bootstrap(
    y_true: np.ndarray,
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, float]:
    """Paired bootstrap of the accuracy difference of two classifiers on one test set.

    Args:
        y_true: (n,) true labels.
        pred_a: (n,) predicted labels of classifier A.
        pred_b: (n,) predicted labels of classifier B, same items in the same order.
        n_boot: number of bootstrap resamples.
        seed: seed of the ``numpy.random.Generator``.
        confidence: coverage of the interval.

    Returns:
        Dict with ``diff`` (accuracy A - accuracy B, as a fraction), ``ci_low``, ``ci_high``,
        ``p_value`` (two-sided, see :func:`paired_bootstrap_diff`), ``acc_a``, ``acc_b``,
        ``n_boot``.
    """
    y_true = np.asarray(y_true).ravel()
    pred_a = np.asarray(pred_a).ravel()
    pred_b = np.asarray(pred_b).ravel()
    if not (y_true.shape == pred_a.shape == pred_b.shape):
        raise ValueError(
            f"y_true, pred_a, pred_b lengths differ: {y_true.size}, {pred_a.size}, {pred_b.size}"
        )
    correct_a = (pred_a == y_true).astype(np.float64)
    correct_b = (pred_b == y_true).astype(np.float64)
    result = paired_bootstrap_diff(correct_a, correct_b, n_boot=n_boot, seed=seed, confidence=confidence)
    result["acc_a"] = float(correct_a.mean())
    result["acc_b"] = float(correct_b.mean())
    return result
