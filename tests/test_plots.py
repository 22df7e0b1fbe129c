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
