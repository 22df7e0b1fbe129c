"""Report figures written as PNG files: confusion matrix, reliability diagram, training curves,
heatmaps, bar charts with error bars, CMC curves and retrieval image grids.

Every function takes plain data (numpy arrays, lists, the dicts that :mod:`anivision.metrics`
returns), writes one PNG to ``path`` (creating parent folders), closes its figure and returns the
path. The Agg backend is selected before pyplot is imported so this works on headless machines
and in worker processes.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (must follow matplotlib.use)
import numpy as np  # noqa: E402
from matplotlib.colors import TwoSlopeNorm  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from PIL import Image  # noqa: E402

from anivision.data.images import load_image, to_rgb  # noqa: E402

DPI = 150
CORRECT_COLOR = "#2ca02c"
WRONG_COLOR = "#d62728"

ImageLike = Union[Image.Image, str, Path]


def _save(fig: plt.Figure, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` as PNG and close it (open figures leak memory in long runs)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, dpi=DPI, bbox_inches="tight", format="png")
    finally:
        plt.close(fig)
    return path


def _tick_fontsize(n: int) -> float:
    """Font size for n tick labels: 10 pt for a few, shrinking to 5 pt for ~60 or more."""
    return float(np.clip(10.0 - (n - 10) / 10.0, 5.0, 10.0))


def plot_confusion_matrix(
    cm: np.ndarray | Sequence[Sequence[int]],
    classes: Sequence[str],
    path: str | Path,
    normalize: bool = False,
    title: str | None = None,
) -> Path:
    """Confusion matrix heatmap with counts (or row fractions) in the cells.

    Args:
        cm: (C, C) counts, rows = true class, columns = predicted class.
        classes: C class names.
        path: output PNG file.
        normalize: show each row as fractions of its true class (recall on the diagonal);
            rows with no samples stay 0.
        title: figure title; a default names the kind of matrix.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    cm = np.asarray(cm, dtype=np.float64)
    n = cm.shape[0]
    if cm.shape != (n, n) or len(classes) != n:
        raise ValueError(f"confusion matrix {cm.shape} does not match {len(classes)} classes")
    if normalize:
        rows = cm.sum(axis=1, keepdims=True)
        values = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    else:
        values = cm

    # The figure grows with the class count so 16+ labels and their cell numbers stay legible.
    side = float(np.clip(0.45 * n + 2.5, 5.0, 24.0))
    fig, ax = plt.subplots(figsize=(side + 1.0, side))
    im = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else max(values.max(), 1.0))
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04).set_label("fraction of the true class" if normalize else "images")

    fs = _tick_fontsize(n)
    ax.set_xticks(np.arange(n))
    ax.set_yticks(np.arange(n))
    ax.set_xticklabels(classes, rotation=45, ha="right", rotation_mode="anchor", fontsize=fs)
    ax.set_yticklabels(classes, fontsize=fs)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or ("confusion matrix (row-normalised)" if normalize else "confusion matrix"))

    if n <= 40:  # beyond that the numbers cannot be read anyway
        threshold = values.max() / 2.0 if values.max() > 0 else 1.0
        cell_fs = fs if n <= 20 else fs * 0.8
        for i in range(n):
            for j in range(n):
                v = values[i, j]
                if not normalize and v == 0:
                    continue  # empty cells stay empty: easier to see where the mass is
                text = f"{v:.2f}" if normalize else f"{int(v)}"
                ax.text(j, i, text, ha="center", va="center", fontsize=cell_fs,
                        color="white" if v > threshold else "black")
    return _save(fig, path)


