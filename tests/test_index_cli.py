"""``--index`` in enroll/identify and retrieval search: faiss gives the exact top-1; saved
indexes are reloaded; a grown gallery embeds only its new images; other-model indexes are refused."""

from __future__ import annotations

import csv
import importlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anivision.cli import main
from anivision.index import build_index, read_meta

from conftest import TINY_CNN, make_class_folders

# the module (the package re-exports a function of the same name)
search_mod = importlib.import_module("anivision.tasks.retrieval.search")


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_identify_with_faiss_index_gives_the_exact_top1(tmp_path, capsys):
    data = make_class_folders(tmp_path / "chars", n_classes=4, n_per_class=5, size=32)
    gallery = tmp_path / "gallery"
    enroll = ["enroll", TINY_CNN, str(data), "--weights", "none", "--img-size", "32", "--cache-dir", str(tmp_path / "cache"), "-q"]
    assert main([*enroll, "--out", str(gallery), "--index", "faiss"]) == 0
    assert read_meta(gallery / "index")["kind"] == "faiss" and json.loads((gallery / "gallery.json").read_text())["index"] == "faiss"
    assert main(["identify", str(gallery), str(data), "--top-k", "3", "--threshold", "inf", "--out", str(tmp_path / "f.csv"), "-q"]) == 0
    assert main(["identify", str(gallery), str(data), "--top-k", "3", "--threshold", "inf", "--index", "exact", "--out", str(tmp_path / "e.csv"), "-q"]) == 0
    f, e = _rows(tmp_path / "f.csv"), _rows(tmp_path / "e.csv")
    assert len(f) == 20 and [r["pred_1"] for r in f] == [r["pred_1"] for r in e]
    assert [r["pred_2"] for r in f] == [r["pred_2"] for r in e]
    np.testing.assert_allclose([float(r["dist_1"]) for r in f], [float(r["dist_1"]) for r in e], rtol=1e-4, atol=1e-5)

    # The saved index belongs to the gallery's model: one built with another is refused in one line.
    meta = json.loads((gallery / "index" / "index.json").read_text())
    (gallery / "index" / "index.json").write_text(json.dumps(meta | {"fingerprint": "someothermodel"}))
    capsys.readouterr()
    assert main(["identify", str(gallery), str(data / "class0"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "index built with someothermodel" in err and err.strip().count("\n") == 0
    # ivfpq needs enough vectors to train: a one-line error, and nothing of the old gallery overwritten
    stamp = (gallery / "gallery.json").stat().st_mtime_ns
    assert main([*enroll, "--out", str(gallery), "--index", "ivfpq"]) == 2
    assert "at least 256 vectors" in capsys.readouterr().err
    assert (gallery / "gallery.json").stat().st_mtime_ns == stamp


@pytest.fixture(scope="module")
def retrieval_run(tmp_path_factory):
    from anivision.data.synth import generate

    tmp = tmp_path_factory.mktemp("ret")
    data = tmp / "data"
    generate("style", data, n_per_class=3, size=32, seed=0, n_works=4, roles_per_work=3, progress=False)
    run = tmp / "run"
    assert main(["retrieval", "train", "--data", str(data), "--backbone", TINY_CNN, "--weights", "none", "--img-size", "32",
                 "--cache-dir", str(tmp / "cache"), "--epochs", "1", "--folds", "2", "--fold", "0", "--p", "3", "--k", "2",
                 "--out", str(run), "-q"]) == 0
    return data, run


def _search(run: Path, gallery: Path, out: Path, *extra: str) -> list[dict]:
    queries = sorted(str(p) for p in (gallery / "work_01").rglob("*.jpg"))[:4]
    assert main(["retrieval", "search", str(run), "--gallery-images", str(gallery), *queries, "--top-k", "5", "--out", str(out), "-q", *extra]) == 0
    return json.loads((out / "search.json").read_text())["results"]


def test_retrieval_search_faiss_equals_exact_and_appends(retrieval_run, tmp_path, monkeypatch):
    data, run = retrieval_run
    gallery = tmp_path / "gallery"
    shutil.copytree(data, gallery)
    exact = _search(run, gallery, tmp_path / "e")
    flat = _search(run, gallery, tmp_path / "f", "--index", "faiss")
    assert [r["top"][0]["path"] for r in exact] == [r["top"][0]["path"] for r in flat]
    assert [[t["path"] for t in r["top"]] for r in exact] == [[t["path"] for t in r["top"]] for r in flat]
    np.testing.assert_allclose([t["dist"] for r in flat for t in r["top"]], [t["dist"] for r in exact for t in r["top"]], rtol=1e-4, atol=1e-5)
    folders = list((run / "search_index").glob("gallery-*.faiss-*"))
    assert len(folders) == 1 and read_meta(folders[0])["count"] == 36

    # Grow the gallery: only the new images are embedded, and the faiss index gets them added.
    new = gallery / "work_09" / "role_00"
    new.mkdir(parents=True)
    for f in sorted((data / "work_00" / "role_01").glob("*.jpg")):  # new pictures (mirrored), not copies: no tied distances
        Image.open(f).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(new / f.name)
    embedded: list[int] = []
    real_embed, built = search_mod.embed_paths, []
    monkeypatch.setattr(search_mod, "embed_paths", lambda *a, **k: embedded.append(len(k["indices"])) or real_embed(*a, **k))
    monkeypatch.setattr(search_mod, "build_index", lambda *a, **k: built.append(a[1]) or build_index(*a, **k))
    grown = _search(run, gallery, tmp_path / "g", "--index", "faiss")
    assert embedded == [3] and built == []  # 3 new images embedded; the saved faiss index appended to, not rebuilt
    folders = sorted((run / "search_index").glob("gallery-*.faiss-*"), key=lambda p: p.stat().st_mtime_ns)
    assert len(folders) == 2 and read_meta(folders[-1])["count"] == 39
    hits = [t["path"] for r in grown for t in r["top"]]
    assert all(Path(p).exists() for p in hits)
    copies = [p for p in hits if "work_09" in p]
    monkeypatch.undo()
    again = _search(run, gallery, tmp_path / "x")  # exact on the same grown gallery: the same neighbours
    assert [[t["path"] for t in r["top"]] for r in again] == [[t["path"] for t in r["top"]] for r in grown]
    assert copies == [p for r in again for p in (t["path"] for t in r["top"]) if "work_09" in p]
