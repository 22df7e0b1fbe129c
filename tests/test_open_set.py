"""Open-set identification: L2-normalised galleries, a threshold calibrated for a target
false-rejection rate by leave-one-out, the operating point recorded and printed, and old
galleries (no ``normalize`` key) still identifying as before."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from test_fewshot import make_shapes

from anivision.cli import main
from anivision.errors import AnivisionError
from anivision.models.protonet import PrototypicalNetwork
from anivision.tasks.fewshot import Gallery, calibrate_threshold, l2_normalise

TINY = ["test_efficientnet", "--weights", "none", "--img-size", "32"]


def clusters(n_classes: int, per_class: int, dim: int = 32, spread: float = 0.25, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Points around random unit directions, each scaled by a random norm in [0.2, 5]: the
    directions tell the classes apart, the norms are noise (as embeddings' norms are)."""
    rng = np.random.default_rng(seed)
    centres = l2_normalise(rng.normal(size=(n_classes, dim)))
    x = np.repeat(centres, per_class, axis=0) + spread * rng.normal(size=(n_classes * per_class, dim)) / np.sqrt(dim)
    x *= rng.uniform(0.2, 5.0, size=(len(x), 1))
    return x.astype(np.float32), np.repeat(np.arange(n_classes), per_class)


def prototypes(f: np.ndarray, y: np.ndarray, distance: str = "euclidean") -> np.ndarray:
    return PrototypicalNetwork(distance=distance).process_support_set(torch.from_numpy(f), torch.from_numpy(y)).numpy()


def test_threshold_is_the_quantile_of_leave_one_out_own_distances() -> None:
    f, y = clusters(4, 6)
    f = l2_normalise(f)
    protos = prototypes(f, y)
    naive = []
    for i in range(len(f)):
        others = (y == y[i]) & (np.arange(len(f)) != i)
        naive.append(float(((f[i] - f[others].mean(0)) ** 2).sum()))
    for rate in (0.0, 0.1, 0.25):
        point = calibrate_threshold(f, y, protos, "euclidean", rate)
        assert point["threshold"] == pytest.approx(np.quantile(naive, 1 - rate), rel=1e-5)
        assert point["loo_false_rejection"] == pytest.approx(np.mean(np.array(naive) > point["threshold"]))
        assert point["reject_rate"] == rate and 0 <= point["est_unknown_rejection"] <= 1
    assert calibrate_threshold(f, y, protos, "euclidean", 0.0)["loo_false_rejection"] == 0.0
    for bad in (-0.1, 1.0, float("nan")):
        with pytest.raises(AnivisionError, match="--reject-rate"):
            calibrate_threshold(f, y, protos, "euclidean", bad)


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_unknown_classes_are_rejected_known_accepted(distance: str) -> None:
    # 8 classes: enrol 4 from 5 images each, the other 4 are unknown. With norms that vary
    # 25-fold, distances on raw embeddings cannot separate them; on unit vectors they do.
    f, y = clusters(8, 25)
    enrol = np.concatenate([np.flatnonzero(y == c)[:5] for c in range(4)])
    known_q = np.concatenate([np.flatnonzero(y == c)[5:] for c in range(4)])
    unknown_q = np.flatnonzero(y >= 4)
    results = {}
    for mode, g in (("normalised", l2_normalise(f)), ("raw", f)):
        protos = prototypes(g[enrol], y[enrol], distance)
        thr = calibrate_threshold(g[enrol], y[enrol], protos, distance, 0.1)["threshold"]
        net = PrototypicalNetwork.from_prototypes(torch.as_tensor(protos, dtype=torch.float64), distance)
        dk = net.distances(torch.as_tensor(g[known_q], dtype=torch.float64)).numpy()
        du = net.distances(torch.as_tensor(g[unknown_q], dtype=torch.float64)).numpy()
        results[mode] = (float(((dk.min(1) <= thr) & (dk.argmin(1) == y[known_q])).mean()), float((du.min(1) > thr).mean()))
    known_right, unknown_rejected = results["normalised"]
    # 10% target false rejection, estimated from 20 leave-one-out distances: about 80-90% accepted.
    assert known_right >= 0.75 and unknown_rejected >= 0.95
    if distance == "euclidean":  # cosine normalises by itself
        assert sum(results["raw"]) < known_right + unknown_rejected - 0.1


