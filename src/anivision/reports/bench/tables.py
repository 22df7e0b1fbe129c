"""Benchmark rows as files and tables: ``results.csv``, ``failures.json``, per-cell summaries over
seeds, ``table.md`` and ``per_class_f1.md``. This module owns the column names of ``results.csv``."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from anivision.files import atomic_write_json, atomic_write_text
from anivision.metrics.stats import mean_ci

BASELINE = "linear_probe"

#: Keys of a row that identify its cell and its outcome (first columns of ``results.csv``).
ID_COLUMNS = ("backbone", "strategy", "seed", "weights", "status", "error", "reused", "cell_seconds", "run_dir")

#: Scalar metrics of ``metrics.json`` in the order ``results.csv`` lists them; any other scalar
#: of metrics.json follows these, sorted by name.
METRIC_COLUMNS = (
    "accuracy", "top3_accuracy", "top5_accuracy",
    "precision_macro", "recall_macro", "f1_macro",
    "precision_weighted", "recall_weighted", "f1_weighted",
    "nll", "ece", "mce", "brier",
    "n_images", "n_classes", "n_skipped",
    "epochs_run", "best_epoch", "best_val_acc", "best_val_loss",
    "avg_epoch_seconds", "train_images_per_second", "inference_images_per_second", "latency_ms",
    "params_total", "trainable_percent",
)


# ------------------------------------------------------------------------ rows -> files


def _csv_value(v: Any) -> Any:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return v


def write_results_csv(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """``results.csv``: one row per cell, identity columns, then the metrics (atomically).

    Columns are :data:`ID_COLUMNS`, :data:`METRIC_COLUMNS`, then any other scalar a run
    reported, sorted; a failed cell leaves its metrics empty.
    """
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


def _pct(v: float, fmt: str = ".2f") -> str:
    """A fraction in percent (``0.8744`` -> ``"87.44"``), ``"–"`` when missing."""
    return _num(100.0 * v if v is not None else v, fmt)


def _table1(summaries: Sequence[CellSummary], backbones: Sequence[str], strategies: Sequence[str]) -> str:
    """Rows backbones, columns strategies: ``acc ± std (F1 %, loss, epochs, s/epoch) n=k``; best bold."""
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
            text = f"{acc} ({_pct(c.f1_mean)}, {_num(c.loss_mean, '.3f')}, {_epochs(c.epochs_mean)}, {_secs(c.sec_per_epoch_mean)}) n={c.n}"
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
        "macro F1 (%), test loss (NLL), epochs run, seconds per epoch (means over seeds); n = seeds that finished. "
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
             "Test F1 (%) per class, mean over seeds: the linear probe against the best other strategy "
             "of each backbone (by mean accuracy); Δ = best − linear probe, in points.", ""]
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
            cells = [_pct(v) for v in vals]
            if both:
                cells.append(_pct(vals[1] - vals[0], "+.2f"))
            lines.append(f"| {c} | " + " | ".join(cells) + " |")
        lines.append("")
    path = out / "per_class_f1.md"
    atomic_write_text(path, "\n".join(lines))
    return path
