"""Grad-CAM++ explanations: the Python API (CNN and ViT), ``explain_batch``, ``overlay`` and ``anivision explain``."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import anivision as av
from anivision.cli import main
from anivision.errors import AnivisionError
from anivision.explain import explain_batch, overlay
from anivision.explain.cam import default_target_layer, resolve_target_layer

from conftest import TINY_CNN, TINY_VIT, run_cli

PALETTE = [(220, 40, 40), (40, 200, 60), (50, 70, 230)]


def make_blob_folders(root: Path, n_per_class: int = 10, size: int = 64, seed: int = 0) -> Path:
    """``root/class<i>/<j>.png``: a coloured square (the class) at a random place on grey noise.

    The evidence is local, so a class-activation map has something to point at (uniform colour
    images give flat or all-zero maps whatever the method).
    """
    rng = np.random.default_rng(seed)
    for c, colour in enumerate(PALETTE):
        d = root / f"class{c}"
        d.mkdir(parents=True, exist_ok=True)
        for j in range(n_per_class):
            arr = rng.integers(90, 150, (size, size, 3)).astype(np.uint8)
            y, x = rng.integers(0, size - size * 3 // 8, 2)
            arr[y:y + size * 3 // 8, x:x + size * 3 // 8] = colour
            Image.fromarray(arr).save(d / f"img{j:03d}.png")
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("explain")
    data = make_blob_folders(root / "data")
    out = {"data": data}
    for bb in (TINY_CNN, TINY_VIT):
        run = root / bb
        assert main(["-q", "train", "--data", str(data), "--backbone", bb, "--weights", "none", "--img-size", "64",
                     "--batch-size", "8", "--epochs", "3", "--strategy", "full", "--cache-dir", str(root / "cache"), "--out", str(run)]) == 0
        out[bb] = run
    return out


@pytest.mark.parametrize("backbone", [TINY_CNN, TINY_VIT])
@pytest.mark.parametrize("method", ["gradcam++", "gradcam"])
def test_explain_maps_shape_range_and_not_constant(runs, backbone, method):
    clf = av.load(runs[backbone])
    paths = sorted(str(p) for p in (runs["data"] / "class1").iterdir())[:6]
    found = clf.explain(paths, method=method)
    assert [e.source for e in found] == paths
    preds = clf.predict(paths, top_k=1)
    for e, p in zip(found, preds):
        assert e.heatmap.shape == (64, 64) and e.heatmap.dtype == np.float32
        assert 0.0 <= e.heatmap.min() and e.heatmap.max() <= 1.0
        assert e.label == e.predicted == p.label and e.prob == pytest.approx(p.prob, abs=1e-4)
        assert e.image.size == e.overlay.size == (64, 64) and e.overlay.mode == "RGB"
    # Every map has its own peak (normalised to 1) and real structure: not a constant image.
    assert sum(float(e.heatmap.std()) > 0.05 for e in found) >= len(found) - 1
    assert all(float(e.heatmap.max()) > 0.99 for e in found if e.heatmap.std() > 0)


def test_named_class_and_unknown_class(runs):
    clf = av.load(runs[TINY_CNN])
    img = Image.open(sorted((runs["data"] / "class0").iterdir())[0])
    e = clf.explain([img, np.asarray(img)], class_name="class2")
    assert [x.label for x in e] == ["class2", "class2"] and e[0].source == "<image 0>"
    assert e[0].prob == pytest.approx(float(clf.predict_proba(img)[0, 2]), abs=1e-4)
    assert np.allclose(e[0].heatmap, e[1].heatmap, atol=1e-5)  # PIL and numpy: the same pixels, the same map
    with pytest.raises(AnivisionError, match="--class 'nobody': not a class of this model"):
        clf.explain(img, class_name="nobody")
    with pytest.raises(AnivisionError, match="--method"):
        clf.explain(img, method="lime")


def test_explain_batch_vit_tokens_and_overlay(runs):
    clf = av.load(runs[TINY_VIT])
    x = torch.randn(3, 3, 64, 64)
    layer, fold = resolve_target_layer(clf.model, x, None, None)
    assert layer is clf.model.backbone.blocks[-1].norm1 is default_target_layer(clf.model)
    tokens = torch.arange(2 * 17 * 5, dtype=torch.float32).reshape(2, 17, 5)  # 1 class token + 4 x 4 patches
    grid = fold(tokens)
    assert grid.shape == (2, 5, 4, 4) and torch.equal(grid[0, :, 0, 0], tokens[0, 1])  # class token dropped
    maps = explain_batch(clf.model, x, [0, 1, 2], "gradcam++")
    assert maps.shape == (3, 64, 64) and maps.dtype == np.float32 and 0 <= maps.min() and maps.max() <= 1
    with pytest.raises(AnivisionError, match="2 targets"):
        explain_batch(clf.model, x, [0, 1])
    img = Image.new("RGB", (128, 96), (128, 128, 128))
    hm = np.zeros((8, 8), np.float32)
    hm[:, 4:] = 1.0
    ov = np.asarray(overlay(img, hm)).astype(int)
    assert ov.shape == (96, 128, 3)
    assert ov[48, 120, 0] > ov[48, 120, 2] and ov[48, 5, 2] > ov[48, 5, 0]  # jet: hot = red, cold = blue


def test_cnn_on_a_small_input_falls_back_to_a_stage_with_a_grid(runs):
    clf = av.load(runs[TINY_CNN])
    x = torch.randn(1, 3, 32, 32)  # the last stage is 1 x 1 here
    layer, fold = resolve_target_layer(clf.model, x, None, None)
    assert layer is not clf.model.backbone.bn2 and fold is None
    assert explain_batch(clf.model, x, [0]).shape == (1, 32, 32)


def test_cli_explain_writes_pngs_and_csv(runs, tmp_path, capsys, caplog):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for c in range(3):
        src = sorted((runs["data"] / f"class{c}").iterdir())[0]
        (imgs / f"c{c}.png").write_bytes(src.read_bytes())
    (imgs / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    assert main(["explain", str(runs[TINY_CNN]), str(imgs), "--method", "gradcam", "--out", str(out)]) == 0
    assert "3 explanation(s) (gradcam)" in capsys.readouterr().out
    assert "broken.png" in caplog.text  # the unreadable file is named, the others are explained
    rows = list(csv.DictReader((out / "explanations.csv").open()))
    assert [Path(row["source"]).name for row in rows] == ["c0.png", "c1.png", "c2.png"]
    for row in rows:
        assert row["method"] == "gradcam" and row["label"] == row["predicted"] and 0 < float(row["prob"]) <= 1
        png = Image.open(out / row["png"])
        assert png.format == "PNG" and png.width > 2 * png.height * 0.9  # input | overlay side by side
    assert main(["-q", "explain", str(runs[TINY_CNN]), str(imgs / "c0.png"), "--class", "class1", "--out", str(out / "named")]) == 0
    assert list(csv.DictReader((out / "named" / "explanations.csv").open()))[0]["label"] == "class1"
    capsys.readouterr()
    assert main(["explain", str(runs[TINY_CNN]), str(imgs / "c0.png"), "--class", "nobody", "--out", str(out / "x")]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "--class 'nobody'" in err
    assert not (out / "x").exists()
    assert main(["explain", str(tmp_path), str(imgs / "c0.png"), "--out", str(out / "y")]) == 2
    assert "not an anivision run" in capsys.readouterr().err


def test_cli_error_exits_2_without_traceback(runs, tmp_path):
    r = run_cli(["explain", str(runs[TINY_CNN]), str(tmp_path / "nothing*.png"), "--out", str(tmp_path / "o")])
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.startswith("error:")
