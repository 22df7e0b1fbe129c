"""The re-ID heads, the schedules, the training step, and a tiny train + evaluate + search.

The losses are tested against naive loops in ``tests/test_losses.py``; resume after a kill and
the same-run rule in ``tests/test_retrieval_resume.py``."""

from __future__ import annotations

import argparse
import json
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from anivision.commands.retrieval import register
from anivision.errors import AnivisionError
from anivision.models.reid_head import GeM, ReidModel
from anivision.models.losses import IdTripletLoss, WeightedRegularizedTriplet
from anivision.tasks.retrieval import PRESETS, lr_factor, preset_lr_fn, reid_step

TINY_CNN = "test_efficientnet"


def test_lr_schedules() -> None:
    agw = PRESETS["agw"]
    assert lr_factor(agw, 0.0) == pytest.approx(0.01)  # 1e-4 at lr 1e-2, as in LSASRD
    assert lr_factor(agw, 0.05) == pytest.approx(0.505)
    assert [lr_factor(agw, t) for t in (0.2, 0.5, 0.9)] == pytest.approx([1.0, 0.1, 0.01])
    cos = [lr_factor(PRESETS["transreid"], t) for t in np.linspace(0.05, 0.999, 20)]
    assert cos[0] == pytest.approx(1.0) and all(a >= b for a, b in zip(cos, cos[1:])) and cos[-1] < 0.02
    # The engine's per-step form: progress = global step / (epochs * steps per epoch), the
    # per-iteration (epoch + it / n_iter) / epochs of earlier versions up to float rounding, which
    # could put a step that lies exactly on a milestone just before it (a drop one step late).
    for preset in PRESETS.values():
        epochs, n_iter = 7, 5
        lr_fn = preset_lr_fn(preset, 0.02, epochs * n_iter)
        for epoch in range(epochs):
            for it in range(n_iter):
                step = epoch * n_iter + it
                on_milestone = any(Fraction(step, epochs * n_iter) == Fraction(m).limit_denominator(1000) for m in preset.milestones)
                if on_milestone:  # the drop happens at the milestone's step
                    assert lr_fn(step, {}) == pytest.approx(0.02 * lr_factor(preset, (step + 0.5) / (epochs * n_iter)), rel=1e-12)
                else:
                    assert lr_fn(step, {}) == pytest.approx(0.02 * lr_factor(preset, (epoch + it / n_iter) / epochs), rel=1e-12)


def test_reid_step_logs_and_float32_losses() -> None:
    torch.manual_seed(0)
    model = ReidModel(timm.create_model(TINY_CNN, num_classes=0), num_classes=3, pool="auto", img_size=32)
    criterion = IdTripletLoss(WeightedRegularizedTriplet(), label_smoothing=0.1)
    x, y = torch.randn(6, 3, 32, 32), torch.tensor([0, 0, 1, 1, 2, 2])
    model.eval()  # fixed BN statistics: the step and the reference see the same forward
    loss, logs = reid_step(criterion)(model, (x, y))
    out = model(x)
    terms = criterion(out.feat, out.logits, y)
    assert set(logs) == {"id_loss", "triplet_loss", "acc"}
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(terms.total.item(), rel=1e-5)
    assert logs["id_loss"] == pytest.approx(terms.id_loss.item(), rel=1e-5)
    assert logs["acc"] == pytest.approx(float((out.logits.argmax(1) == y).float().mean()))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the engine autocasts the whole step
        amp_loss, _ = reid_step(criterion)(model, (x, y))
    assert amp_loss.dtype == torch.float32


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
    with pytest.raises(AnivisionError, match=r"different.*\bepochs\b"):  # the same-run rule names the changed keys
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
    assert _cli(["retrieval", "search", str(run), "--gallery-images", str(data), query, "--top-k", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(query) and "nearest work" in out and out.count("work_") >= 3
    assert len(list((run / "search_index").glob("gallery-*.npz"))) == 1
    assert _cli(["retrieval", "search", str(run), "--gallery-images", str(data), query]) == 0  # reuses the index
    assert len(list((run / "search_index").glob("gallery-*.npz"))) == 1
