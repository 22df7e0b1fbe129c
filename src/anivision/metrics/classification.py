"""Classification metrics on predicted probabilities: accuracy, P/R/F1, NLL, calibration.

Everything here is a pure, vectorised numpy function. The values are cross-checked against
scikit-learn in ``tests/test_metrics_classification.py``; the conventions (which classes a
macro average runs over, what an undefined precision is) follow scikit-learn's
``precision_recall_fscore_support(..., zero_division=0)`` so numbers can be compared with
papers and notebooks that use it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Probabilities are clipped here before the log so one confident mistake gives a large but
# finite NLL instead of inf (the same idea as scikit-learn's ``log_loss`` clipping).
NLL_EPS = 1e-12


def _check_inputs(y_true: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert ``y_true`` (N,) int and ``probs`` (N, C) float."""
    y_true = np.asarray(y_true)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"probs must be 2-D (N, C), got shape {probs.shape}")
    if y_true.ndim != 1 or y_true.shape[0] != probs.shape[0]:
        raise ValueError(f"y_true must have shape ({probs.shape[0]},), got {y_true.shape}")
    if y_true.shape[0] == 0:
        raise ValueError("cannot compute metrics on zero samples")
    if not np.issubdtype(y_true.dtype, np.integer):
        if not np.all(np.mod(y_true, 1) == 0):
            raise ValueError("y_true must hold integer class indices")
    y_true = y_true.astype(np.int64)
    n_classes = probs.shape[1]
    if y_true.min() < 0 or y_true.max() >= n_classes:
        raise ValueError(f"y_true holds labels outside [0, {n_classes - 1}]")
    return y_true, probs


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Count (true, predicted) pairs.

    Args:
        y_true: (N,) int true class indices in ``[0, n_classes)``.
        y_pred: (N,) int predicted class indices in ``[0, n_classes)``.
        n_classes: C, the size of the matrix; classes absent from both arrays keep zero rows
            and columns so the matrix always lines up with the class list.

    Returns:
        (C, C) int64 matrix, rows = true class, columns = predicted class.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} must be equal 1-D shapes")
    for name, arr in (("y_true", y_true), ("y_pred", y_pred)):
        if arr.size and (arr.min() < 0 or arr.max() >= n_classes):
            raise ValueError(f"{name} holds labels outside [0, {n_classes - 1}]")
    # One bincount over the flattened (true, pred) index is O(N) and avoids a Python loop.
    flat = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes)


def topk_accuracy(y_true: np.ndarray, probs: np.ndarray, k: int) -> float:
    """Fraction of samples whose true class is among the ``k`` highest probabilities.

    Ties are broken towards the lower class index, the same rule ``np.argmax`` uses, so
    ``topk_accuracy(y, p, 1)`` always equals the accuracy of ``p.argmax(1)``. (scikit-learn's
    ``top_k_accuracy_score`` breaks exact ties the other way; without ties they agree.)

    Args:
        y_true: (N,) int true class indices.
        probs: (N, C) float class probabilities (or any scores; only their order matters).
        k: how many top classes count as a hit, ``k >= 1``.

    Returns:
        Top-k accuracy in [0, 1].
    """
    y_true, probs = _check_inputs(y_true, probs)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    true_p = probs[np.arange(len(y_true)), y_true][:, None]
    cols = np.arange(probs.shape[1])[None, :]
    # Rank of the true class = number of classes ordered before it. O(N*C), no sort needed.
    ahead = (probs > true_p) | ((probs == true_p) & (cols < y_true[:, None]))
    rank = ahead.sum(axis=1)
    return float(np.mean(rank < k))


