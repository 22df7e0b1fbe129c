"""Paired comparisons of benchmark cells on the shared test set (``paired.md``).

Seeds are pooled by **seed means**: for each test image, the fraction of the common seeds on
which a cell is right; the paired bootstrap resamples test images of the difference of those
fractions. Seed-matched differences (seed s of A vs seed s of B) are listed beside it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from anivision.files import atomic_write_text
from anivision.metrics.stats import paired_bootstrap, paired_bootstrap_diff
from anivision.reports.bench.tables import BASELINE, CellSummary, _best_strategy, _ok, grid_axes

N_BOOT = 2000


# -------------------------------------------------------------------- paired comparisons


def _correct(row: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """(labels, predictions) of a finished cell's test split, or None if the files are missing."""
    d = Path(row["run_dir"])
    if not (d / "test_logits.npy").exists() or not (d / "test_labels.npy").exists():
        return None
    return np.load(d / "test_labels.npy"), np.load(d / "test_logits.npy").argmax(axis=1)


def paired_comparison(rows: Sequence[Mapping[str, Any]], a: tuple[str, str], b: tuple[str, str], n_boot: int = N_BOOT) -> dict[str, Any]:
    """Paired bootstrap of the accuracy difference of cell ``a`` minus cell ``b`` on the shared test set.

    Only seeds on which both cells finished are used. The pooled comparison averages each test
    image's correctness over those seeds per cell and bootstraps test images
    (:func:`~anivision.metrics.stats.paired_bootstrap_diff`); each seed-matched pair is also
    compared on its own with :func:`~anivision.metrics.stats.paired_bootstrap`.

    Args:
        rows: the grid's rows.
        a: ``(backbone, strategy)`` of cell A.
        b: ``(backbone, strategy)`` of cell B.
        n_boot: bootstrap resamples.

    Returns:
        Dict with ``a``, ``b``, ``seeds``, ``n_items``, ``acc_a``, ``acc_b``, ``diff``,
        ``ci_low``, ``ci_high``, ``p_value`` (fractions) and ``per_seed`` (list of dicts), or
        with ``error`` when no paired comparison is possible.
    """
    res: dict[str, Any] = {"a": list(a), "b": list(b)}
    ra = {int(r["seed"]): r for r in _ok(rows, *a)}
    rb = {int(r["seed"]): r for r in _ok(rows, *b)}
    seeds = [s for s in ra if s in rb]
    preds_a, preds_b, labels = [], [], None
    used = []
    for s in seeds:
        ca, cb = _correct(ra[s]), _correct(rb[s])
        if ca is None or cb is None:
            continue
        for y in (ca[0], cb[0]):
            if labels is None:
                labels = y
            elif y.shape != labels.shape or not np.array_equal(y, labels):
                res["error"] = "the cells' test sets differ (not the same split?)"
                return res
        preds_a.append(ca[1])
        preds_b.append(cb[1])
        used.append(s)
    if not used or labels is None or labels.size == 0:
        res["error"] = "no seed on which both cells finished with saved test predictions"
        return res
    score_a = np.mean([p == labels for p in preds_a], axis=0)
    score_b = np.mean([p == labels for p in preds_b], axis=0)
    pooled = paired_bootstrap_diff(score_a, score_b, n_boot=n_boot, seed=0)
    res.update(seeds=used, n_items=int(labels.size), acc_a=float(score_a.mean()), acc_b=float(score_b.mean()), **pooled)
    res["per_seed"] = [
        {"seed": s, **paired_bootstrap(labels, pa, pb, n_boot=n_boot, seed=0)} for s, pa, pb in zip(used, preds_a, preds_b)
    ]
    return res


def _paired_line(c: Mapping[str, Any]) -> str:
    name_a, name_b = " / ".join(c["a"]), " / ".join(c["b"])
    if "error" in c:
        return f"| {name_a} | {name_b} | – | – | – | – | – | – | {c['error']} |"
    per_seed = ", ".join(f"s{p['seed']} {100 * p['diff']:+.2f}" for p in c["per_seed"])
    return (f"| {name_a} | {name_b} | {len(c['seeds'])} | {100 * c['acc_a']:.2f} | {100 * c['acc_b']:.2f} | "
            f"**{100 * c['diff']:+.2f}** | [{100 * c['ci_low']:+.2f}, {100 * c['ci_high']:+.2f}] | {c['p_value']:.3f} | {per_seed} |")


def paired_comparisons(rows: Sequence[Mapping[str, Any]], summaries: Sequence[CellSummary]) -> dict[str, list[dict[str, Any]]]:
    """Per backbone best strategy vs linear probe; overall best cell vs runner-up."""
    backbones, _, _ = grid_axes(rows)
    per_backbone = []
    for b in backbones:
        best = _best_strategy(summaries, b, exclude=BASELINE)
        if best and any(c.backbone == b and c.strategy == BASELINE and c.n > 0 for c in summaries):
            per_backbone.append(paired_comparison(rows, (b, best.strategy), (b, BASELINE)))
    ranked = sorted((c for c in summaries if c.n > 0 and np.isfinite(c.acc_mean)), key=lambda c: -c.acc_mean)
    overall = []
    if len(ranked) >= 2:
        overall.append(paired_comparison(rows, (ranked[0].backbone, ranked[0].strategy), (ranked[1].backbone, ranked[1].strategy)))
    return {"best_vs_linear_probe": per_backbone, "best_vs_runner_up": overall}


def write_paired(out: Path, comparisons: Mapping[str, Sequence[Mapping[str, Any]]]) -> Path:
    """``paired.md``: paired bootstrap comparisons on the shared test set."""
    header = ["| A | B | seeds | acc A % | acc B % | Δ (points) | 95% CI | p | seed-matched Δ |",
              "|---|---|---|---|---|---|---|---|---|"]
    lines = [
        "# Paired comparisons on the shared test set", "",
        "Every cell is scored on the same test images, so differences are tested pairwise. "
        "**Pooling over seeds:** only seeds on which both cells finished are used; for each test image the "
        "fraction of those seeds on which a cell is right is its score, and the 95% interval is the "
        f"percentile interval of a paired bootstrap over test images ({N_BOOT} resamples, "
        "`paired_bootstrap_diff`, two-sided p for no difference). This interval reflects test-set sampling; "
        "the seed-matched column (seed s of A against seed s of B, each its own `paired_bootstrap`) shows "
        "how much the difference moves with the training seed.", "",
        "## Best strategy vs linear probe, per backbone", "",
    ]
    per = comparisons.get("best_vs_linear_probe", [])
    lines += (header + [_paired_line(c) for c in per]) if per else ["no backbone has both a linear probe and another finished strategy"]
    lines += ["", "## Best cell vs runner-up", ""]
    top = comparisons.get("best_vs_runner_up", [])
    lines += (header + [_paired_line(c) for c in top]) if top else ["fewer than two finished cells"]
    lines.append("")
    path = out / "paired.md"
    atomic_write_text(path, "\n".join(lines))
    return path
