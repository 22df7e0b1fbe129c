"""The benchmark report: Table-1 layout, confidence intervals, figures and paired comparisons.

Input is the list of rows :func:`anivision.tasks.bench.run_bench` returns (one per backbone x
strategy x seed); per-class F1 and test predictions are read from each cell's run folder
(``metrics.json``, ``test_logits.npy``, ``test_labels.npy``).

Conventions:

- Accuracy is shown in percent; "± std" is the sample standard deviation over seeds
  (``ddof=1``) and the CI table is the Student-t 95% interval of :func:`~anivision.metrics.stats.mean_ci`.
- Paired comparisons pool seeds by **seed means**: for each test image, the fraction of the
  common seeds on which a cell is right; the paired bootstrap resamples test images (the shared,
  fixed set) of the difference of those fractions. Seed-matched differences (seed s of A vs
  seed s of B, each with its own paired bootstrap) are listed beside it. The interval speaks to
  test-set sampling; the spread over seeds is the other source of uncertainty, shown by the
  per-seed differences.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from anivision.files import atomic_write_json, atomic_write_text

BASELINE = "linear_probe"
N_BOOT = 2000


# ------------------------------------------------------------------------ rows -> files


def _csv_value(v: Any) -> Any:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return v


def write_results_csv(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """``results.csv``: one row per cell, identity columns, then the metrics (atomically).

    Columns are :data:`~anivision.tasks.bench.ID_COLUMNS`, :data:`~anivision.tasks.bench.METRIC_COLUMNS`,
    then any other scalar a run reported, sorted; a failed cell leaves its metrics empty.
    """
    from anivision.tasks.bench import ID_COLUMNS, METRIC_COLUMNS

    extra = sorted({k for r in rows for k in r} - set(ID_COLUMNS) - set(METRIC_COLUMNS))
    fields = [*ID_COLUMNS, *METRIC_COLUMNS, *extra]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _csv_value(r.get(k)) for k in fields})
    atomic_write_text(path, buf.getvalue())
    return Path(path)


def write_failures(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """``failures.json``: ``[{backbone, strategy, seed, run_dir, error}]`` of the failed cells."""
    failed = [{k: r.get(k) for k in ("backbone", "strategy", "seed", "weights", "run_dir", "error")}
              for r in rows if r.get("status") != "ok"]
    atomic_write_json(path, failed)
    return Path(path)


# --------------------------------------------------------------------------- summaries


@dataclass
class CellSummary:
    """One backbone x strategy cell over its seeds (accuracy in percent).

    Attributes:
        n: seeds that finished; ``n_failed`` seeds that did not.
        acc_std: sample std over seeds (NaN for one seed); ``acc_ci``: 95% t half width.
    """

    backbone: str
    strategy: str
    n: int
    n_failed: int
    seeds: list[int]
    acc_mean: float
    acc_std: float
    acc_ci: float
    f1_mean: float
    loss_mean: float
    epochs_mean: float
    sec_per_epoch_mean: float
    trainable_percent: float
    params_total: float
    train_ips: float
    infer_ips: float
    latency_ms: float


def grid_axes(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str], list[int]]:
    """Backbones, strategies and seeds in the order the grid lists them."""
    return (list(dict.fromkeys(r["backbone"] for r in rows)),
            list(dict.fromkeys(r["strategy"] for r in rows)),
            list(dict.fromkeys(int(r["seed"]) for r in rows)))


def _ok(rows: Sequence[Mapping[str, Any]], backbone: str, strategy: str) -> list[Mapping[str, Any]]:
    return [r for r in rows if r["backbone"] == backbone and r["strategy"] == strategy and r.get("status") == "ok"]


def _mean(rows: Sequence[Mapping[str, Any]], key: str) -> float:
    vals = [float(r[key]) for r in rows if r.get(key) is not None]
    return float(np.mean(vals)) if vals else float("nan")


def summarize_cells(rows: Sequence[Mapping[str, Any]]) -> list[CellSummary]:
    """Mean over seeds of each backbone x strategy cell, in grid order."""
    from anivision.metrics.stats import mean_ci

    backbones, strategies, _ = grid_axes(rows)
    out = []
    for b in backbones:
        for s in strategies:
            cell = [r for r in rows if r["backbone"] == b and r["strategy"] == s]
            if not cell:
                continue
            ok = _ok(rows, b, s)
            accs = np.asarray([100.0 * float(r["accuracy"]) for r in ok])
            if accs.size:
                mean, half = mean_ci(accs, 0.95, method="t")
                std = float(accs.std(ddof=1)) if accs.size > 1 else float("nan")
            else:
                mean = half = std = float("nan")
            out.append(CellSummary(
                backbone=b, strategy=s, n=len(ok), n_failed=len(cell) - len(ok), seeds=[int(r["seed"]) for r in ok],
                acc_mean=mean, acc_std=std, acc_ci=half,
                f1_mean=_mean(ok, "f1_macro"), loss_mean=_mean(ok, "nll"), epochs_mean=_mean(ok, "epochs_run"),
                sec_per_epoch_mean=_mean(ok, "avg_epoch_seconds"), trainable_percent=_mean(ok, "trainable_percent"),
                params_total=_mean(ok, "params_total"), train_ips=_mean(ok, "train_images_per_second"),
                infer_ips=_mean(ok, "inference_images_per_second"), latency_ms=_mean(ok, "latency_ms"),
            ))
    return out


def accuracy_gain_matrix(rows: Sequence[Mapping[str, Any]], baseline: str = BASELINE) -> tuple[np.ndarray, list[str], list[str]]:
    """Accuracy gain over the baseline strategy, in points: mean over seeds of each cell minus
    mean over seeds of the same backbone's baseline.

    Returns:
        ``(matrix (B, K), backbones, strategies)``: K strategies other than ``baseline``; NaN
        where either mean is missing. K is 0 when the grid has no baseline.
    """
    backbones, strategies, _ = grid_axes(rows)
    if baseline not in strategies:
        return np.zeros((len(backbones), 0)), backbones, []
    cols = [s for s in strategies if s != baseline]
    m = np.full((len(backbones), len(cols)), np.nan)
    for i, b in enumerate(backbones):
        base = _mean(_ok(rows, b, baseline), "accuracy")
        for j, s in enumerate(cols):
            m[i, j] = 100.0 * (_mean(_ok(rows, b, s), "accuracy") - base)
    return m, backbones, cols


# ------------------------------------------------------------------------------ tables


def _num(v: float, fmt: str) -> str:
    return "–" if v is None or not np.isfinite(v) else format(v, fmt)


def _secs(v: float) -> str:
    return _num(v, ".1f" if np.isfinite(v) and v >= 10 else ".2f")


def _epochs(v: float) -> str:
    return _num(v, ".0f" if np.isfinite(v) and float(v).is_integer() else ".1f")


def _table1(summaries: Sequence[CellSummary], backbones: Sequence[str], strategies: Sequence[str]) -> str:
    """Rows backbones, columns strategies: ``acc ± std (F1, loss, epochs, s/epoch) n=k``; best bold."""
    by = {(c.backbone, c.strategy): c for c in summaries}
    lines = ["| backbone | " + " | ".join(strategies) + " |", "|---|" + "---|" * len(strategies)]
    for b in backbones:
        means = [by[(b, s)].acc_mean for s in strategies if (b, s) in by and np.isfinite(by[(b, s)].acc_mean)]
        best = max(means) if means else None
        cells = []
        for s in strategies:
            c = by.get((b, s))
            if c is None or c.n == 0:
                cells.append(f"failed ({c.n_failed}/{c.n_failed})" if c else "–")
                continue
            acc = f"{c.acc_mean:.2f} ± {_num(c.acc_std, '.2f')}"
            if best is not None and c.acc_mean == best:
                acc = f"**{acc}**"
            text = f"{acc} ({_num(c.f1_mean, '.3f')}, {_num(c.loss_mean, '.3f')}, {_epochs(c.epochs_mean)}, {_secs(c.sec_per_epoch_mean)}) n={c.n}"
            if c.n_failed:
                text += f", {c.n_failed} failed"
            cells.append(text)
        lines.append(f"| {b} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ci_table(summaries: Sequence[CellSummary], backbones: Sequence[str], strategies: Sequence[str]) -> str:
    by = {(c.backbone, c.strategy): c for c in summaries}
    lines = ["| backbone | " + " | ".join(strategies) + " |", "|---|" + "---|" * len(strategies)]
    for b in backbones:
        cells = []
        for s in strategies:
            c = by.get((b, s))
            if c is None or c.n == 0:
                cells.append("–")
            elif not np.isfinite(c.acc_ci):
                cells.append(f"{c.acc_mean:.2f} (n=1, no interval)")
            else:
                cells.append(f"{c.acc_mean:.2f} ± {c.acc_ci:.2f} [{c.acc_mean - c.acc_ci:.2f}, {c.acc_mean + c.acc_ci:.2f}] n={c.n}")
        lines.append(f"| {b} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _efficiency_table(summaries: Sequence[CellSummary]) -> str:
    lines = ["| backbone | strategy | params | trainable % | train img/s | inference img/s | latency ms | s/epoch |",
             "|---|---|---|---|---|---|---|---|"]
    for c in summaries:
        if c.n == 0:
            continue
        params = f"{c.params_total / 1e6:.2f}M" if np.isfinite(c.params_total) else "–"
        lines.append(f"| {c.backbone} | {c.strategy} | {params} | {_num(c.trainable_percent, '.1f')} | "
                     f"{_num(c.train_ips, '.0f')} | {_num(c.infer_ips, '.0f')} | {_num(c.latency_ms, '.2f')} | {_secs(c.sec_per_epoch_mean)} |")
    return "\n".join(lines)


def write_table(out: Path, rows: Sequence[Mapping[str, Any]], summaries: Sequence[CellSummary]) -> Path:
    """``table.md``: the study's Table-1 layout, the 95% CI table and an efficiency table."""
    backbones, strategies, seeds = grid_axes(rows)
    text = "\n".join([
        "# Benchmark table",
        "",
        f"Test accuracy (%) mean ± sample std over seeds ({', '.join(map(str, seeds))}); in brackets "
        "macro F1, test loss (NLL), epochs run, seconds per epoch (means over seeds); n = seeds that finished. "
        "Best strategy per backbone in bold.",
        "",
        _table1(summaries, backbones, strategies),
        "",
        "## 95% confidence intervals",
        "",
        "Mean test accuracy (%) ± half width of the Student-t 95% interval over seeds (`mean_ci`), [low, high].",
        "",
        _ci_table(summaries, backbones, strategies),
        "",
        "## Cost",
        "",
        _efficiency_table(summaries),
        "",
    ])
    path = out / "table.md"
    atomic_write_text(path, text)
    return path


