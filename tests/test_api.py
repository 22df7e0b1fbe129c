"""The Python API: the same predictions as the CLI, whatever form the images come in."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import anivision as av
from anivision.cli import main
from anivision.errors import AnivisionError

from conftest import TINY_CNN, TINY_VIT, make_class_folders


def _train(data: Path, out: Path, cache: Path, backbone: str) -> None:
    assert main(["-q", "train", "--data", str(data), "--backbone", backbone, "--weights", "none", "--img-size", "32",
                 "--batch-size", "8", "--epochs", "1", "--strategy", "full", "--cache-dir", str(cache), "--out", str(out)]) == 0


@pytest.mark.parametrize("backbone", [TINY_CNN, TINY_VIT])
def test_predict_parity_paths_pil_numpy_and_cli(backbone, tmp_path):
    data = make_class_folders(tmp_path / "data", n_classes=3, n_per_class=8)
    run = tmp_path / "run"
    _train(data, run, tmp_path / "cache", backbone)
    # Queries in several modes and sizes: RGBA with transparency, greyscale, palette, a wide image.
    q = tmp_path / "q"
    q.mkdir()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (50, 70, 4), dtype=np.uint8), "RGBA").save(q / "a.png")
    Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8), "L").save(q / "b.png")
    Image.fromarray(rng.integers(0, 255, (33, 90, 3), dtype=np.uint8)).convert("P").save(q / "c.png")
    Image.fromarray(rng.integers(0, 255, (64, 48, 3), dtype=np.uint8)).save(q / "d.jpg", quality=90)
    paths = sorted(str(p) for p in q.iterdir())

    csv_path = tmp_path / "preds.csv"
    assert main(["-q", "predict", str(run), str(q), "--top-k", "3", "--out", str(csv_path)]) == 0
    cli = {r["path"]: r for r in csv.DictReader(open(csv_path))}

    clf = av.load(run)
    assert isinstance(clf, av.ImageClassifier) and clf.classes == ["class0", "class1", "class2"]
    by_path = clf.predict(paths, top_k=3)
    by_folder = clf.predict(str(q), top_k=3)
    pils = [Image.open(p) for p in paths]
    by_pil = clf.predict(pils, top_k=3)
    # A palette image as numpy would be its indices: arrays come as (H, W) grey, RGB or RGBA pixels.
    by_numpy = clf.predict([np.asarray(im.convert("RGBA") if im.mode == "P" else im) for im in pils], top_k=3)
    assert [p.source for p in by_path] == paths == [p.source for p in by_folder]
    assert [p.source for p in by_pil] == [f"<image {i}>" for i in range(4)]
    for i, path in enumerate(paths):
        row = cli[path]
        for preds in (by_path, by_folder, by_pil, by_numpy):
            p = preds[i]
            assert [lab for lab, _ in p.topk] == [row["pred_1"], row["pred_2"], row["pred_3"]]
            assert [pr for _, pr in p.topk] == pytest.approx([float(row[f"prob_{k}"]) for k in (1, 2, 3)], abs=1e-6)
            assert (p.label, p.prob) == p.topk[0]
    probs = clf.predict_proba(paths)
    assert probs.shape == (4, 3) and np.allclose(probs.sum(1), 1.0)
    assert np.allclose(probs.max(1), [p.prob for p in by_path], atol=1e-12)
    emb = clf.embed(pils)
    assert emb.dtype == np.float32 and emb.shape == (4, clf.model.backbone.num_features)
    assert np.allclose(emb, clf.embed(paths), atol=1e-6)


def test_unreadable_inputs_and_bad_arrays(tmp_path):
    data = make_class_folders(tmp_path / "data", n_classes=2, n_per_class=8)
    _train(data, tmp_path / "run", tmp_path / "cache", TINY_CNN)
    clf = av.load(tmp_path / "run")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    good = str(data / "class0" / "img000.png")
    with pytest.raises(AnivisionError, match="bad.png"):
        clf.predict([good, bad])
    preds = clf.predict([good, bad], skip_unreadable=True)
    assert [p.source for p in preds] == [good]
    with pytest.raises(AnivisionError, match="uint8"):
        clf.predict(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(AnivisionError, match="shape"):
        clf.predict(np.zeros((8, 8, 2), np.uint8))
    with pytest.raises(AnivisionError, match="no such file"):
        clf.predict(tmp_path / "missing.png")
    with pytest.raises(AnivisionError, match="not an anivision run"):
        av.load(tmp_path)


def test_train_is_the_cli_train(tmp_path):
    data = make_class_folders(tmp_path / "data", n_classes=2, n_per_class=8)
    kw = dict(data=str(data), backbone=TINY_CNN, weights="none", img_size=32, batch_size=8, epochs=1, cache_dir=str(tmp_path / "c"))
    clf = av.train(out=str(tmp_path / "api"), **kw)
    assert main(["-q", "train", "--data", str(data), "--backbone", TINY_CNN, "--weights", "none", "--img-size", "32",
                 "--batch-size", "8", "--epochs", "1", "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "cli")]) == 0
    cli = av.load(tmp_path / "cli")
    assert clf.metrics["accuracy"] == cli.metrics["accuracy"] and clf.metrics["nll"] == cli.metrics["nll"]
    with pytest.raises(AnivisionError, match="unknown option.*epoch_count"):
        av.train(out=str(tmp_path / "x"), epoch_count=3, **kw)


def test_help_lists_the_public_api():
    buf = io.StringIO()
    import pydoc

    buf.write(pydoc.render_doc(av, renderer=pydoc.plaintext))
    text = buf.getvalue()
    for name in av.__all__:
        assert name in text


def test_fewshot_gallery_and_retrieval_through_the_api(tmp_path):
    from anivision.data.synth import generate

    chars = make_class_folders(tmp_path / "chars", n_classes=4, n_per_class=10)
    cache = str(tmp_path / "cache")
    fs = av.fewshot.train(data=str(chars), out=str(tmp_path / "proto"), backbone=TINY_CNN, weights="none", img_size=32,
                          epochs=1, episodes_per_epoch=2, n_way=2, k_shot=2, n_query=2, val_episodes=5, classes="2/2/0", cache_dir=cache)
    assert isinstance(fs, av.FewShotModel) and isinstance(av.load(tmp_path / "proto"), av.FewShotModel)
    assert fs.embed(str(chars / "class0")).shape == (10, fs.model.num_features)

    gallery_dir = tmp_path / "gallery"
    gallery = av.enroll(tmp_path / "proto", chars, out=gallery_dir, k_shot=5)
    assert isinstance(gallery, av.Gallery) and gallery.classes == ["class0", "class1", "class2", "class3"]
    queries = sorted(str(p) for p in (chars / "class2").glob("*.png"))[:3]
    by_path = gallery.identify(queries, top_k=2)
    by_pil = av.load(gallery_dir).identify([Image.open(q) for q in queries], top_k=2, threshold=float("inf"))
    assert [i.source for i in by_path] == queries
    assert all(i.known for i in by_pil)  # an infinite threshold: never unknown
    csv_path = tmp_path / "who.csv"
    assert main(["-q", "identify", str(gallery_dir), *queries, "--top-k", "2", "--out", str(csv_path)]) == 0
    rows = list(csv.DictReader(open(csv_path)))
    for ident, row in zip(by_path, rows):
        assert [lab for lab, _ in ident.topk] == [row["pred_1"], row["pred_2"]]
        assert [d for _, d in ident.topk] == pytest.approx([float(row["dist_1"]), float(row["dist_2"])], rel=1e-5)
    # A plain backbone enrols too, into a temporary folder when no out is given.
    tmp_gallery = av.enroll(TINY_CNN, chars, weights="none", k_shot=3, tta="flip")
    try:
        assert tmp_gallery.path.is_dir() and len(tmp_gallery.identify(queries[0])) == 1
        assert tmp_gallery.meta["tta"] == "flip" and av.load(tmp_gallery.path).meta["tta"] == "flip"
    finally:
        shutil.rmtree(tmp_gallery.path)
    with pytest.raises(AnivisionError, match="unknown test-time augmentation 'rotate'"):
        av.enroll(TINY_CNN, chars, weights="none", k_shot=3, out=tmp_path / "bad-tta", tta="rotate")
    assert not (tmp_path / "bad-tta").exists()  # refused before anything is written

    style = tmp_path / "style"
    generate("style", style, n_per_class=3, size=32, seed=0, n_works=3, roles_per_work=2, progress=False)
    run = tmp_path / "style-run"
    assert main(["-q", "retrieval", "train", "--data", str(style), "--backbone", TINY_CNN, "--weights", "none", "--img-size", "32",
                 "--epochs", "1", "--folds", "3", "--p", "2", "--k", "2", "--fold", "0", "--cache-dir", cache, "--out", str(run)]) == 0
    retriever = av.retrieval.load(run)
    assert isinstance(av.load(run), av.StyleRetriever)
    query = sorted((style / "work_01").rglob("*.jpg"))[0]
    found = retriever.search([str(query), Image.open(query)], gallery=style, top_k=4)
    assert [r.source for r in found] == [str(query), "<image 1>"]
    assert [h["path"] for h in found[0].hits] == [h["path"] for h in found[1].hits]
    assert found[0].hits[0]["path"] == str(query)  # the query itself is in the gallery: distance 0
    assert found[0].work == "work_01" and sum(n for _, n in found[0].votes) == 4
    assert retriever.embed([str(query)]).shape[0] == 1