def plot_reliability(reliability: Mapping[str, Sequence[Any]], ece: float, path: str | Path) -> Path:
    """Reliability diagram: accuracy per confidence bin against the diagonal, with bin counts.

    Args:
        reliability: the ``reliability`` dict of
            :func:`anivision.metrics.classification.classification_metrics`: ``bin_edges``
            (B+1,), ``confidence``, ``accuracy``, ``count`` (B,); empty bins hold None/NaN.
        ece: expected calibration error in [0, 1], shown in the title.
        path: output PNG file.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    edges = np.asarray(reliability["bin_edges"], dtype=np.float64)

    def as_float(key: str) -> np.ndarray:
        return np.array([np.nan if v is None else v for v in reliability[key]], dtype=np.float64)

    conf = as_float("confidence")
    acc = as_float("accuracy")
    count = np.asarray(reliability["count"], dtype=np.float64)
    left = edges[:-1]
    width = np.diff(edges)
    filled = count > 0

    fig, (ax, ax_count) = plt.subplots(
        2, 1, figsize=(5.5, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    # Neighbouring bins alternate two shades of blue and are separated by a white gap, so each
    # bar reads on its own; the gap to the mean confidence (what ECE averages) is hatched orange.
    shades = np.where(np.arange(len(left)) % 2 == 0, "#1f4e9c", "#5b8fd6")
    ax.bar(left[filled], acc[filled], width=width[filled], align="edge", color=shades[filled],
           edgecolor="white", linewidth=1.5, label="accuracy")
    gap_bottom = np.minimum(acc, conf)[filled]
    gap_height = np.abs(conf - acc)[filled]
    ax.bar(left[filled], gap_height, bottom=gap_bottom, width=width[filled], align="edge",
           color="#f4a259", alpha=0.6, edgecolor="#b3541e", linewidth=1.0, hatch="//", label="gap to mean confidence")
    ax.plot([0, 1], [0, 1], "--", color="#333333", linewidth=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy in the bin")
    ax.set_xlabel("confidence (top-1 probability)")
    ax.xaxis.set_tick_params(labelbottom=True)
    ax.set_title(f"reliability diagram (ECE = {100.0 * ece:.2f}%)")
    ax.legend(loc="upper left", fontsize=8)

    ax_count.bar(left, count, width=width, align="edge", color=np.where(np.arange(len(left)) % 2 == 0, "#555555", "#a0a0a0"),
                 edgecolor="white", linewidth=1.5)
    ax_count.set_xlabel("confidence (top-1 probability)")
    ax_count.set_ylabel("images")
    return _save(fig, path)


def plot_training_curves(history: Sequence[Mapping[str, Any]], path: str | Path, best_epoch: int | None = None) -> Path:
    """Loss and accuracy (in percent) per epoch, train and (when present) validation.

    Args:
        history: one dict per epoch with ``epoch``, ``train_loss``, ``train_acc`` (a fraction) and optionally
            ``val_loss``, ``val_acc``; missing or None values are skipped, so runs without a
            validation split, or validating every few epochs, plot fine.
        path: output PNG file.
        best_epoch: the kept epoch (1-based, as in ``epoch``), marked by a dotted line on both
            panels; None: the epoch of the lowest validation loss when there is one.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))

    def series(key: str, scale: float) -> tuple[list[float], list[float]]:
        xs, ys = [], []
        for i, row in enumerate(history):
            value = row.get(key)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            xs.append(row.get("epoch", i + 1))
            ys.append(scale * float(value))
        return xs, ys

    if best_epoch is None:
        xs, ys = series("val_loss", 1.0)
        best_epoch = xs[int(np.argmin(ys))] if xs else None
    for ax, metric, label, scale in ((ax_loss, "loss", "loss", 1.0), (ax_acc, "acc", "accuracy (%)", 100.0)):
        plotted = False
        if best_epoch is not None and best_epoch > 0:
            ax.axvline(best_epoch, color="#2ca02c", linestyle=":", linewidth=1.5, label=f"best epoch ({best_epoch})")
        for split, style in (("train", "-o"), ("val", "-s")):
            xs, ys = series(f"{split}_{metric}", scale)
            if xs:
                ax.plot(xs, ys, style, markersize=3, label=split)
                plotted = True
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        if plotted:
            ax.legend()
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    ax_loss.set_title("loss")
    ax_acc.set_title("accuracy")
    return _save(fig, path)


