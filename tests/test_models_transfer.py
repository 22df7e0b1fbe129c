"""The transfer embedding: colour histogram, parts, means, and how runs and galleries carry it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_fewshot import make_shapes
from test_fewshot_train import tiny_config

from anivision.errors import AnivisionError
from anivision.models.backbone import create_backbone, data_config
from anivision.models.transfer import TransferEmbedding, TransferSpec, colour_histogram, parse_parts
from anivision.tasks.fewshot import FewShotModel, FewShotTrainConfig, Gallery, train_fewshot
from anivision.tasks.fewshot.evaluate import backbone_spec, build_backbone, evaluate_fewshot


def pil_hsv_bins(rgb: np.ndarray) -> np.ndarray:
    """Reference: PIL's HSV conversion binned 12 x 4 x 4."""
    h = np.asarray(Image.fromarray(rgb).convert("HSV")).reshape(-1, 3).astype(np.int64)
    idx = (h[:, 0] * 12 // 256) * 16 + (h[:, 1] * 4 // 256) * 4 + (h[:, 2] * 4 // 256)
    return np.bincount(idx, minlength=192) / len(h)


def test_colour_histogram_matches_pil_on_flat_colours() -> None:
    # Colours away from bin edges: pure hues, a dull teal, greys (saturation 0: hue bin 0, as PIL).
    colours = [(255, 0, 0), (30, 200, 0), (20, 40, 230), (60, 140, 130), (128, 128, 128), (10, 10, 10), (250, 250, 250), (230, 120, 20)]
    img = np.zeros((16, 16, 3), np.uint8)
    for i, c in enumerate(colours):
        img[2 * i : 2 * i + 2] = c
    got = colour_histogram(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0)[0].numpy()
    np.testing.assert_allclose(got, pil_hsv_bins(img), atol=1e-6)
    assert got.sum() == pytest.approx(1.0)


def test_parse_parts() -> None:
    assert parse_parts("stage-2,stage-1,head,colour") == TransferSpec((-2, -1), True, True)
    assert parse_parts("colour") == TransferSpec((), False, True)
    with pytest.raises(AnivisionError, match="unknown part 'hsv'"):
        parse_parts("stage-1,hsv")
    with pytest.raises(AnivisionError, match="names no part"):
        parse_parts(" , ")


@pytest.mark.parametrize("name", ["test_efficientnet", "test_vit"])
def test_embedding_is_unit_and_centred_after_fit(name: str) -> None:
    torch.manual_seed(0)
    bb = create_backbone(name, "none", img_size=32)
    cfg = data_config(bb, 32)
    emb = TransferEmbedding(bb, parse_parts("stage-2,stage-1,head,colour"), cfg.mean, cfg.std, 32).eval()
    x = torch.randn(24, 3, 32, 32)
    parts = emb.parts(x)
    assert emb.num_features == sum(p.shape[1] for p in parts) and len(parts) == 4
    emb.fit([x[:12], x[12:]])
    with torch.no_grad():
        z = emb(x)
    assert z.shape == (24, emb.num_features)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(24))
    # Fitted on these images: the centred concatenation has mean zero before its last normalisation.
    centred = emb._centred_parts(parts) - emb.concat_mean
    assert centred.mean(0).abs().max() < 1e-4
    # Unfitted means give another embedding: the means matter.
    fresh = TransferEmbedding(bb, parse_parts("stage-2,stage-1,head,colour"), cfg.mean, cfg.std, 32).eval()
    with torch.no_grad():
        assert not torch.allclose(fresh(x), z)


@pytest.fixture(scope="module")
def transfer_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("transfer")
    make_shapes(root / "data")
    make_shapes(root / "other", n_classes=3, seed=5)
    train_fewshot(tiny_config(root, "run", epochs=1, fit_images=20, val_data=str(root / "other")), progress=False)
    return root


def test_run_saves_means_and_evaluation_rebuilds_the_same_embedding(transfer_run: Path) -> None:
    run = transfer_run / "run"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1] and all(r["val_acc"] is not None for r in rows)
    spec = backbone_spec(str(run), None, None, None)
    assert spec.embedding == parse_parts(FewShotTrainConfig().parts).to_dict() and spec.distance == "cosine"
    model, _ = build_backbone(spec)
    assert isinstance(model, TransferEmbedding) and float(model.part_mean.abs().sum()) > 0
    r = evaluate_fewshot(str(transfer_run / "other"), spec, [(3, 2)], n_query=2, episodes=20, progress=False)
    assert r["split"] == "all" and 0.0 <= r["accuracy"] <= 1.0


def test_gallery_keeps_the_embedding(transfer_run: Path) -> None:
    run, gallery = transfer_run / "run", transfer_run / "gallery"
    FewShotModel.load(str(run)).enroll(str(transfer_run / "other"), str(gallery))
    meta = json.loads((gallery / "gallery.json").read_text())
    assert meta["embedding"] == parse_parts(FewShotTrainConfig().parts).to_dict()
    g = Gallery.load(str(gallery))  # rebuilt from the gallery's own copy of the weights and means
    images = sorted((transfer_run / "other").glob("*/*.png"))
    hits = g.identify([str(p) for p in images], threshold=1e9)
    assert np.mean([h.label == p.parent.name for h, p in zip(hits, images)]) > 0.5


def test_old_run_without_embedding_key_is_pooled(tmp_path: Path) -> None:
    make_shapes(tmp_path / "data")
    cfg = tiny_config(tmp_path, "old", embedding="pooled", distance="euclidean")
    d = json.loads(json.dumps(cfg.to_dict()))
    del d["embedding"], d["parts"], d["fit_images"], d["val_data"]
    (tmp_path / "config.json").write_text(json.dumps(d))
    assert FewShotTrainConfig.load(tmp_path / "config.json").embedding == "pooled"
    assert cfg.differences(d) == []  # the old run is the same run as --embedding pooled


def test_bad_val_data_and_parts(tmp_path: Path) -> None:
    make_shapes(tmp_path / "data")
    with pytest.raises(AnivisionError, match="--val-data"):
        tiny_config(tmp_path, "r", val_data=str(tmp_path / "nowhere")).validate()
    with pytest.raises(AnivisionError, match="unknown part"):
        tiny_config(tmp_path, "r", parts="stage-1,nose").validate()


def test_transfer_gallery_identifies_the_same_with_onnx(transfer_run: Path, tmp_path: Path) -> None:
    """The colour histogram and the intermediate stages export: ONNX Runtime gives the same answers."""
    import csv

    from anivision.cli import main

    gallery = tmp_path / "gallery"
    assert main(["-q", "enroll", str(transfer_run / "run"), str(transfer_run / "other"), "--out", str(gallery)]) == 0
    res = {}
    for engine in ("torch", "onnx"):
        out = tmp_path / f"id-{engine}.csv"
        assert main(["-q", "identify", str(gallery), str(transfer_run / "other"), "--engine", engine, "--out", str(out)]) == 0
        res[engine] = list(csv.DictReader(open(out)))
    assert len(res["torch"]) == 24
    for a, b in zip(res["torch"], res["onnx"], strict=True):
        assert a["pred_1"] == b["pred_1"] and float(a["dist_1"]) == pytest.approx(float(b["dist_1"]), rel=1e-4, abs=1e-5)
