"""ONNX export and ONNX Runtime inference: parity with torch, the dynamic batch axis, the sidecar
(the README's onnxruntime-only example reproduces the logits), INT8, ``--engine onnx`` through
the CLI, the per-run export cache, and bad input (one-line errors, nothing overwritten).

Each export runs the dynamo exporter (seconds per tiny model), so the runs and their exports
are made once per module.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from PIL import Image

import anivision as av
from anivision.cli import main
from anivision.deploy import ExportSpec, OnnxModel, int8_mode, read_sidecar, sidecar_path
from anivision.errors import AnivisionError

from conftest import TINY_CNN, TINY_VIT, make_class_folders, run_cli

ROOT = Path(__file__).resolve().parents[1]


def _train(data: Path, out: Path, cache: Path, backbone: str, epochs: int = 2, *extra: str) -> Path:
    assert main(["-q", "train", "--data", str(data), "--backbone", backbone, "--weights", "none", "--img-size", "32",
                 "--batch-size", "8", "--epochs", str(epochs), "--strategy", "full", "--cache-dir", str(cache), "--out", str(out), *extra]) == 0
    return out


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("deploy")
    make_class_folders(root / "data", n_classes=3, n_per_class=10)
    return root


@pytest.fixture(scope="module")
def cnn_run(work: Path) -> Path:
    return _train(work / "data", work / "cnn", work / "cache", TINY_CNN, epochs=3)


@pytest.fixture(scope="module")
def vit_run(work: Path) -> Path:
    return _train(work / "data", work / "vit", work / "cache", TINY_VIT)


@pytest.fixture(scope="module")
def cosine_run(work: Path) -> Path:
    return _train(work / "data", work / "cosine", work / "cache", TINY_CNN, 2, "--head", "cosine")


def _images(work: Path) -> list[str]:
    return sorted(str(p) for p in (work / "data").rglob("*.png"))


@pytest.mark.parametrize("which", ["cnn", "vit", "cosine"])
def test_onnx_engine_matches_torch_and_batch_axis_is_dynamic(which: str, work: Path, request: pytest.FixtureRequest) -> None:
    run = request.getfixturevalue(f"{which}_run")
    paths = _images(work)
    torch_clf, onnx_clf = av.load(run), av.load(run, engine="onnx")
    for what in ("logits", "features"):
        a = torch_clf.outputs(paths, what).values
        b = onnx_clf.outputs(paths, what).values
        assert a.shape == b.shape and np.abs(a - b).max() <= 1e-4, what
        if what == "logits":
            assert (a.argmax(1) == b.argmax(1)).all()
    # The export is cached in RUN/onnx/ and its sidecar names the weights it was made from.
    exports = sorted((run / "onnx").glob("model-*.onnx"))
    assert len(exports) == 1
    meta = read_sidecar(exports[0])
    assert meta["kind"] == "classifier" and meta["classes"] == torch_clf.classes and meta["outputs"] == ["logits", "embeddings"]
    assert meta["source"]["model_fingerprint"] and meta["input_size"] == 32
    # Dynamic batch: batches of 1 and 7 give the rows of one batch of 9.
    model = onnx_clf.runner.onnx_model()
    x = torch.randn(9, 3, 32, 32).numpy()
    whole = model.run(x)["logits"]
    assert model.run(x[:1])["logits"].shape == (1, 3)
    np.testing.assert_allclose(model.run(x[:7])["logits"], whole[:7], atol=1e-5)
    np.testing.assert_allclose(model.run(x[8:])["logits"], whole[8:], atol=1e-5)
    with torch.inference_mode():
        ref = torch_clf.model.float()(torch.from_numpy(x).contiguous()).numpy()
    assert np.abs(ref - whole).max() <= 1e-4
    with pytest.raises(AnivisionError, match=r"expected a \(batch, 3, 32, 32\)"):
        model.run(x[:, :, :16])


def test_export_cache_is_reused_and_follows_the_weights(cnn_run: Path, work: Path, tmp_path: Path) -> None:
    run = tmp_path / "copy"
    shutil.copytree(cnn_run, run)
    av.load(run, engine="onnx").predict(_images(work)[:2])
    first = sorted((run / "onnx").glob("model-*.onnx"))
    stamp = first[0].stat().st_mtime_ns
    av.load(run, engine="onnx").predict(_images(work)[:2])  # reused, not exported again
    assert sorted((run / "onnx").glob("model-*.onnx")) == first and first[0].stat().st_mtime_ns == stamp
    # New weights (a retrained run): a new export under a new key, the stale one removed.
    from safetensors.torch import load_file, save_file

    sd = load_file(str(run / "model.safetensors"))
    sd["head.1.bias"] = sd["head.1.bias"] + torch.tensor([5.0, 0.0, 0.0])
    save_file(sd, str(run / "model.safetensors"))
    clf = av.load(run, engine="onnx")
    probs = clf.predict_proba(_images(work)[:4])
    second = sorted((run / "onnx").glob("model-*.onnx"))
    assert len(second) == 1 and second != first
    np.testing.assert_allclose(probs, av.load(run).predict_proba(_images(work)[:4]), atol=1e-5)


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Export and ONNX Runtime\n")
    end = text.find("\n## ", start + 1)
    blocks = re.findall(r"```python\n(.*?)```", text[start: end if end != -1 else None], flags=re.S)
    assert blocks, "the README's export section has no Python example"
    return blocks[0]


def test_sidecar_lets_plain_onnxruntime_reproduce_the_logits(cnn_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    out = tmp_path / "model.onnx"
    assert main(["-q", "export", str(cnn_run), "--out", str(out)]) == 0
    meta = json.loads(sidecar_path(out).read_text())
    assert meta["precision"] == "fp32" and meta["anivision_version"] == av.__version__ and meta["classes"] == ["class0", "class1", "class2"]
    assert {"mean", "std", "input_size", "preprocess", "outputs", "source"} <= set(meta)
    # A wide RGB JPEG, so the example's resize, both crops and normalisation all matter.
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 255, (45, 71, 3), dtype=np.uint8)).save(tmp_path / "face.jpg", quality=92)
    code = _readme_example()
    assert len([ln for ln in code.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]) <= 12
    assert not re.search(r"^\s*(import|from)\s+anivision", code, flags=re.M)  # onnxruntime, numpy and PIL only
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(code, "README.md", "exec"), ns)  # noqa: S102 - our own README
    ref = av.load(cnn_run).outputs([str(tmp_path / "face.jpg")], "logits").values
    assert np.abs(ns["logits"] - ref).max() <= 1e-4
    assert capsys.readouterr().out.strip().splitlines()[-1] == meta["classes"][int(ref.argmax())]


def test_int8_export_static_for_cnn_dynamic_for_vit(cnn_run: Path, vit_run: Path, work: Path, tmp_path: Path) -> None:
    clf = av.load(cnn_run)
    assert int8_mode(clf.model) == "static" and int8_mode(av.load(vit_run).model) == "dynamic"
    out = tmp_path / "q.onnx"
    r = run_cli(["-q", "export", str(cnn_run), "--int8", "--calibration", "16", "--out", str(out)])
    assert r.returncode == 0, r.stderr
    assert "int8 static" in r.stdout
    meta = read_sidecar(out)
    assert meta["precision"] == "int8" and meta["int8"]["mode"] == "static" and meta["int8"]["calibration_images"] == 16
    q = OnnxModel(out, threads=1)
    from anivision.embeddings import embed_inputs

    paths = _images(work)
    int8 = embed_inputs(q.output("logits"), paths, clf.data_config).values
    fp32 = clf.outputs(paths, "logits").values
    assert int8.shape == fp32.shape and (int8.argmax(1) == fp32.argmax(1)).mean() >= 0.8
    assert 0 < np.abs(int8 - fp32).max() < 0.5 * np.abs(fp32).max()  # quantized: close, not identical
    # Weights: 7-bit codes (reduce_range: no u8s8 saturation) for ordinary convolutions, all 8 bits for depthwise ones;
    # the first and last convolutions stay float32.
    graph = onnx.load(str(out)).graph
    codes = {i.name: np.abs(numpy_helper.to_array(i).astype(np.int32)).max() for i in graph.initializer}
    dq = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    convs = [(any(a.name == "group" and a.i > 1 for a in n.attribute), codes.get(dq.get(n.input[1]))) for n in graph.node if n.op_type == "Conv"]
    assert convs[0][1] is None and convs[-1][1] is None and all(c is not None for _, c in convs[1:-1])
    inner = convs[1:-1]
    assert any(d for d, _ in inner) and any(not d for d, _ in inner)
    assert all(c > 64 for d, c in inner if d) and all(c <= 64 for d, c in inner if not d)


def test_engine_onnx_through_the_cli_predict_and_evaluate(cnn_run: Path, work: Path, tmp_path: Path) -> None:
    rows = {}
    for engine in ("torch", "onnx"):
        out = tmp_path / f"{engine}.csv"
        assert main(["-q", "predict", str(cnn_run), str(work / "data"), "--engine", engine, "--top-k", "2", "--out", str(out)]) == 0
        rows[engine] = list(csv.DictReader(open(out)))
    assert [r["path"] for r in rows["torch"]] == [r["path"] for r in rows["onnx"]] and len(rows["onnx"]) == 30
    for a, b in zip(rows["torch"], rows["onnx"]):
        assert a["pred_1"] == b["pred_1"] and float(a["prob_1"]) == pytest.approx(float(b["prob_1"]), abs=1e-5)
    m = {}
    for engine in ("torch", "onnx"):
        assert main(["-q", "evaluate", str(cnn_run), "--engine", engine, "--out", str(tmp_path / f"ev-{engine}")]) == 0
        m[engine] = json.loads((tmp_path / f"ev-{engine}" / "metrics.json").read_text())
    assert m["onnx"]["engine"] == "onnx" and m["onnx"]["accuracy"] == m["torch"]["accuracy"]
    assert m["onnx"]["nll"] == pytest.approx(m["torch"]["nll"], abs=1e-4)


@pytest.mark.parametrize("tta", ["none", "flip"])
def test_gallery_identify_and_export_with_onnx(tta: str, work: Path, tmp_path: Path) -> None:
    gallery = tmp_path / "gallery"
    assert main(["-q", "enroll", TINY_CNN, str(work / "data"), "--weights", "none", "--img-size", "32",
                 "--cache-dir", str(work / "cache"), "--tta", tta, "--out", str(gallery)]) == 0
    assert json.loads((gallery / "gallery.json").read_text())["tta"] == tta
    if tta == "flip":  # an image and its mirror image embed alike, in torch and in the exported graph
        img = Image.open(_images(work)[0]).convert("RGB")
        for engine in ("torch", "onnx"):
            g = av.load(gallery, engine=engine)
            a, b = g.features([img])[0], g.features([img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)])[0]
            np.testing.assert_allclose(a, b, atol=1e-5)
    res = {}
    for engine in ("torch", "onnx"):
        out = tmp_path / f"id-{engine}.csv"
        assert main(["-q", "identify", str(gallery), str(work / "data"), "--engine", engine, "--out", str(out)]) == 0
        res[engine] = list(csv.DictReader(open(out)))
    for a, b in zip(res["torch"], res["onnx"], strict=True):
        assert a["pred_1"] == b["pred_1"] and float(a["dist_1"]) == pytest.approx(float(b["dist_1"]), rel=1e-4, abs=1e-5)
    assert main(["-q", "export", str(gallery)]) == 0
    meta = read_sidecar(gallery / "export" / "gallery.onnx")
    g = av.load(gallery)
    assert meta["kind"] == "gallery" and meta["outputs"] == ["embeddings"] and meta["classes"] == g.classes
    assert np.asarray(meta["gallery"]["prototypes"]).shape == tuple(g.net.prototypes.shape)
    assert meta["gallery"]["threshold"] == g.threshold and meta["gallery"]["distance"] == g.distance


def test_retrieval_search_and_export_with_onnx(tmp_path: Path) -> None:
    from anivision.data.synth import generate

    data = tmp_path / "style"
    generate("style", data, n_per_class=3, size=32, seed=0, n_works=4, roles_per_work=3, progress=False)
    run = tmp_path / "ret"
    assert main(["-q", "retrieval", "train", "--data", str(data), "--backbone", TINY_CNN, "--weights", "none", "--img-size", "32",
                 "--cache-dir", str(tmp_path / "cache"), "--epochs", "1", "--folds", "2", "--p", "3", "--k", "2", "--out", str(run)]) == 0
    queries = sorted(str(p) for p in data.rglob("*.jpg"))[:5]
    found = {e: av.retrieval.load(run, fold=0, engine=e).search(queries, gallery=data, top_k=3) for e in ("torch", "onnx")}
    for a, b in zip(found["torch"], found["onnx"], strict=True):
        assert [h["path"] for h in a.hits] == [h["path"] for h in b.hits]
        assert [h["dist"] for h in a.hits] == pytest.approx([h["dist"] for h in b.hits], abs=1e-4)
    r = run_cli(["-q", "retrieval", "search", str(run), *queries[:2], "--gallery-images", str(data), "--engine", "onnx", "--fold", "0"])
    assert r.returncode == 0, r.stderr
    path = av.export(run, fold=1)
    assert path == run / "export" / "fold1.onnx"
    meta = read_sidecar(path)
    assert meta["kind"] == "retrieval" and meta["retrieval"]["fold"] == 1 and meta["outputs"] == ["embeddings"]


# ------------------------------------------------------------------------------ bad input


def _one_line_error(r) -> str:
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def test_bad_input_one_line_errors_and_nothing_overwritten(cnn_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(cnn_run, run, ignore=shutil.ignore_patterns("onnx", "export"))
    out = tmp_path / "out" / "m.onnx"
    out.parent.mkdir()
    out.write_bytes(b"old model")
    sidecar_path(out).write_text("old sidecar")

    def untouched() -> None:
        assert out.read_bytes() == b"old model" and sidecar_path(out).read_text() == "old sidecar"
        assert sorted(p.name for p in out.parent.iterdir()) == ["m.json", "m.onnx"]  # no temporary file left

    weights = run / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])  # truncated
    assert "model.safetensors: corrupted weights file" in _one_line_error(run_cli(["export", str(run), "--out", str(out)]))
    untouched()
    weights.unlink()
    assert "model.safetensors missing" in _one_line_error(run_cli(["export", str(run), "--out", str(out)]))
    untouched()
    weights.write_bytes(good)

    # INT8 needs the training images: the data moved away, so none is there to calibrate with.
    split = (run / "split.csv").read_text()
    (run / "split.csv").write_text(split.replace(str(Path(cnn_run).parent / "data"), str(tmp_path / "gone")))
    msg = _one_line_error(run_cli(["export", str(run), "--int8", "--out", str(out)]))
    assert "--int8 needs calibration images" in msg
    untouched()
    (run / "split.csv").write_text(split)
    assert "--calibration 0" in _one_line_error(run_cli(["export", str(run), "--int8", "--calibration", "0", "--out", str(out)]))

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert "--out" in _one_line_error(run_cli(["export", str(run), "--out", str(blocker / "m.onnx")]))
    assert ".onnx" in _one_line_error(run_cli(["export", str(run), "--out", str(tmp_path / "m.bin")]))
    assert "--opset 3" in _one_line_error(run_cli(["export", str(run), "--opset", "3", "--out", str(out)]))
    untouched()
    assert "not an anivision run" in _one_line_error(run_cli(["export", str(tmp_path / "out")]))
    with pytest.raises(AnivisionError, match="--engine 'tensorrt'"):
        av.load(run, engine="tensorrt")
    r = run_cli(["predict", str(run), str(tmp_path), "--engine", "tensorrt"])
    assert r.returncode == 2 and "invalid choice: 'tensorrt'" in r.stderr


def test_spec_key_follows_weights_and_input() -> None:
    from anivision.data.transforms import DataConfig

    m = torch.nn.Linear(2, 2)
    base = ExportSpec(m, "fewshot", DataConfig(32, (0.5,) * 3, (0.5,) * 3), ["embeddings"], "aaaa")
    other_w = ExportSpec(m, "fewshot", DataConfig(32, (0.5,) * 3, (0.5,) * 3), ["embeddings"], "bbbb")
    other_size = ExportSpec(m, "fewshot", DataConfig(64, (0.5,) * 3, (0.5,) * 3), ["embeddings"], "aaaa")
    assert len({base.key(), other_w.key(), other_size.key(), base.key(opset=17)}) == 4 and base.key() == base.key()