# --------------------------------------------------------------------- per-class F1


def _best_strategy(summaries: Sequence[CellSummary], backbone: str, exclude: str | None = None) -> CellSummary | None:
    cands = [c for c in summaries if c.backbone == backbone and c.n > 0 and c.strategy != exclude and np.isfinite(c.acc_mean)]
    return max(cands, key=lambda c: c.acc_mean) if cands else None


def _per_class_f1(rows: Sequence[Mapping[str, Any]], backbone: str, strategy: str) -> dict[str, float]:
    """Mean over seeds of each class's test F1, read from the runs' metrics.json."""
    acc: dict[str, list[float]] = {}
    for r in _ok(rows, backbone, strategy):
        p = Path(r["run_dir"]) / "metrics.json"
        if not p.exists():
            continue
        for name, v in json.loads(p.read_text()).get("per_class", {}).items():
            acc.setdefault(name, []).append(float(v["f1"]))
    return {k: float(np.mean(v)) for k, v in acc.items()}


def write_per_class_f1(out: Path, rows: Sequence[Mapping[str, Any]], summaries: Sequence[CellSummary]) -> Path:
    """``per_class_f1.md``: per backbone, linear probe vs its best other strategy, per class."""
    backbones, strategies, _ = grid_axes(rows)
    lines = ["# Per-class F1", "",
             "Test F1 per class, mean over seeds: the linear probe against the best other strategy "
             "of each backbone (by mean accuracy); Δ = best − linear probe.", ""]
    for b in backbones:
        best = _best_strategy(summaries, b, exclude=BASELINE)
        has_base = any(c.backbone == b and c.strategy == BASELINE and c.n > 0 for c in summaries)
        cols = ([BASELINE] if has_base else []) + ([best.strategy] if best else [])
        lines += [f"## {b}", ""]
        if not cols:
            lines += ["no finished cell", ""]
            continue
        f1 = {s: _per_class_f1(rows, b, s) for s in cols}
        classes = list(dict.fromkeys(k for s in cols for k in f1[s]))
        both = len(cols) == 2
        lines.append("| class | " + " | ".join(cols) + (" | Δ |" if both else " |"))
        lines.append("|---|" + "---|" * (len(cols) + both))
        for c in classes:
            vals = [f1[s].get(c, float("nan")) for s in cols]
            cells = [_num(v, ".3f") for v in vals]
            if both:
                cells.append(_num(vals[1] - vals[0], "+.3f"))
            lines.append(f"| {c} | " + " | ".join(cells) + " |")
        lines.append("")
    path = out / "per_class_f1.md"
    atomic_write_text(path, "\n".join(lines))
    return path


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
    from anivision.metrics.stats import paired_bootstrap, paired_bootstrap_diff

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


