"""Re-ID losses against naive loops, the heads, the schedules, and a tiny train + evaluate + search."""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from anivision.commands.retrieval import register
from anivision.errors import AnivisionError
from anivision.models.reid_head import GeM, ReidModel
from anivision.tasks.retrieval import PRESETS, BatchHardTriplet, lr_factor, weighted_regularized_triplet

TINY_CNN = "test_efficientnet"


def _pk_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 3])  # label 3 has no positive: left out
    return torch.randn(len(labels), 5, generator=g) * 2.0, labels


def _naive_wrt(feat: torch.Tensor, labels: torch.Tensor) -> float:
    f, y, n = feat.tolist(), labels.tolist(), len(labels)
    d = [[math.dist(f[i], f[j]) for j in range(n)] for i in range(n)]
    terms = []
    for i in range(n):
        pos = [j for j in range(n) if y[j] == y[i] and j != i]
        neg = [j for j in range(n) if y[j] != y[i]]
        if not pos or not neg:
            continue
        zp = sum(math.exp(d[i][j]) for j in pos)
        zn = sum(math.exp(-d[i][j]) for j in neg)
        ap = sum(math.exp(d[i][j]) / zp * d[i][j] for j in pos)
        an = sum(math.exp(-d[i][j]) / zn * d[i][j] for j in neg)
        terms.append(math.log1p(math.exp(ap - an)))
    return sum(terms) / len(terms)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weighted_regularized_triplet_matches_naive_loop(seed: int) -> None:
    feat, labels = _pk_batch(seed)
    feat.requires_grad_(True)
    loss = weighted_regularized_triplet(feat, labels)
    assert loss.item() == pytest.approx(_naive_wrt(feat.detach(), labels), rel=1e-5)
    loss.backward()
    assert torch.isfinite(feat.grad).all()  # no NaN from the zero self-distances
    assert weighted_regularized_triplet(feat, torch.zeros(9, dtype=torch.long)).item() == 0.0  # no negatives
    unit = torch.nn.functional.normalize(feat.detach(), dim=1)
    assert weighted_regularized_triplet(feat, labels, normalize=True).item() == pytest.approx(_naive_wrt(unit, labels), rel=1e-5)


def test_batch_hard_triplet_matches_naive_loop() -> None:
    feat, labels = _pk_batch(3)
    d = torch.cdist(feat, feat)
    terms = []
    for i in range(len(labels)):
        pos = [d[i, j] for j in range(len(labels)) if labels[j] == labels[i] and j != i]
        neg = [d[i, j] for j in range(len(labels)) if labels[j] != labels[i]]
        if pos and neg:
            terms.append(max(max(pos).item() - min(neg).item() + 0.3, 0.0))
    assert BatchHardTriplet(0.3)(feat, labels).item() == pytest.approx(sum(terms) / len(terms), rel=1e-5)


def test_lr_schedules() -> None:
    agw = PRESETS["agw"]
    assert lr_factor(agw, 0.0) == pytest.approx(0.01)  # 1e-4 at lr 1e-2, as in LSASRD
    assert lr_factor(agw, 0.05) == pytest.approx(0.505)
    assert [lr_factor(agw, t) for t in (0.2, 0.5, 0.9)] == pytest.approx([1.0, 0.1, 0.01])
    cos = [lr_factor(PRESETS["transreid"], t) for t in np.linspace(0.05, 0.999, 20)]
    assert cos[0] == pytest.approx(1.0) and all(a >= b for a, b in zip(cos, cos[1:])) and cos[-1] < 0.02


def test_gem_and_reid_model_shapes() -> None:
    x = torch.rand(2, 3, 4, 4) + 0.1
    assert torch.allclose(GeM(p=1.0)(x), x.mean(dim=(2, 3)), atol=1e-6)
    assert (GeM(p=8.0)(x) <= x.amax(dim=(2, 3)) + 1e-6).all()
    model = ReidModel(timm.create_model(TINY_CNN, num_classes=0), num_classes=3, pool="auto", img_size=32)
    assert model.pool_kind == "gem"
    out = model(torch.randn(4, 3, 32, 32))
    assert out.feat.shape == (4, model.dim) and out.logits.shape == (4, 3)
    model.eval()
    assert model.embed(torch.randn(2, 3, 32, 32)).shape == (2, model.dim)
    vit = timm.create_model("test_vit", num_classes=0)
    assert ReidModel(vit, 3, pool="auto", img_size=32).pool_kind == "backbone"
    with pytest.raises(AnivisionError, match="GeM"):
        ReidModel(vit, 3, pool="gem", img_size=32)


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(argv)
    args.quiet = True
    return args.func(args)


