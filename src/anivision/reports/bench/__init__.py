"""The benchmark report: Table-1 layout, confidence intervals, figures and paired comparisons.

Input is the list of rows ``anivision.tasks.bench.run_bench`` returns (one per backbone x
strategy x seed); per-class F1 and test predictions are read from each cell's run folder
(``metrics.json``, ``test_logits.npy``, ``test_labels.npy``).

Conventions:

- Accuracy is shown in percent; "± std" is the sample standard deviation over seeds
  (``ddof=1``) and the CI table is the Student-t 95% interval of :func:`~anivision.metrics.stats.mean_ci`.
- Every markdown table holds one number per cell, with the unit in its header (``%`` for
  accuracy and F1, ``pp`` for differences and spreads). A cell with one finished seed shows its
  value, "—" for the spread and interval, and a sentence under the table says so; ``bars.png``
  names a 95% interval only when every bar has two seeds or more.
- Paired comparisons pool seeds by **seed means**: for each test image, the fraction of the
  common seeds on which a cell is right; the paired bootstrap resamples test images (the shared,
  fixed set) of the difference of those fractions. Seed-matched differences (seed s of A vs
  seed s of B, each with its own paired bootstrap) are listed beside it. The interval speaks to
  test-set sampling; the spread over seeds is the other source of uncertainty, shown by the
  per-seed differences.
"""


from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from anivision.files import atomic_write_json, atomic_write_text
from anivision.reports.bench.paired import N_BOOT, paired_comparison, paired_comparisons, write_paired
from anivision.reports.bench.tables import (
    BASELINE,
    ID_COLUMNS,
    METRIC_COLUMNS,
    CellSummary,
    _table1,
    accuracy_gain_matrix,
    grid_axes,
    one_seed_note,
    summarize_cells,
    table1_legend,
    write_failures,
    write_per_class_f1,
    write_results_csv,
    write_table,
)
from anivision.reports.html import write_html_report
from anivision.reports.plots import plot_bars_with_errors, plot_heatmap

__all__ = [
    "BASELINE", "ID_COLUMNS", "METRIC_COLUMNS", "N_BOOT", "CellSummary", "accuracy_gain_matrix", "grid_axes",
    "paired_comparison", "paired_comparisons", "summarize_cells", "write_bench_report", "write_failures",
    "write_paired", "write_per_class_f1", "write_results_csv", "write_table", "peak_rss_mb",
]


# ------------------------------------------------------------------------------ report


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process in MiB (``getrusage``), None where unavailable."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def _seeds_phrase(cells: Sequence[CellSummary], prefix: str = "mean over ") -> str:
    """``"one seed"``, ``"mean over 3 seeds"`` or ``"mean over 2–3 seeds"`` for the finished cells."""
    ns = sorted({c.n for c in cells if c.n > 0})
    if not ns:
        return "no finished seed"
    if ns == [1]:
        return "one seed"
    return f"{prefix}{ns[0]} seeds" if len(ns) == 1 else f"{prefix}{ns[0]}–{ns[-1]} seeds"


def _bars_title(cells: Sequence[CellSummary]) -> str:
    """Title of ``bars.png``: the interval is named only where every bar has one."""
    ns = [c.n for c in cells]
    if min(ns) >= 2:
        return f"test accuracy per cell (mean ± 95% CI over {_seeds_phrase(cells, prefix='')})"
    if max(ns) == 1:
        return "test accuracy per cell (one seed, no interval)"
    return "test accuracy per cell (mean ± 95% CI over seeds; cells with one seed: no interval)"