def _reliability_bins(
    y_true: np.ndarray, probs: np.ndarray, n_bins: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-bin (edges, mean confidence, accuracy, count) of top-1 predictions.

    Bins are equal-width on [0, 1] and right-closed, ``(lo, hi]`` (Guo et al. 2017); a
    confidence of exactly 0 falls in the first bin. Empty bins get NaN confidence/accuracy.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y_true).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # searchsorted(side="left") returns i with edges[i-1] < conf <= edges[i], i.e. the
    # right-closed bin i-1; comparing against the same edges array keeps it identical to a
    # "lo < conf <= hi" loop even for confidences that sit exactly on an edge.
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    acc_sum = np.bincount(idx, weights=correct, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(count > 0, conf_sum / count, np.nan)
        mean_acc = np.where(count > 0, acc_sum / count, np.nan)
    return edges, mean_conf, mean_acc, count


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> float:
    """Expected calibration error of the top-1 confidence (Guo et al. 2017).

    ``ECE = sum_b (n_b / N) * |accuracy_b - confidence_b|`` over ``n_bins`` equal-width,
    right-closed confidence bins; empty bins contribute nothing.

    Args:
        y_true: (N,) int true class indices.
        probs: (N, C) float probabilities.
        n_bins: number of bins on [0, 1].

    Returns:
        ECE in [0, 1].
    """
    y_true, probs = _check_inputs(y_true, probs)
    _, mean_conf, mean_acc, count = _reliability_bins(y_true, probs, n_bins)
    nonempty = count > 0
    gaps = np.abs(mean_acc[nonempty] - mean_conf[nonempty])
    return float(np.sum(count[nonempty] / len(y_true) * gaps))


def _precision_recall_f1(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall, F1 and support from a (C, C) confusion matrix.

    Undefined ratios (no predictions of a class, no samples of a class) are 0, as with
    scikit-learn's ``zero_division=0``.
    """
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    support = cm.sum(axis=1)

    def safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        out = np.zeros_like(num)
        np.divide(num, den, out=out, where=den > 0)
        return out

    precision = safe_div(tp, predicted)
    recall = safe_div(tp, support.astype(np.float64))
    # F1 = 2TP / (2TP + FP + FN) = 2TP / (predicted + support). This is scikit-learn's
    # formula too; it is 0 (not undefined) whenever exactly one of P or R is undefined.
    f1 = safe_div(2.0 * tp, predicted + support)
    return precision, recall, f1, support


def classification_metrics(
    y_true: np.ndarray, probs: np.ndarray, classes: list[str], n_bins: int = 15
) -> dict[str, Any]:
    """All classification metrics of one model on one test set, as a JSON-serialisable dict.

    Macro averages run over the classes that occur in ``y_true`` or in the predictions (the
    classes scikit-learn uses when ``labels`` is not given); a class that is neither present
    nor ever predicted is listed in ``per_class`` with zeros but does not drag the macro mean
    down. Weighted averages weight by support, so absent classes do not count there either.

    Args:
        y_true: (N,) int true class indices in ``[0, C)``.
        probs: (N, C) float probabilities; rows should sum to 1 (softmax outputs, not logits).
        classes: C class names, ``classes[i]`` naming column ``i``.
        n_bins: confidence bins for ECE and the reliability diagram.

    Returns:
        Dict with ``accuracy``, ``top3_accuracy`` (C >= 3), ``top5_accuracy`` (C >= 5),
        ``precision_macro``, ``recall_macro``, ``f1_macro``, ``precision_weighted``,
        ``recall_weighted``, ``f1_weighted``, ``nll``, ``ece``, ``mce`` (largest bin gap),
        ``brier`` (multi-class: mean over samples of the summed squared error to the one-hot
        target, range [0, 2]), ``n_images``, ``n_classes``, ``classes``,
        ``per_class`` ({name: {precision, recall, f1, support}}), ``confusion_matrix``
        (C x C nested lists, rows = true, columns = predicted) and ``reliability``
        ({bin_edges (n_bins+1), confidence, accuracy, count (n_bins each)}; empty bins have
        ``None`` confidence and accuracy).
    """
    y_true, probs = _check_inputs(y_true, probs)
    n, n_classes = probs.shape
    if len(classes) != n_classes:
        raise ValueError(f"{len(classes)} class names for {n_classes} probability columns")
    if np.any(probs < 0) or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        # Catches the common mistake of passing logits; every metric below assumes a simplex.
        raise ValueError("probs rows must be non-negative and sum to 1 (apply softmax to logits)")

    y_pred = probs.argmax(axis=1)
    cm = confusion_matrix(y_true, y_pred, n_classes)
    precision, recall, f1, support = _precision_recall_f1(cm)

    present = (support > 0) | (cm.sum(axis=0) > 0)
    weights = support / support.sum()

    true_p = probs[np.arange(n), y_true]
    nll = float(-np.mean(np.log(np.clip(true_p, NLL_EPS, 1.0))))
    onehot = np.zeros_like(probs)
    onehot[np.arange(n), y_true] = 1.0
    brier = float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))

    edges, mean_conf, mean_acc, count = _reliability_bins(y_true, probs, n_bins)
    nonempty = count > 0
    gaps = np.abs(mean_acc[nonempty] - mean_conf[nonempty])
    ece = float(np.sum(count[nonempty] / n * gaps))
    mce = float(gaps.max()) if gaps.size else 0.0

    def nan_to_none(values: np.ndarray) -> list[float | None]:
        # JSON has no NaN; None (null) marks an empty bin explicitly.
        return [None if np.isnan(v) else float(v) for v in values]

    metrics: dict[str, Any] = {
        "accuracy": float(np.mean(y_pred == y_true)),
    }
    for k in (3, 5):
        if n_classes >= k:
            metrics[f"top{k}_accuracy"] = topk_accuracy(y_true, probs, k)
    metrics.update(
        {
            "precision_macro": float(precision[present].mean()),
            "recall_macro": float(recall[present].mean()),
            "f1_macro": float(f1[present].mean()),
            "precision_weighted": float(np.sum(precision * weights)),
            "recall_weighted": float(np.sum(recall * weights)),
            "f1_weighted": float(np.sum(f1 * weights)),
            "nll": nll,
            "ece": ece,
            "mce": mce,
            "brier": brier,
            "n_images": int(n),
            "n_classes": int(n_classes),
            "classes": [str(c) for c in classes],
            "per_class": {
                str(name): {
                    "precision": float(precision[i]),
                    "recall": float(recall[i]),
                    "f1": float(f1[i]),
                    "support": int(support[i]),
                }
                for i, name in enumerate(classes)
            },
            "confusion_matrix": cm.tolist(),
            "reliability": {
                "bin_edges": edges.tolist(),
                "confidence": nan_to_none(mean_conf),
                "accuracy": nan_to_none(mean_acc),
                "count": count.astype(int).tolist(),
            },
        }
    )
    return metrics


def format_classification_report(metrics: dict[str, Any]) -> str:
    """Render :func:`classification_metrics` output as Markdown: a summary and a per-class table.

    Args:
        metrics: the dict returned by :func:`classification_metrics`.

    Returns:
        Markdown text (no trailing newline); accuracies, precision, recall, F1 and ECE in
        percent with two decimals (``87.44%``), NLL as it is.
    """

    def pct(x: float) -> str:
        return f"{100.0 * x:.2f}%"

    def cell(name: str) -> str:
        # A "|" in a class name would split the Markdown cell.
        return str(name).replace("|", "\\|")

    lines = [f"**{metrics['n_images']} images, {len(metrics['classes'])} classes**", ""]
    summary = [("accuracy", "Accuracy")]
    summary += [(f"top{k}_accuracy", f"Top-{k} accuracy") for k in (3, 5)]
    summary += [("f1_macro", "Macro F1"), ("f1_weighted", "Weighted F1")]
    for key, label in summary:
        if key in metrics:
            lines.append(f"- {label}: {pct(metrics[key])}")
    lines.append(f"- NLL: {metrics['nll']:.4f}")
    lines.append(f"- ECE: {pct(metrics['ece'])}")
    lines += ["", "| class | precision | recall | f1 | support |", "|---|---:|---:|---:|---:|"]
    for name, row in metrics["per_class"].items():
        lines.append(
            f"| {cell(name)} | {pct(row['precision'])} | {pct(row['recall'])} | "
            f"{pct(row['f1'])} | {row['support']} |"
        )
    total = metrics["n_images"]
    for avg in ("macro", "weighted"):
        lines.append(
            f"| *{avg} avg* | {pct(metrics[f'precision_{avg}'])} | {pct(metrics[f'recall_{avg}'])} | "
            f"{pct(metrics[f'f1_{avg}'])} | {total} |"
        )
    return "\n".join(lines)
