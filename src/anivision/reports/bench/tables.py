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

#: What a table cell shows when a number is missing (failed cell) or undefined (std of one seed).
NO_VALUE = "—"


def _num(v: float | None, fmt: str) -> str:
    return NO_VALUE if v is None or not np.isfinite(v) else format(v, fmt)


def _secs(v: float) -> str:
    return _num(v, ".1f" if np.isfinite(v) and v >= 10 else ".2f")


def _epochs(v: float) -> str:
    return _num(v, ".0f" if np.isfinite(v) and float(v).is_integer() else ".1f")


def _pct(v: float | None, fmt: str = ".2f") -> str:
    """A fraction in percent (``0.8744`` -> ``"87.44"``), ``"—"`` when missing."""
    return _num(100.0 * v if v is not None else v, fmt)


def _millions(v: float) -> str:
    if not np.isfinite(v):
        return NO_VALUE
    return format(v / 1e6, ".2f" if v >= 1e6 else ".3g")


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table: one header (names with their units), one number or name per cell."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def seeds_hint(seeds: Sequence[int]) -> str:
    """How to get a spread: three seeds from the grid's first one (``--seeds 42,43,44``), or a
    rerun when the grid already lists several seeds (some failed)."""
    if len(seeds) >= 2:
        return "rerun the same command to retry the failed seeds"
    first = int(seeds[0]) if seeds else 42
    return f"add --seeds {first},{first + 1},{first + 2}"


def one_seed_note(summaries: Sequence[CellSummary], seeds: Sequence[int],
                  missing: str = f"no spread or interval ({NO_VALUE} for ± std)") -> str | None:
    """The sentence under a table when cells have a single finished seed, else None.

    Args:
        summaries: the cells the table shows.
        seeds: the grid's seeds (for the hint).
        missing: what one seed cannot give, in the table's words.
    """
    done = [c for c in summaries if c.n > 0]
    ones = [c for c in done if c.n == 1]
    if not ones:
        return None
    if len(ones) == len(done):
        return f"One seed per cell: {missing}; {seeds_hint(seeds)}."
    names = ", ".join(f"{c.backbone} / {c.strategy}" for c in ones)
    return f"One finished seed in {names}: {missing}; {seeds_hint(seeds)}."


def _best_by_backbone(summaries: Sequence[CellSummary]) -> dict[str, float]:
    best: dict[str, float] = {}
    for c in summaries:
        if c.n > 0 and np.isfinite(c.acc_mean):
            best[c.backbone] = max(best.get(c.backbone, -math.inf), c.acc_mean)
    return best


def _table1(summaries: Sequence[CellSummary], backbones: Sequence[str], strategies: Sequence[str]) -> str:
    """One row per backbone x strategy, one quantity per column with its unit; best accuracy
    of each backbone in bold; a "failed" column when some seeds failed."""
    by = {(c.backbone, c.strategy): c for c in summaries}
    any_failed = any(c.n_failed for c in summaries)
    header = ["backbone", "strategy", "accuracy (%)", "± std (pp)", "macro F1 (%)", "test loss", "epochs", "s/epoch", "seeds"]
    header += ["failed"] if any_failed else []
    best = _best_by_backbone(summaries)
    rows = []
    for b in backbones:
        for s in strategies:
            c = by.get((b, s))
            if c is None:
                continue
            acc = _num(c.acc_mean, ".2f")
            if c.n and c.acc_mean == best.get(b):
                acc = f"**{acc}**"
            row = [b, s, acc, _num(c.acc_std, ".2f"), _pct(c.f1_mean), _num(c.loss_mean, ".3f"),
                   _epochs(c.epochs_mean), _secs(c.sec_per_epoch_mean), str(c.n)]
            rows.append(row + ([str(c.n_failed)] if any_failed else []))
    return md_table(header, rows)


def _ci_table(summaries: Sequence[CellSummary]) -> str:
    header = ["backbone", "strategy", "accuracy (%)", "95% CI low (%)", "95% CI high (%)", "± half width (pp)", "seeds"]
    rows = []
    for c in summaries:
        if c.n == 0:
            continue
        low, high = c.acc_mean - c.acc_ci, c.acc_mean + c.acc_ci
        rows.append([c.backbone, c.strategy, _num(c.acc_mean, ".2f"), _num(low, ".2f"), _num(high, ".2f"),
                     _num(c.acc_ci, ".2f"), str(c.n)])
    return md_table(header, rows)


