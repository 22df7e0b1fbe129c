"""``report.md`` and its PNG plots for a classification run or evaluation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from anivision.files import atomic_write_text
from anivision.metrics.classification import format_classification_report
from anivision.reports.html import write_html_report
from anivision.reports.plots import plot_confusion_matrix, plot_reliability, plot_training_curves


#: Fractions in [0, 1] that the report shows in percent (two decimals); the JSON keeps fractions.
#: ECE and MCE are shown in percent too: they are gaps between confidence and accuracy.
PERCENT_KEYS = frozenset({
    "accuracy", "top3_accuracy", "top5_accuracy", "train_acc", "val_acc",
    "precision_macro", "recall_macro", "f1_macro", "precision_weighted", "recall_weighted", "f1_weighted",
    "ece", "mce",
})


def _fmt(v: Any, pct: bool = False) -> str:
    """``"87.44%"`` for a fraction with ``pct``, else ``"0.4123"`` for a float; ``"n/a"`` for None/NaN."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "n/a"
    if isinstance(v, float):
        return f"{100 * v:.2f}%" if pct else f"{v:.4f}"
    return str(v)


def _best_val(best_val: dict[str, Any]) -> str:
    """``"val loss 0.4123, val acc 84.38%"``: the best epoch's validation figures."""
    parts = [f"{k.replace('_', ' ')} {_fmt(float(v), pct=k in PERCENT_KEYS)}" for k, v in best_val.items() if v is not None]
    return ", ".join(parts) or "n/a (no validation split)"


def write_report(
    out_dir: str | Path,
    metrics: dict[str, Any],
    history: list[dict[str, Any]],
    title: str,
    config: dict[str, Any] | None = None,
    sections: Sequence[str] = (),
) -> Path:
    """Write ``report.md`` (and ``report.html``) with confusion matrices, reliability diagram and training curves.

    Args:
        out_dir: folder for ``report.md`` and the PNGs.
        metrics: :func:`~anivision.metrics.classification.classification_metrics` output plus
            run facts (timing, parameters, skipped images; ``data``, the folder of an evaluation
            on other images, which the summary names).
        history: per-epoch rows (may be empty for an evaluation).
        title: heading.
        config: resolved run config to show, or None.
        sections: more markdown lines placed before the skipped images and the configuration
            (the misclassified-images page of :func:`~anivision.reports.mistakes.mistakes_section`).

    Returns:
        Path of ``report.md``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    classes = metrics["classes"]
    cm = np.asarray(metrics["confusion_matrix"])
    plot_confusion_matrix(cm, classes, out / "confusion_matrix.png", normalize=False)
    plot_confusion_matrix(cm, classes, out / "confusion_matrix_normalized.png", normalize=True)
    plot_reliability(metrics["reliability"], metrics["ece"], out / "reliability.png")
    lines = [f"# {title}", ""]
    # An evaluation on another folder names it ("test split" is the run's own test images).
    other = metrics.get("data") if metrics.get("data") not in (None, "", "test split") else None
    summary = [
        *([("data", f"`{other}`"), ("images", metrics.get("n_images"))] if other else [("test images", metrics.get("n_images"))]),
        ("skipped (unreadable)", metrics.get("n_skipped", 0)),
        ("accuracy", _fmt(metrics["accuracy"], pct=True)),
    ]
    for k in ("top3_accuracy", "top5_accuracy"):
        if k in metrics:
            summary.append((k.replace("_", " "), _fmt(metrics[k], pct=True)))
    summary += [
        ("macro precision / recall / F1", " / ".join(_fmt(metrics[k], pct=True) for k in ("precision_macro", "recall_macro", "f1_macro"))),
        ("weighted F1", _fmt(metrics["f1_weighted"], pct=True)),
        ("NLL (test loss)", _fmt(metrics["nll"])),
        ("ECE (15 bins)", _fmt(metrics["ece"], pct=True)),
    ]
    if "epochs_run" in metrics:
        summary += [
            ("backbone / weights", f"{metrics.get('backbone')} / {metrics.get('weights')}"),
            ("strategy / recipe", f"{metrics.get('strategy')} / {metrics.get('recipe')}"),
            ("image size", metrics.get("img_size")),
            ("epochs run (best)", f"{metrics['epochs_run']} ({metrics.get('best_epoch')})"),
            ("best validation", _best_val(metrics.get("best_val", {}))),
            ("average epoch time", f"{metrics.get('avg_epoch_seconds', 0):.2f} s"),
            ("training throughput", f"{metrics.get('train_images_per_second', 0):.1f} images/s"
             + (" (head on cached features)" if metrics.get("feature_cache") else "")),
            ("parameters", f"{metrics.get('params_total', 0):,}"),
            ("wall time of the run", f"{metrics['wall_seconds']:.1f} s (decoding, features, training, test)" if "wall_seconds" in metrics else "n/a"),
            ("trainable", f"{metrics.get('trainable_percent', 0):.2f}%"),
        ]
    if "inference_images_per_second" in metrics:
        summary += [
            ("inference throughput (batch 64)", f"{metrics['inference_images_per_second']:.1f} images/s"),
            ("latency (batch 1)", f"{metrics['latency_ms']:.2f} ms/image"),
        ]
    if metrics.get("device"):
        summary.append(("device", metrics["device"]))
    lines += ["| metric | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in summary] + [""]
    lines += ["## Per-class results", "", format_classification_report(metrics), ""]
    lines += [
        "## Confusion matrix",
        "",
        "Rows are true classes, columns predictions.",
        "",
        "![confusion matrix (counts)](confusion_matrix.png)",
        "",
        "![confusion matrix (row-normalised)](confusion_matrix_normalized.png)",
        "",
    ]
    off = cm.astype(float).copy()
    np.fill_diagonal(off, 0)
    if off.sum() > 0:
        i, j = np.unravel_index(np.argmax(off), off.shape)
        lines += [f"Most frequent confusion: **{classes[i]} → {classes[j]}** ({int(off[i, j])} images).", ""]
    lines += ["## Calibration", "", f"Expected calibration error: {_fmt(metrics['ece'], pct=True)}.", "", "![reliability diagram](reliability.png)", ""]
    if history:
        plot_training_curves(history, out / "curves.png", best_epoch=metrics.get("best_epoch"))
        lines += ["## Training curves", "", "![training curves](curves.png)", ""]
        cols = [c for c in ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "epoch_seconds", "train_images_per_second") if c in history[0]]
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for h in history:
            lines.append("| " + " | ".join(_fmt(h.get(c), pct=c in PERCENT_KEYS) if c != "epoch" else str(h[c]) for c in cols) + " |")
        lines.append("")
    lines += list(sections)
    if metrics.get("skipped"):
        lines += ["## Skipped images", ""] + [f"- {p}" for p in metrics["skipped"]] + [""]
    if config:
        lines += ["## Resolved configuration", "", "```json", json.dumps(config, indent=2), "```", ""]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    write_html_report(path)
    return path