def write_bench_report(out: str | Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write every benchmark artefact into ``out`` and return the path of ``bench.md``.

    Files: ``results.csv``, ``failures.json``, ``table.md``, ``heatmap.png`` (when the grid has
    a linear probe and another strategy), ``bars.png``, ``per_class_f1.md``, ``paired.md``,
    ``bench.json`` (summary, heatmap values, ``peak_rss_mb``) and ``bench.md``.

    Args:
        out: the benchmark folder.
        rows: :func:`anivision.tasks.bench.run_bench` rows.
    """
    from anivision.reports.plots import plot_bars_with_errors, plot_heatmap

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
    write_paired(out, comparisons)

    files = ["results.csv", "failures.json", "table.md", "per_class_f1.md", "paired.md"]
    gain, gain_rows, gain_cols = accuracy_gain_matrix(rows)
    if gain.size and np.isfinite(gain).any():
        plot_heatmap(gain, gain_rows, gain_cols, out / "heatmap.png",
                     title="accuracy gain over linear probe (points, mean over seeds)", fmt="{:+.1f}")
        files.append("heatmap.png")
    done = [c for c in summaries if c.n > 0]
    if done:
        plot_bars_with_errors([f"{c.backbone} / {c.strategy}" for c in done], [c.acc_mean for c in done],
                              [c.acc_ci for c in done], out / "bars.png", ylabel="test accuracy (%)",
                              title="test accuracy per cell (mean ± 95% CI over seeds)")
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
        lines.append(f"Best cell: **{b.backbone} / {b.strategy}**, {b.acc_mean:.2f}% test accuracy (n={b.n}).")
    lines += ["", "## Table", "", _table1(summaries, backbones, strategies), "",
              "Cells: accuracy % mean ± std over seeds (macro F1, test loss, epochs, s/epoch), n seeds.", "",
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
    return path