def enrol_tiny(tmp_path: Path) -> tuple[Path, str]:
    data = make_shapes(tmp_path / "data", n_classes=4, n_per_class=8)
    chars = tmp_path / "chars"
    for c in ("char0", "char1", "char2"):
        (chars / c).mkdir(parents=True)
        for f in sorted((data / c).iterdir())[:6]:
            (chars / c / f.name).write_bytes(f.read_bytes())
    return data, str(chars)


def test_enroll_records_and_prints_the_operating_point(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data, chars = enrol_tiny(tmp_path)
    cache = str(tmp_path / "cache")
    metas = {}
    for rate in ("0", "0.3"):
        capsys.readouterr()
        out = tmp_path / f"g{rate}"
        assert main(["enroll", *TINY, chars, "--reject-rate", rate, "--out", str(out), "--cache-dir", cache, "-q"]) == 0
        printed = capsys.readouterr().out
        assert f"--reject-rate {float(rate):g}" in printed and "'unknown' threshold" in printed
        metas[rate] = json.loads((out / "gallery.json").read_text())
    m0, m3 = metas["0"], metas["0.3"]
    assert m0["normalize"] is True and m0["reject_rate"] == 0.0 and m3["reject_rate"] == 0.3
    assert m0["loo_false_rejection"] == 0.0 and m3["loo_false_rejection"] >= 0.2
    assert 0 < m3["threshold"] < m0["threshold"] <= 4.0  # squared distances between unit-length vectors
    for key in ("est_unknown_rejection", "loo_accuracy", "impostor_within_threshold", "threshold_rule"):
        assert key in m0
    # Prototypes are means of unit vectors: never longer than 1.
    protos = load_file(str(tmp_path / "g0" / "prototypes.safetensors"))["prototypes"]
    assert float(protos.norm(dim=1).max()) <= 1.0 + 1e-5
    # Distances at identification are on unit vectors too, and the gallery's threshold applies.
    g = Gallery.load(tmp_path / "g0")
    dist, _ = g.distances([str(p) for p in sorted((data / "char3").iterdir())])
    assert g.normalize and float(dist.max()) <= 4.0 + 1e-6
    with pytest.raises(SystemExit):
        main(["enroll", *TINY, chars, "--reject-rate", "x", "--out", str(tmp_path / "bad")])
    capsys.readouterr()
    assert main(["enroll", *TINY, chars, "--reject-rate", "1", "--out", str(tmp_path / "bad"), "--cache-dir", cache, "-q"]) == 2
    assert "--reject-rate must be in [0, 1)" in capsys.readouterr().err
    # The old --threshold-percentile P still works, as --reject-rate 1 - P/100, with a note.
    assert main(["enroll", *TINY, chars, "--threshold-percentile", "70", "--out", str(tmp_path / "old"), "--cache-dir", cache, "-q"]) == 0
    assert "--threshold-percentile is deprecated; use --reject-rate 0.3" in capsys.readouterr().err
    assert json.loads((tmp_path / "old" / "gallery.json").read_text())["reject_rate"] == 0.3


def test_old_gallery_without_normalize_keeps_raw_distances(tmp_path: Path) -> None:
    data, chars = enrol_tiny(tmp_path)
    out = tmp_path / "old"
    assert main(["enroll", *TINY, chars, "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "-q"]) == 0
    # Rewrite it the way an older anivision wrote it: raw prototypes, no "normalize" key.
    g = Gallery.load(out)
    chars_paths = sorted(str(p) for p in Path(chars).rglob("*.png"))
    feats = np.stack([g.distances([p])[1].values[0] for p in chars_paths])  # raw embeddings of the enrolment images
    labels = np.array([["char0", "char1", "char2"].index(Path(p).parent.name) for p in chars_paths])
    raw_protos = prototypes(feats.astype(np.float32), labels)
    save_file({"prototypes": torch.from_numpy(raw_protos.astype(np.float32))}, str(out / "prototypes.safetensors"))
    meta = json.loads((out / "gallery.json").read_text())
    for key in ("normalize", "reject_rate", "loo_false_rejection", "est_unknown_rejection"):
        meta.pop(key)
    meta["threshold"] = 1e9
    (out / "gallery.json").write_text(json.dumps(meta))
    old = Gallery.load(out)
    assert not old.normalize
    query = str(sorted((data / "char1").iterdir())[-1])
    dist, emb = old.distances([query])
    want = ((emb.values[0][None, :].astype(np.float64) - raw_protos) ** 2).sum(1)
    np.testing.assert_allclose(dist[0], want, rtol=1e-4)
    assert old.identify([query])[0].known  # the recorded (raw) threshold still applies


def test_enroll_with_a_classification_run_uses_its_fine_tuned_backbone(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # A classifier trained on the characters enrols them with its own backbone (head dropped):
    # the prototypes are the mean unit embeddings of that backbone, not of ImageNet or random weights.
    from conftest import make_class_folders

    from anivision.embeddings import embed_paths
    from anivision.models.backbone import create_backbone
    from anivision.tasks.classify.model import load_run

    data = make_class_folders(tmp_path / "data", n_classes=3, n_per_class=8, size=32)
    run, cache = tmp_path / "clf", tmp_path / "cache"
    assert main(["-q", "train", "--data", str(data), "--out", str(run), "--backbone", *TINY[:3], "--img-size", "32", "--epochs", "1",
                 "--batch-size", "8", "--cache-dir", str(cache)]) == 0
    gallery = tmp_path / "gallery"
    assert main(["enroll", str(run), str(data), "--out", str(gallery), "--cache-dir", str(cache)]) == 0
    assert "trained on 3 of these 3 characters" in capsys.readouterr().out
    meta = json.loads((gallery / "gallery.json").read_text())
    assert Path(meta["weights"]) == (run / "model.safetensors").resolve() and meta["img_size"] == 32
    assert meta["trained_on_enrolled"] == ["class0", "class1", "class2"]  # enroll printed that its estimate is optimistic
    protos = load_file(str(gallery / "prototypes.safetensors"))["prototypes"].numpy()
    clf, _, _, dcfg = load_run(run)
    files = sorted((data / "class0").iterdir())

    def embed(net: torch.nn.Module) -> np.ndarray:
        return l2_normalise(embed_paths(net.eval(), files, dcfg, cache_dir=cache, progress=False).features).mean(0)

    np.testing.assert_allclose(protos[0], embed(clf.backbone), atol=2e-4)
    untrained = create_backbone("test_efficientnet", "none", img_size=32).eval()
    assert np.abs(protos[0] - embed(untrained)).max() > 1e-2
    assert main(["-q", "enroll", str(run), str(data), "--weights", "none", "--out", str(tmp_path / "g2")]) == 2
    import anivision as av  # the Python API takes the same run

    g = av.enroll(str(run), data, k_shot=4, out=tmp_path / "g3")
    assert g.meta["weights"] == meta["weights"] and g.meta["counts"] == [4, 4, 4]


def test_predict_reject_rate_calls_low_top_logit_images_unknown(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # A classifier's open set: the threshold is the RATE quantile of the top logit over the run's
    # validation images; an image below it is "unknown" and its top classes follow (as identify).
    import csv

    from conftest import make_class_folders

    import anivision as av
    from anivision.tasks.classify.data import split_paths

    every = make_class_folders(tmp_path / "every", n_classes=4, n_per_class=12, size=32)
    data = tmp_path / "data"
    data.mkdir()
    for c in ("class0", "class1", "class2"):
        (every / c).rename(data / c)
    run, cache = tmp_path / "clf", tmp_path / "cache"
    assert main(["-q", "train", "--data", str(data), "--out", str(run), "--backbone", *TINY[:3], "--img-size", "32", "--epochs", "2",
                 "--batch-size", "8", "--cache-dir", str(cache)]) == 0
    clf = av.load(run)
    val = split_paths(run, clf.config, "val")
    assert val and all(Path(p).parent.name.startswith("class") for p in val)
    point = clf.unknown_threshold(0.3)
    top_val = clf.outputs(val, "logits").values.max(1)
    assert point["threshold"] == pytest.approx(float(np.quantile(top_val, 0.3))) and point["calibration_images"] == len(val)
    queries = sorted((every / "class3").iterdir()) + sorted((data / "class0").iterdir())[:4]
    top = clf.outputs([str(q) for q in queries], "logits").values.max(1)
    out = tmp_path / "pred.csv"
    assert main(["-q", "predict", str(run), *map(str, queries), "--reject-rate", "0.3", "--top-k", "2", "--out", str(out)]) == 0
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    plain = clf.predict([str(q) for q in queries], top_k=2)
    for row, below, p in zip(rows, top < point["threshold"], plain):
        assert (row["pred_1"] == "unknown") == bool(below)
        if below:
            assert row["pred_2"] == p.label and float(row["prob_1"]) == pytest.approx(p.prob, abs=1e-5)
        else:
            assert row["pred_1"] == p.label
    api = clf.predict([str(q) for q in queries], top_k=2, reject_rate=0.3)
    assert [p.label for p in api] == [r["pred_1"] for r in rows]
    assert main(["-q", "predict", str(run), str(queries[0]), "--reject-rate", "1.5"]) == 2
    assert "--reject-rate must be in [0, 1)" in capsys.readouterr().err


def test_reject_rate_keeps_the_validation_top_logits_until_the_weights_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The pass over the validation images runs once; later calls (any rate, a new process) read
    # RUN/unknown_calibration.json; new weights, a damaged file or a rewritten image compute it again.
    from conftest import make_class_folders

    import anivision as av
    from anivision.tasks.classify import predictor
    from anivision.tasks.classify.data import split_paths

    data = make_class_folders(tmp_path / "data", n_classes=3, n_per_class=12, size=32)
    run = tmp_path / "clf"
    assert main(["-q", "train", "--data", str(data), "--out", str(run), "--backbone", *TINY[:3], "--img-size", "32", "--epochs", "1",
                 "--batch-size", "8", "--cache-dir", str(tmp_path / "cache")]) == 0
    passes = []
    real = predictor.ImageClassifier.outputs

    def counting(self, images, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        passes.append(len(images))
        return real(self, images, *args, **kwargs)

    monkeypatch.setattr(predictor.ImageClassifier, "outputs", counting)
    first = av.load(run).unknown_threshold(0.3)
    assert len(passes) == 1 and (run / predictor.CALIBRATION_FILE).is_file()
    again = av.load(run)
    assert again.unknown_threshold(0.3) == first and again.unknown_threshold(0.1)["threshold"] <= first["threshold"]
    assert len(passes) == 1
    with torch.no_grad():
        again.model.head[-1].weight.mul_(2.0)
    doubled = again.unknown_threshold(0.3)
    assert len(passes) == 2 and doubled["threshold"] != pytest.approx(first["threshold"])
    (run / predictor.CALIBRATION_FILE).write_text("{not json")
    assert av.load(run).unknown_threshold(0.3) == first and len(passes) == 3
    # A validation image rewritten in place (same path) is a new calibration set.
    val = split_paths(run, again.config, "val")
    os.utime(val[0], ns=(0, Path(val[0]).stat().st_mtime_ns + 10**9))
    assert av.load(run).unknown_threshold(0.3) == first and len(passes) == 4
