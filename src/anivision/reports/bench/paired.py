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
from anivision.reports.bench.tables import BASELINE, CellSummary, _best_strategy, _ok, _pct, grid_axes, md_table, seeds_hint

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


def _name(cell: Sequence[str]) -> str:
    return " / ".join(cell)


def _paired_row(c: Mapping[str, Any]) -> list[str]:
    """A pooled comparison: seeds, both accuracies (%), the difference and its interval (pp), p."""
    return [_name(c["a"]), _name(c["b"]), str(len(c["seeds"])), _pct(c["acc_a"]), _pct(c["acc_b"]),
            f"**{_pct(c['diff'], '+.2f')}**", _pct(c["ci_low"], "+.2f"), _pct(c["ci_high"], "+.2f"), f"{c['p_value']:.3f}"]


def _seed_rows(c: Mapping[str, Any]) -> list[list[str]]:
    """One row per seed-matched comparison (seed s of A against seed s of B)."""
    return [[_name(c["a"]), _name(c["b"]), str(p["seed"]), _pct(p["diff"], "+.2f"), _pct(p["ci_low"], "+.2f"),
             _pct(p["ci_high"], "+.2f"), f"{p['p_value']:.3f}"] for p in c["per_seed"]]


POOLED_HEADER = ["A", "B", "seeds", "accuracy A (%)", "accuracy B (%)", "Δ (pp)", "95% CI low (pp)", "95% CI high (pp)", "p"]
SEED_HEADER = ["A", "B", "seed", "Δ (pp)", "95% CI low (pp)", "95% CI high (pp)", "p"]


def _section(comparisons: Sequence[Mapping[str, Any]], empty: str) -> list[str]:
    """The pooled table, the seed-matched table (when a comparison has two or more seeds) and the
    comparisons that could not be made, as lines."""
    ok = [c for c in comparisons if "error" not in c]
    lines: list[str] = []
    if ok:
        lines += [md_table(POOLED_HEADER, [_paired_row(c) for c in ok])]
        if any(len(c["seeds"]) >= 2 for c in ok):
            lines += ["", "Seed-matched differences:", "", md_table(SEED_HEADER, [r for c in ok for r in _seed_rows(c)])]
    failed = [f"- {_name(c['a'])} vs {_name(c['b'])}: not compared, {c['error']}" for c in comparisons if "error" in c]
    lines += ([""] if lines and failed else []) + failed
    return lines or [empty]


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


def write_paired(out: Path, comparisons: Mapping[str, Sequence[Mapping[str, Any]]], seeds: Sequence[int] | None = None) -> Path:
    """``paired.md``: paired bootstrap comparisons on the shared test set, one number per cell.

    Args:
        out: the benchmark folder.
        comparisons: :func:`paired_comparisons`' result.
        seeds: the grid's seeds, for the hint under one-seed comparisons (default: the seeds compared).
    """
    lines = [
        "# Paired comparisons on the shared test set", "",
        "Every cell is scored on the same test images, so differences are tested pairwise. "
        "**Pooling over seeds:** only seeds on which both cells finished are used; for each test image the "
        "fraction of those seeds on which a cell is right is its score. Accuracies are in percent; Δ = A − B "
        "and its 95% interval are in percentage points (pp), the interval being the percentile interval of a "
        f"paired bootstrap over test images ({N_BOOT} resamples, `paired_bootstrap_diff`); p is two-sided, for "
        "no difference. This interval reflects test-set sampling; the seed-matched table (seed s of A against "
        "seed s of B, each its own `paired_bootstrap`) shows how much the difference moves with the training seed.", "",
        "## Best strategy vs linear probe, per backbone", "",
    ]
    per = comparisons.get("best_vs_linear_probe", [])
    lines += _section(per, "no backbone has both a linear probe and another finished strategy")
    lines += ["", "## Best cell vs runner-up", ""]
    top = comparisons.get("best_vs_runner_up", [])
    lines += _section(top, "fewer than two finished cells")
    made = [c for c in [*per, *top] if "error" not in c]
    if made and all(len(c["seeds"]) == 1 for c in made):
        used = seeds if seeds is not None else sorted({s for c in made for s in c["seeds"]})
        lines += ["", "One common seed per comparison: the interval covers test-set sampling only, with no spread "
                  f"over training seeds (no seed-matched table); {seeds_hint(used)}."]
    lines.append("")
    path = out / "paired.md"
    atomic_write_text(path, "\n".join(lines))
    return path