def test_train_evaluate_search_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from anivision.data.synth import generate

    data = tmp_path / "data"
    generate("style", data, n_per_class=3, size=32, seed=0, n_works=4, roles_per_work=3, progress=False)
    solo = data / "solo" / "only_role"  # a single-role work: excluded from its fold's test, counted
    solo.mkdir(parents=True)
    for f in sorted((data / "work_00" / "role_00").glob("*.jpg")):
        shutil.copy(f, solo / f.name)
    run, cache = tmp_path / "run", tmp_path / "cache"
    common = ["--data", str(data), "--backbone", TINY_CNN, "--weights", "none", "--img-size", "32", "--cache-dir", str(cache)]
    assert _cli(["retrieval", "train", *common, "--epochs", "1", "--folds", "2", "--p", "3", "--k", "2", "--out", str(run)]) == 0

    m = json.loads((run / "metrics.json").read_text())
    assert m["n_folds"] == 2 and m["excluded_works"] == ["solo"]
    for key in ("mAP", "mINP", "rank1", "rank5", "rank10"):
        assert 0.0 <= m["mean"][key] <= 1.0 and key in m["std"]
    assert len(m["cmc_mean"]) == 50
    for name in ("report.md", "cmc.png", "examples.png", "fold0/model.safetensors", "fold1/checkpoint/state.json"):
        assert (run / name).exists(), name
    assert "Per-work AP" in (run / "report.md").read_text()

    # Rerun: finished folds are reused, not retrained.
    stamp = (run / "fold0" / "metrics.json").stat().st_mtime_ns
    assert _cli(["retrieval", "train", *common, "--epochs", "1", "--folds", "2", "--p", "3", "--k", "2", "--out", str(run)]) == 0
    assert (run / "fold0" / "metrics.json").stat().st_mtime_ns == stamp
    with pytest.raises(AnivisionError, match="differs"):
        _cli(["retrieval", "train", *common, "--epochs", "2", "--folds", "2", "--out", str(run)])

    # Re-evaluating the run gives the same numbers; the baseline uses the same folds.
    assert _cli(["retrieval", "evaluate", str(run), "--cache-dir", str(cache), "--out", str(tmp_path / "ev")]) == 0
    ev = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert ev["mean"]["mAP"] == pytest.approx(m["mean"]["mAP"])
    assert _cli(["retrieval", "evaluate", str(run), "--backbone", TINY_CNN, "--weights", "none", "--cache-dir", str(cache)]) == 0
    base = json.loads((run / "baseline" / "metrics.json").read_text())
    assert [f["test_works"] for f in base["folds"]] == [f["test_works"] for f in m["folds"]]
    with pytest.raises(AnivisionError, match="RUN_DIR"):
        _cli(["retrieval", "evaluate"])

    # The transreid preset on a ViT, one fold only (the other fold is simply not reported yet).
    vit_run = tmp_path / "vit"
    vit = ["--data", str(data), "--backbone", "test_vit", "--weights", "none", "--img-size", "32", "--cache-dir", str(cache)]
    assert _cli(["retrieval", "train", *vit, "--preset", "transreid", "--epochs", "1", "--folds", "2", "--fold", "1",
                 "--p", "3", "--k", "2", "--out", str(vit_run)]) == 0
    vm = json.loads((vit_run / "metrics.json").read_text())
    assert [f["fold"] for f in vm["folds"]] == [1] and not (vit_run / "fold0").exists()
    assert json.loads((vit_run / "fold1" / "model.json").read_text())["pool"] == "backbone"

    capsys.readouterr()
    query = str(data / "work_01" / "role_00" / "role_00_00000.jpg")
    assert _cli(["retrieval", "search", str(run), "--gallery", str(data), query, "--top-k", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(query) and "nearest work" in out and out.count("work_") >= 3
    assert len(list((run / "search_index").glob("gallery-*.npz"))) == 1
    assert _cli(["retrieval", "search", str(run), "--gallery", str(data), query]) == 0  # reuses the index
    assert len(list((run / "search_index").glob("gallery-*.npz"))) == 1
