"""Each plot function writes a valid, non-empty PNG and returns its path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anivision.metrics.classification import classification_metrics
from anivision.reports import plots


def _check_png(path: Path, returned: Path) -> None:
    assert Path(returned) == path
    assert path.stat().st_size > 1000
    with Image.open(path) as img:
        assert img.format == "PNG"
        img.verify()


def test_confusion_matrix(tmp_path):
    rng = np.random.default_rng(0)
    classes = [f"character_{i:02d}" for i in range(16)]
    cm = rng.integers(0, 30, size=(16, 16)) + np.diag(rng.integers(50, 100, 16))
    cm[3] = 0  # a class absent from the test set
    for normalize in (False, True):
        path = tmp_path / "sub" / f"cm_{normalize}.png"
        _check_png(path, plots.plot_confusion_matrix(cm, classes, path, normalize=normalize))


def test_reliability(tmp_path):
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(300, 5)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    m = classification_metrics(rng.integers(0, 5, 300), probs, list("abcde"))
    path = tmp_path / "reliability.png"
    _check_png(path, plots.plot_reliability(m["reliability"], m["ece"], path))


@pytest.mark.parametrize("with_val", [True, False])
def test_training_curves(tmp_path, with_val):
    history = []
    for epoch in range(1, 6):
        row = {"epoch": epoch, "train_loss": 2.0 / epoch, "train_acc": 1 - 0.5 / epoch}
        if with_val and epoch % 2 == 1:  # validated every other epoch
            row.update(val_loss=2.2 / epoch, val_acc=1 - 0.6 / epoch)
        history.append(row)
    path = tmp_path / f"curves_{with_val}.png"
    _check_png(path, plots.plot_training_curves(history, path))


def test_heatmap_with_nan(tmp_path):
    matrix = np.array([[1.5, -2.25, np.nan], [0.0, 3.0, -0.5]])
    path = tmp_path / "heat.png"
    returned = plots.plot_heatmap(
        matrix, ["resnet", "vit"], ["linear", "partial", "full"], path, "gain over linear (pts)"
    )
    _check_png(path, returned)
    all_nan = tmp_path / "heat_nan.png"
    _check_png(all_nan, plots.plot_heatmap(np.full((1, 1), np.nan), ["a"], ["b"], all_nan, "t"))


def _spy_figures(monkeypatch: pytest.MonkeyPatch) -> list:
    """Figures as ``plots._save`` receives them (before they are closed)."""
    figures = []
    original = plots._save

    def spy(fig, path):
        figures.append(fig)
        return original(fig, path)

    monkeypatch.setattr(plots, "_save", spy)
    return figures


@pytest.mark.parametrize("shape", [(1, 1), (3, 4)])
def test_small_heatmap_keeps_labels_and_values(tmp_path, monkeypatch, shape):
    """A 1 x 1 gain matrix is a small labelled tile with its value, not one big unlabelled block."""
    figures = _spy_figures(monkeypatch)
    n_rows, n_cols = shape
    rows, cols = [f"net{i}" for i in range(n_rows)], [f"strategy{j}" for j in range(n_cols)]
    values = np.arange(n_rows * n_cols, dtype=float).reshape(shape) - 1.5
    path = tmp_path / f"heat_{n_rows}x{n_cols}.png"
    _check_png(path, plots.plot_heatmap(values, rows, cols, path, "accuracy gain over linear probe (pp, one seed)",
                                        fmt="{:+.2f}", xlabel="strategy", ylabel="backbone"))
    ax = figures[0].axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == rows
    assert [t.get_text() for t in ax.get_xticklabels()] == cols
    assert ax.get_xlabel() == "strategy" and ax.get_ylabel() == "backbone"
    assert {t.get_text() for t in ax.texts} == {f"{v:+.2f}" for v in values.ravel()}
    width, height = figures[0].get_size_inches()
    assert width <= 1.4 * n_cols + 2.5 and height <= 0.7 * n_rows + 2.0  # sized by the cells, not a fixed block


def test_bars_without_intervals_draw_no_error_bars(tmp_path, monkeypatch):
    figures = _spy_figures(monkeypatch)
    path = tmp_path / "bars_one_seed.png"
    _check_png(path, plots.plot_bars_with_errors(["a / full", "a / linear_probe"], [83.33, 50.0], [np.nan, np.nan],
                                                 path, "test accuracy (%)", "test accuracy per cell (one seed, no interval)"))
    ax = figures[0].axes[0]
    assert not ax.containers[1:] and not ax.lines and not ax.collections  # bars only: no caps, no zero-length bars
    path = tmp_path / "bars_mixed.png"
    plots.plot_bars_with_errors(["a", "b"], [83.33, 50.0], [np.nan, 2.0], path, "test accuracy (%)", "t")
    (errorbar,) = figures[1].axes[0].containers[1:]
    assert len(errorbar.lines[2][0].get_segments()) == 1  # one error bar, for the bar that has one


def test_bars_with_errors(tmp_path):
    path = tmp_path / "bars.png"
    returned = plots.plot_bars_with_errors(
        ["scratch", "linear probe", "fine-tune"], [41.25, 72.5, 85.0], [3.0, np.nan, 1.0],
        path, "test accuracy (%)", "test accuracy (mean ± 95% CI)", fmt="{:.2f}",
    )
    _check_png(path, returned)


def test_cmc(tmp_path):
    curves = {"resnet": np.linspace(0.4, 0.95, 50), "vit": np.linspace(0.5, 0.99, 50)}
    path = tmp_path / "cmc.png"
    _check_png(path, plots.plot_cmc(curves, path))


def test_image_grid(tmp_path):
    colors = [(200, 50, 50), (50, 200, 50), (50, 50, 200), (220, 220, 40)]
    files = []
    for i, c in enumerate(colors):
        f = tmp_path / f"img{i}.png"
        Image.new("RGB", (32, 40), c).save(f)
        files.append(f)
    rows = [
        [(files[0], "query: a", None), (files[1], "1: a", True), (str(files[2]), "2: b", False)],
        [(Image.new("RGBA", (24, 24), (0, 0, 0, 0)), "query: b", None), (files[3], "1: b", True)],
    ]
    path = tmp_path / "grid.png"
    _check_png(path, plots.plot_image_grid(rows, path))
    with pytest.raises(ValueError):
        plots.plot_image_grid([], tmp_path / "empty.png")