def _efficiency_table(summaries: Sequence[CellSummary]) -> str:
    header = ["backbone", "strategy", "params (M)", "trainable (%)", "train (img/s)", "inference (img/s)",
              "latency (ms)", "s/epoch"]
    rows = [[c.backbone, c.strategy, _millions(c.params_total), _num(c.trainable_percent, ".1f"),
             _num(c.train_ips, ".0f"), _num(c.infer_ips, ".0f"), _num(c.latency_ms, ".2f"), _secs(c.sec_per_epoch_mean)]
            for c in summaries if c.n > 0]
    return md_table(header, rows)


def table1_legend(seeds: Sequence[int]) -> str:
    """The sentence above the main table: what each column means."""
    return (f"Test accuracy (%) and macro F1 (%) are means over the seeds that finished (grid seeds: "
            f"{', '.join(map(str, seeds))}); ± std is the sample standard deviation over those seeds in "
            "percentage points (pp); test loss is the mean negative log-likelihood per test image; epochs "
            "run and seconds per epoch are means too; seeds counts the seeds that finished. "
            "Best strategy per backbone in bold.")


def write_table(out: Path, rows: Sequence[Mapping[str, Any]], summaries: Sequence[CellSummary]) -> Path:
    """``table.md``: the main table, the 95% CI table and a cost table, one number per cell."""
    backbones, strategies, seeds = grid_axes(rows)
    note = one_seed_note(summaries, seeds)
    lines = ["# Benchmark table", "", table1_legend(seeds), "", _table1(summaries, backbones, strategies), ""]
    lines += [note, ""] if note else []
    lines += ["## 95% confidence intervals", ""]
    if any(c.n >= 2 for c in summaries):
        ci_note = one_seed_note(summaries, seeds, missing=f"no interval ({NO_VALUE})")
        lines += ["Mean test accuracy (%) and its Student-t 95% interval over seeds (`mean_ci`): low and high "
                  "bounds in percent, half width in percentage points.", "", _ci_table(summaries), ""]
        lines += [ci_note, ""] if ci_note else []
    else:
        lines += [f"No interval: every cell has one seed; {seeds_hint(seeds)}.", ""]
    lines += ["## Cost", "", "Means over the seeds that finished.", "", _efficiency_table(summaries), ""]
    path = out / "table.md"
    atomic_write_text(path, "\n".join(lines))
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
    backbones, _, seeds = grid_axes(rows)
    by = {(c.backbone, c.strategy): c for c in summaries}
    shown: list[CellSummary] = []
    lines = ["# Per-class F1", "",
             "Test F1 (%) per class, mean over the seeds that finished: the linear probe against the best other "
             "strategy of each backbone (by mean accuracy); Δ = best − linear probe, in percentage points (pp).", ""]
    for b in backbones:
        best = _best_strategy(summaries, b, exclude=BASELINE)
        has_base = (b, BASELINE) in by and by[(b, BASELINE)].n > 0
        cols = ([BASELINE] if has_base else []) + ([best.strategy] if best else [])
        lines += [f"## {b}", ""]
        if not cols:
            lines += ["no finished cell", ""]
            continue
        f1 = {s: _per_class_f1(rows, b, s) for s in cols}
        classes = list(dict.fromkeys(k for s in cols for k in f1[s]))
        both = len(cols) == 2
        header = ["class"] + [f"{s} F1 (%)" for s in cols] + (["Δ (pp)"] if both else [])
        body = []
        for c in classes:
            vals = [f1[s].get(c, float("nan")) for s in cols]
            body.append([c] + [_pct(v) for v in vals] + ([_pct(vals[1] - vals[0], "+.2f")] if both else []))
        shown += [by[(b, s)] for s in cols]
        n_seeds = ", ".join(f"{s} {by[(b, s)].n}" for s in cols)
        lines += [md_table(header, body), "", f"Seeds that finished: {n_seeds}.", ""]
    note = one_seed_note(shown, seeds, missing="F1 of a single run, no spread over seeds")
    if note:
        lines += [note, ""]
    path = out / "per_class_f1.md"
    atomic_write_text(path, "\n".join(lines))
    return path