def plot_heatmap(
    matrix: np.ndarray | Sequence[Sequence[float]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    path: str | Path,
    title: str,
    fmt: str = "{:+.1f}",
    center: float = 0.0,
    xlabel: str | None = None,
    ylabel: str | None = None,
    value_label: str | None = None,
) -> Path:
    """Annotated heatmap on a diverging colour map centred on ``center``.

    Meant for tables of differences (e.g. accuracy gain of each strategy over a baseline, per
    backbone): values above ``center`` are blue, below red, with the same colour intensity for
    the same distance on either side. The figure grows with the cell count (about 1.4 x 0.7
    inches a cell), so a 1 x 1 matrix is a small labelled tile rather than one big block.

    Args:
        matrix: (R, K) values; NaN cells (missing runs) are drawn blank and marked "—".
        row_labels: R row names.
        col_labels: K column names.
        path: output PNG file.
        title: figure title (wrapped to the figure's width).
        fmt: ``str.format`` pattern for the cell annotations.
        center: the value drawn white.
        xlabel: name of what the columns are (e.g. "strategy"), or None.
        ylabel: name of what the rows are (e.g. "backbone"), or None.
        value_label: what the colours mean, on the colour bar (e.g. "accuracy gain (points)").

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    values = np.asarray(matrix, dtype=np.float64)
    if values.ndim != 2 or values.shape != (len(row_labels), len(col_labels)):
        raise ValueError(
            f"matrix {values.shape} does not match {len(row_labels)} x {len(col_labels)} labels"
        )
    n_rows, n_cols = values.shape
    finite = values[np.isfinite(values)]
    # Symmetric limits so equal distances from the centre get equal colour strength.
    span = float(np.max(np.abs(finite - center))) if finite.size else 1.0
    span = span if span > 0 else 1.0
    norm = TwoSlopeNorm(vcenter=center, vmin=center - span, vmax=center + span)
    cmap = matplotlib.colormaps["RdBu"].with_extremes(bad="white")

    width = float(np.clip(1.4 * n_cols + 1.6, 3.6, 24.0))
    height = float(np.clip(0.7 * n_rows + 1.2, 2.4, 20.0))
    fig, ax = plt.subplots(figsize=(width, height))
    im = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, norm=norm, aspect="auto")
    cbar = fig.colorbar(im, ax=ax, fraction=0.046 if n_cols > 2 else 0.1, pad=0.04)
    if value_label:
        cbar.set_label(value_label)
    ax.set_xticks(np.arange(n_cols))
    ax.set_yticks(np.arange(n_rows))
    ax.set_xticklabels(col_labels, rotation=30 if n_cols > 3 else 0, ha="right" if n_cols > 3 else "center",
                       rotation_mode="anchor", fontsize=_tick_fontsize(n_cols))
    ax.set_yticklabels(row_labels, fontsize=_tick_fontsize(n_rows))
    # Thin white lines between cells, so neighbouring cells of similar colour stay apart.
    ax.set_xticks(np.arange(n_cols + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(n_rows + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=1.5)
    ax.tick_params(which="minor", length=0)
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    ax.set_title(textwrap.fill(title, width=max(30, int(9 * width))), fontsize=10)
    cell_fs = 11 if n_rows * n_cols <= 4 else 9
    for i in range(n_rows):
        for j in range(n_cols):
            v = values[i, j]
            if not np.isfinite(v):
                ax.text(j, i, "—", ha="center", va="center", fontsize=cell_fs, color="gray")
                continue
            strong = abs(v - center) > 0.6 * span
            ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=cell_fs,
                    color="white" if strong else "black")
    return _save(fig, path)


def plot_bars_with_errors(
    labels: Sequence[str],
    means: Sequence[float] | np.ndarray,
    errors: Sequence[float] | np.ndarray,
    path: str | Path,
    ylabel: str,
    title: str,
    fmt: str = "{:.3g}",
    xlabel: str | None = None,
) -> Path:
    """Bar chart of means with symmetric error bars (e.g. mean +- 95% CI over seeds).

    Args:
        labels: names of the bars.
        means: (n,) bar heights.
        errors: (n,) half widths of the error bars; NaN (a single run) draws no error bar at
            all, not a zero-length one. The caller's ``title`` should say so when no bar has one.
        path: output PNG file.
        ylabel: y-axis label, with its unit.
        title: figure title.
        fmt: ``str.format`` pattern of the value written above each bar (``"{:.2f}"`` for percent).
        xlabel: what the bars are (e.g. "backbone / strategy"), or None.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    means = np.asarray(means, dtype=np.float64)
    errors = np.asarray(errors, dtype=np.float64)
    n = len(labels)
    if means.shape != (n,) or errors.shape != (n,):
        raise ValueError(f"{n} labels, {means.size} means and {errors.size} errors must match")
    has_error = np.isfinite(errors) & np.isfinite(means)
    fig, ax = plt.subplots(figsize=(float(np.clip(0.7 * n + 2.5, 5.0, 24.0)), 4.5))
    x = np.arange(n)
    ax.bar(x, means, color="#4c72b0", edgecolor="black", linewidth=0.6)
    if has_error.any():
        ax.errorbar(x[has_error], means[has_error], yerr=errors[has_error], fmt="none", ecolor="black",
                    elinewidth=1.0, capsize=4)
    for xi, m, e, ok in zip(x, means, errors, has_error):
        if np.isfinite(m):
            ax.text(xi, m + (e if ok else 0.0), fmt.format(m), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x)
    long_labels = any(len(str(label)) > 8 for label in labels) or n > 8
    ax.set_xticklabels(labels, rotation=30 if long_labels else 0,
                       ha="right" if long_labels else "center", rotation_mode="anchor",
                       fontsize=_tick_fontsize(n))
    ax.set_ylabel(ylabel)
    if xlabel:
        ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.margins(y=0.12)  # room for the value labels above the tallest bar
    return _save(fig, path)


def plot_cmc(cmc_curves: Mapping[str, np.ndarray], path: str | Path, title: str = "CMC", max_rank: int | None = None) -> Path:
    """Cumulative matching characteristic curves of one or more retrieval runs.

    Args:
        cmc_curves: name -> (max_rank,) CMC values in [0, 1] (``retrieval_metrics()["cmc"]``).
        path: output PNG file.
        title: figure title.
        max_rank: the gallery size: curves are cut there (beyond it every query has matched or
            cannot), so the x-axis is never longer than the gallery.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    fig, ax = plt.subplots(figsize=(6, 4.5))
    longest = 1
    for name, curve in cmc_curves.items():
        curve = np.asarray(curve, dtype=np.float64)[: max_rank if max_rank else None]
        longest = max(longest, curve.size)
        ranks = np.arange(1, curve.size + 1)
        ax.plot(ranks, 100.0 * curve, marker="o" if curve.size <= 20 else None, markersize=3,
                label=f"{name} (R1 {100.0 * curve[0]:.2f}%)")
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (%)")
    ax.set_ylim(0, 100)
    ax.set_xlim(1, max(longest, 2))
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if cmc_curves:
        ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def _as_image(item: ImageLike, max_side: int) -> Image.Image:
    """An RGB thumbnail of a PIL image or an image file (missing files raise AnivisionError)."""
    img = to_rgb(item) if isinstance(item, Image.Image) else load_image(item)
    img = img.copy()
    img.thumbnail((max_side, max_side))  # keeps the PNG small and savefig fast
    return img


def plot_image_grid(
    rows: Sequence[Sequence[tuple[ImageLike, str, bool | None]]],
    path: str | Path,
    cell_size: float = 1.8,
    title: str | None = None,
) -> Path:
    """Grid of captioned images, e.g. one retrieval query per row followed by its top-k.

    Args:
        rows: one list per grid row of ``(image, caption, correct)``: ``image`` is a PIL image
            or an image path, ``correct`` True/False draws a green/red border, None no border
            (the query itself). Rows may have different lengths.
        path: output PNG file.
        cell_size: inches per cell.
        title: optional figure title.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    n_rows = len(rows)
    n_cols = max((len(r) for r in rows), default=0)
    if n_rows == 0 or n_cols == 0:
        raise ValueError("plot_image_grid needs at least one image")
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(cell_size * n_cols, cell_size * n_rows + 0.3),
                             squeeze=False)
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i, j]
            if j >= len(row):
                ax.axis("off")
                continue
            item, caption, correct = row[j]
            ax.imshow(np.asarray(_as_image(item, max_side=256)))
            ax.set_xticks([])
            ax.set_yticks([])
            # Spines as the border: visible only when the cell has a verdict.
            color = {True: CORRECT_COLOR, False: WRONG_COLOR}.get(correct)
            for spine in ax.spines.values():
                spine.set_visible(color is not None)
                if color is not None:
                    spine.set_edgecolor(color)
                    spine.set_linewidth(4)
            ax.set_title(str(caption), fontsize=7, color=color or "black")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)