def write_bench_report(out: str | Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write every benchmark artefact into ``out`` and return the path of ``bench.md``.

    Files: ``results.csv``, ``failures.json``, ``table.md``, ``heatmap.png`` (when the grid has
    a linear probe and another strategy), ``bars.png``, ``per_class_f1.md``, ``paired.md``,
    ``bench.json`` (summary, heatmap values, ``peak_rss_mb``) and ``bench.md``.

    Args:
        out: the benchmark folder.
        rows: :func:`anivision.tasks.bench.run_bench` rows.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = list(rows)
    backbones, strategies, seeds = grid_axes(rows)
    write_results_csv(out / "results.csv", rows)
    write_failures(out / "failures.json", rows)
    summaries = summarize_cells(rows)
    write_table(out, rows, summaries)
    write_per_class_f1(out, rows, summaries)
    comparisons = paired_comparisons(rows, summaries)
    write_paired(out, comparisons, seeds)

    files = ["results.csv", "failures.json", "table.md", "per_class_f1.md", "paired.md"]
    gain, gain_rows, gain_cols = accuracy_gain_matrix(rows)
    done = [c for c in summaries if c.n > 0]
    if gain.size and np.isfinite(gain).any():
        plot_heatmap(gain, gain_rows, gain_cols, out / "heatmap.png",
                     title=f"accuracy gain over linear probe (pp, {_seeds_phrase(done)})", fmt="{:+.2f}",
                     xlabel="strategy", ylabel="backbone", value_label="test accuracy gain over linear probe (points)")
        files.append("heatmap.png")
    if done:
        plot_bars_with_errors([f"{c.backbone} / {c.strategy}" for c in done], [c.acc_mean for c in done],
                              [c.acc_ci for c in done], out / "bars.png", ylabel="test accuracy (%)",
                              title=_bars_title(done), fmt="{:.2f}", xlabel="backbone / strategy")
        files.append("bars.png")

    n_failed = sum(r.get("status") != "ok" for r in rows)
    ranked = sorted(done, key=lambda c: -c.acc_mean)
    args_path = out / "bench_args.json"
    summary = {
        "backbones": backbones, "strategies": strategies, "seeds": seeds,
        "n_cells": len(rows), "n_ok": len(rows) - n_failed, "n_failed": n_failed,
        "n_reused": sum(bool(r.get("reused")) for r in rows if r.get("status") == "ok"),
        "cell_seconds_total": float(sum(float(r.get("cell_seconds") or 0.0) for r in rows)),
        "peak_rss_mb": peak_rss_mb(),
        "best_cell": asdict(ranked[0]) if ranked else None,
        "cells": [asdict(c) for c in summaries],
        "heatmap": {"rows": gain_rows, "columns": gain_cols, "values": gain.tolist(),
                    "unit": "accuracy points over linear_probe, mean over seeds"},
        "paired": comparisons,
        "bench_args": json.loads(args_path.read_text()) if args_path.exists() else None,
        "files": files + ["bench.md"],
    }
    atomic_write_json(out / "bench.json", _jsonable(summary))

    lines = [
        "# Benchmark", "",
        f"{len(backbones)} backbone(s) × {len(strategies)} strategy(ies) × {len(seeds)} seed(s) = {len(rows)} cells: "
        f"{len(rows) - n_failed} finished, {n_failed} failed. Seeds: {', '.join(map(str, seeds))}.",
    ]
    if summary["bench_args"]:
        lines.append(f"Every cell uses the split `{summary['bench_args']['split']}` (same test images).")
    if ranked:
        b = ranked[0]
        lines.append(f"Best cell: **{b.backbone} / {b.strategy}**, {b.acc_mean:.2f}% test accuracy "
                     f"({_seeds_phrase([b])}).")
    note = one_seed_note(summaries, seeds)
    lines += ["", "## Table", "", table1_legend(seeds), "", _table1(summaries, backbones, strategies), "",
              *([note, ""] if note else []),
              "## Files", "",
              "- [results.csv](results.csv): one row per backbone / strategy / seed with every scalar metric",
              "- [table.md](table.md): the table above, 95% confidence intervals, cost",
              "- [per_class_f1.md](per_class_f1.md): per-class F1, linear probe vs best strategy",
              "- [paired.md](paired.md): paired bootstrap comparisons on the shared test set",
              "- [failures.json](failures.json): failed cells and their errors",
              "- [bench.json](bench.json): machine-readable summary (heatmap values, peak RSS)",
              "- `runs/<backbone>__<strategy>__s<seed>/`: each cell's run folder and `report.md`", ""]
    if "heatmap.png" in files:
        lines += ["## Gain over linear probe", "", "![accuracy gain over linear probe](heatmap.png)", ""]
    elif BASELINE not in strategies:
        lines += ["No heatmap: the grid has no linear_probe baseline.", ""]
    if "bars.png" in files:
        lines += ["## Accuracy per cell", "", "![accuracy per cell](bars.png)", ""]
    if n_failed:
        lines += ["## Failed cells", "", "| backbone | strategy | seed | error |", "|---|---|---|---|"]
        lines += [f"| {r['backbone']} | {r['strategy']} | {r['seed']} | {str(r.get('error', '')).replace('|', '/')} |"
                  for r in rows if r.get("status") != "ok"]
        lines += ["", "Rerun the same command to retry them; finished cells are reused.", ""]
    rss = summary["peak_rss_mb"]
    if rss is not None:
        lines += [f"Peak memory (RSS) of the bench process: {rss:.0f} MiB.", ""]
    path = out / "bench.md"
    atomic_write_text(path, "\n".join(lines))
    write_html_report(path)
    return path
