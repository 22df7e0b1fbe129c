"""Run folders are self-contained: they work from any working directory, after the run folder
moved, and (given the new data root) after the data moved.

Classification runs keep their own ``split.csv`` (data root + paths relative to it) and record
absolute paths in ``config.json``; few-shot galleries keep their own copy of the backbone
weights; retrieval runs record their data's absolute location. The library functions are called
directly (the CLI's flags are not what is tested here), plus one CLI check of ``evaluate`` and
``predict``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from anivision.cli import main
from anivision.data.folder import load_labeled
from anivision.data.reid import load_reid
from anivision.data.splits import parse_ratios, read_split, stratified_split, write_split
from anivision.data.synth import generate
from anivision.embeddings import embed_paths
from anivision.errors import AnivisionError
from anivision.models.reid_head import EmbeddingModel
from anivision.tasks.classify import TrainConfig, evaluate_run, resolve_train_config, train_classifier, train_option_defaults
from anivision.tasks.fewshot import FewShotTrainConfig, backbone_spec, enroll_gallery, evaluate_fewshot, identify_paths, run_data, train_fewshot
from anivision.tasks.retrieval import (
    RetrievalConfig,
    build_gallery_index,
    load_fold_model,
    pick_search_fold,
    run_data_source,
    search,
    train_run,
)
from anivision.tasks.retrieval import evaluate_run as evaluate_retrieval_run

from conftest import TINY_CNN, Killed, kill_at_step, make_class_folders
from test_fewshot import make_shapes

#: Test metrics that must not depend on where the run, the data or the working directory are.
SAME = ("accuracy", "nll", "f1_macro", "confusion_matrix", "n_images", "classes")


def _config(out: str | Path, cache: Path, **options) -> TrainConfig:
    """A tiny classification run, built the way the CLI builds it (paths as the user typed them)."""
    base = dict(backbone=TINY_CNN, weights="none", img_size=32, batch_size=8, epochs=2, strategy="full", cache_dir=str(cache), out=str(out))
    return resolve_train_config(train_option_defaults() | base | options)


def _same(a: dict, b: dict) -> None:
    for k in SAME:
        assert a[k] == (pytest.approx(b[k]) if isinstance(b[k], float) else b[k]), k


def _one_line_error(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    """``proj/data`` (3 classes x 12 images) and ``proj/splits/emo.csv`` (70/15/15, as ``anivision split`` writes it)."""
    proj = tmp_path / "proj"
    make_class_folders(proj / "data")
    images = load_labeled(proj / "data")
    write_split(images, stratified_split(images.labels, images.classes, parse_ratios("70/15/15"), 0), proj / "splits" / "emo.csv")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "moved").mkdir()
    return proj


# ------------------------------------------------------------------------------ classification


def test_classification_run_with_relative_split_works_from_anywhere_and_after_a_move(project, tmp_path, monkeypatch):
    cache, moved = tmp_path / "cache", tmp_path / "moved"
    monkeypatch.chdir(project)
    ref = train_classifier(_config("runs/full", cache, split="splits/emo.csv"), progress=False)
    saved = json.loads((project / "runs" / "full" / "config.json").read_text())
    assert saved["split"] == str(project / "splits" / "emo.csv")  # recorded absolute
    rows = list(csv.DictReader(open(project / "runs" / "full" / "split.csv")))
    assert {r["root"] for r in rows} == {str(project / "data")} and rows[0]["path"].startswith("class")
    with pytest.raises(Killed):  # 24 training images, batch 8: step 4 is in the middle of epoch 2
        train_classifier(_config("runs/killed", cache, split="splits/emo.csv"), progress=False, on_step=kill_at_step(4))
    assert json.loads((project / "runs" / "killed" / "checkpoint" / "state.json").read_text())["epoch"] == 0
    shutil.move(project / "runs" / "killed", moved / "killed")

    # From another working directory, with the paths as typed there: the moved run resumes and
    # the finished one is reused (the same run, however its paths are spelt).
    monkeypatch.chdir(tmp_path / "elsewhere")
    steps: list[int] = []
    resumed = train_classifier(_config("../moved/killed", cache, split="../proj/splits/emo.csv"), progress=False, on_step=steps.append)
    assert steps == [3, 4, 5]  # epoch 2 only: resumed, not restarted
    _same(resumed, ref)
    assert resumed["epochs_run"] == ref["epochs_run"] == 2
    stamp = (project / "runs" / "full" / "metrics.json").stat().st_mtime_ns
    _same(train_classifier(_config("../proj/runs/full", cache, split="../proj/splits/emo.csv"), progress=False), ref)
    assert (project / "runs" / "full" / "metrics.json").stat().st_mtime_ns == stamp

    # evaluate from here, then after moving the run folder; the CLI's evaluate and predict too.
    _same(evaluate_run("../proj/runs/full", out="ev1", progress=False), ref)
    shutil.move(project / "runs" / "full", moved / "full")
    _same(evaluate_run("../moved/full", progress=False), ref)
    assert main(["-q", "evaluate", "../moved/full", "--out", "ev2"]) == 0
    _same(json.loads(Path("ev2/metrics.json").read_text()), ref)
    assert main(["-q", "predict", "../moved/full", "../proj/data/class0", "--out", "preds.csv"]) == 0
    assert len(list(csv.DictReader(open("preds.csv")))) == 12


def test_moved_data_is_found_under_the_new_root(project, tmp_path, monkeypatch):
    cache, moved = tmp_path / "cache", tmp_path / "moved"
    monkeypatch.chdir(project)
    ref = train_classifier(_config("runs/full", cache, split="splits/emo.csv"), progress=False)
    with pytest.raises(Killed):
        train_classifier(_config("runs/killed", cache, split="splits/emo.csv"), progress=False, on_step=kill_at_step(4))
    shutil.move(project / "runs", moved / "runs")
    shutil.move(project / "data", tmp_path / "new-data")
    monkeypatch.chdir(tmp_path / "elsewhere")

    # evaluate: without the new root, one line naming the missing folder and what to pass.
    with pytest.raises(AnivisionError) as exc:
        evaluate_run(moved / "runs" / "full", progress=False)
    msg = _one_line_error(exc)
    assert str(project / "data") in msg and "--data-root" in msg
    _same(evaluate_run(moved / "runs" / "full", data_root="../new-data", progress=False), ref)
    with pytest.raises(AnivisionError, match="not both"):
        evaluate_run(moved / "runs" / "full", data="../new-data", data_root="../new-data", progress=False)

    # resume: the same, with --data NEW (allowed on a run trained from --split alone).
    split = str(project / "splits" / "emo.csv")  # still there, but its images are not
    with pytest.raises(AnivisionError) as exc:
        train_classifier(_config(moved / "runs" / "killed", cache, split=split), progress=False)
    msg = _one_line_error(exc)
    assert str(project / "data") in msg and "--data" in msg
    _same(train_classifier(_config(moved / "runs" / "killed", cache, split=split, data="../new-data"), progress=False), ref)
    assert json.loads((moved / "runs" / "killed" / "config.json").read_text())["data"] == str(tmp_path / "new-data")


def test_run_from_an_older_version_still_works(project, tmp_path, monkeypatch):
    """A config.json with a relative ``data`` and a split.csv relative to the run folder (no root column)."""
    cache = tmp_path / "cache"
    monkeypatch.chdir(project)
    ref = train_classifier(_config("runs/old", cache, data="data", epochs=1), progress=False)
    run = project / "runs" / "old"
    old_cfg = json.loads((run / "config.json").read_text()) | {"data": "data"}
    (run / "config.json").write_text(json.dumps(old_cfg))
    split = read_split(run / "split.csv")
    write_split(split, split.splits, run / "split.csv")  # the old format: relative to the run folder
    assert "root" not in open(run / "split.csv").readline()
    stamp = (run / "metrics.json").stat().st_mtime_ns
    _same(train_classifier(_config("runs/old", cache, data="data", epochs=1), progress=False), ref)  # same cwd: reused
    monkeypatch.chdir(tmp_path / "elsewhere")
    _same(train_classifier(_config("../proj/runs/old", cache, data="../proj/data", epochs=1), progress=False), ref)
    assert (run / "metrics.json").stat().st_mtime_ns == stamp
    _same(evaluate_run("../proj/runs/old", progress=False), ref)
    # Moved without the data, its old-format split needs the data root too.
    shutil.move(run, tmp_path / "moved" / "old")
    with pytest.raises(AnivisionError, match="--data-root"):
        evaluate_run(tmp_path / "moved" / "old", progress=False)
    _same(evaluate_run(tmp_path / "moved" / "old", data_root=project / "data", progress=False), ref)


def test_same_run_rule_compares_paths_as_locations(tmp_path, monkeypatch):
    a, b = make_class_folders(tmp_path / "a", n_per_class=3), make_class_folders(tmp_path / "b", n_per_class=3)
    (tmp_path / "w.safetensors").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig(data="a", out="o", weights="w.safetensors").with_absolute_paths()
    assert cfg.data == str(a) and cfg.weights == str(tmp_path / "w.safetensors")
    saved = json.loads(json.dumps(cfg.to_dict()))  # as config.json holds it
    assert cfg.differences(saved | {"data": "a", "weights": "w.safetensors"}) == []  # older relative values, same place
    assert cfg.differences(saved | {"data": "./a/../a"}) == []
    assert cfg.differences(saved | {"data": str(tmp_path / "gone")}) == []  # the data moved here
    assert dataclasses.replace(cfg, data=str(b)).differences(saved) == ["data"]  # both places exist: another dataset
    assert cfg.differences(saved | {"weights": "none"}) == ["weights"]
    only_split = dataclasses.replace(cfg, split=str(tmp_path / "s.csv"))
    assert only_split.differences(json.loads(json.dumps(only_split.to_dict())) | {"data": ""}) == []  # --data added to locate moved images
    assert cfg.differences(saved | {"data": ""}) == ["data"]


# ------------------------------------------------------------------------------ few-shot


def test_fewshot_run_and_gallery_identify_after_both_moved(tmp_path, monkeypatch):
    proj, cache = tmp_path / "proj", tmp_path / "cache"
    make_shapes(proj / "data")
    gallery_src = proj / "gallery_src"
    for c in ("char0", "char1", "char2"):
        (gallery_src / c).mkdir(parents=True)
        for f in sorted((proj / "data" / c).iterdir())[:4]:
            shutil.copy(f, gallery_src / c / f.name)
    monkeypatch.chdir(proj)
    cfg = FewShotTrainConfig(
        data="data", out="runs/fs", backbone=TINY_CNN, weights="none", img_size=32, classes="2/2/2", epochs=1,
        episodes_per_epoch=2, n_way=2, k_shot=2, n_query=2, val_episodes=5, cache_dir=str(cache),
    )
    summary = train_fewshot(cfg, progress=False)
    assert json.loads(Path("runs/fs/config.json").read_text())["data"] == str(proj / "data")
    meta = enroll_gallery("gallery_src", "galleries/g", backbone_spec("runs/fs", None, None, None), cache_dir=str(cache), progress=False)
    assert meta["weights_file"] == "backbone.safetensors" and meta["run"] == str(proj / "runs" / "fs")
    queries = [str(proj / "data" / "char1"), str(proj / "data" / "char4")]
    before, _ = identify_paths("galleries/g", queries, top_k=2, progress=False)
    acc_before = evaluate_fewshot(run_data("runs/fs"), backbone_spec("runs/fs", None, None, None), [(2, 1)], n_query=2, episodes=20, cache_dir=str(cache), progress=False)

    # Move the run and the gallery to different places; work from a third one.
    shutil.move(proj / "runs" / "fs", tmp_path / "moved-run")
    shutil.move(proj / "galleries" / "g", tmp_path / "moved-gallery")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    after, _ = identify_paths("../moved-gallery", queries, top_k=2, progress=False)
    assert after == before and len(after) == 16
    spec = backbone_spec("../moved-run", None, None, None)
    acc_after = evaluate_fewshot(run_data("../moved-run"), spec, [(2, 1)], n_query=2, episodes=20, cache_dir=str(cache), progress=False)
    assert acc_after["accuracy"] == acc_before["accuracy"] and acc_after["classes"] == acc_before["classes"]
    # The moved run is still the same run (reused), from here.
    assert train_fewshot(FewShotTrainConfig(**(cfg.to_dict() | {"data": "../proj/data", "out": "../moved-run"})), progress=False) == summary

    # Data moved too: the run says to pass --data; given, it evaluates and resumes the same run.
    shutil.move(proj / "data", tmp_path / "new-data")
    with pytest.raises(AnivisionError) as exc:
        run_data("../moved-run")
    msg = _one_line_error(exc)
    assert str(proj / "data") in msg and "--data" in msg
    assert run_data("../moved-run", "../new-data") == "../new-data"
    assert train_fewshot(FewShotTrainConfig(**(cfg.to_dict() | {"data": "../new-data", "out": "../moved-run"})), progress=False) == summary

    # A gallery made before galleries kept their weights points at the run's file: a clear error once it moved.
    old = json.loads((tmp_path / "moved-gallery" / "gallery.json").read_text())
    old.pop("weights_file")
    (tmp_path / "moved-gallery" / "gallery.json").write_text(json.dumps(old))
    with pytest.raises(AnivisionError, match="not there any more"):
        identify_paths("../moved-gallery", queries, progress=False)


# ------------------------------------------------------------------------------ retrieval


def test_retrieval_run_evaluates_and_searches_after_a_move(tmp_path, monkeypatch):
    proj, cache = tmp_path / "proj", tmp_path / "cache"
    generate("style", proj / "data", n_per_class=3, size=32, seed=0, n_works=4, roles_per_work=3, progress=False)
    monkeypatch.chdir(proj)
    cfg = RetrievalConfig(backbone=TINY_CNN, weights="none", img_size=32, epochs=1, p=3, k=2, batches_per_epoch=2, folds=2, amp=False)
    summary = train_run(load_reid("data"), cfg, "runs/ret", data_source="data", only_fold=0, cache_dir=cache, progress=False)
    assert json.loads(Path("runs/ret/data.json").read_text())["source"] == str(proj / "data")

    shutil.move(proj / "runs" / "ret", tmp_path / "moved")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    source = run_data_source("../moved")
    assert source == str(proj / "data")
    ev = evaluate_retrieval_run("../moved", load_reid(source), "ev", data_source=source, cache_dir=cache, progress=False)
    assert ev["mean"] == pytest.approx(summary["mean"]) and ev["n_folds"] == 1

    # search with the moved run's fold model
    fold = pick_search_fold("../moved")
    model, dcfg = load_fold_model(Path("../moved") / f"fold{fold}")
    index = build_gallery_index(model, dcfg, load_reid(source, strict=False), Path("../moved") / "search_index", progress=False)
    query = sorted((proj / "data" / "work_01" / "role_00").iterdir())[0]
    emb = embed_paths(EmbeddingModel(model), [str(query)], dcfg, cache_dir=None, progress=False)
    hits = search(index, emb.features, top_k=3, metric=cfg.metric)
    assert len(hits) == 1 and len(hits[0]) == 3 and hits[0][0]["path"] == str(query)

    # Data moved: one line saying to pass --data; given, the same folds and numbers.
    shutil.move(proj / "data", tmp_path / "new-data")
    with pytest.raises(AnivisionError) as exc:
        run_data_source("../moved")
    msg = _one_line_error(exc)
    assert str(proj / "data") in msg and "--data" in msg
    source = run_data_source("../moved", "../new-data")
    ev = evaluate_retrieval_run("../moved", load_reid(source), "ev2", data_source=source, cache_dir=cache, progress=False)
    assert ev["mean"] == pytest.approx(summary["mean"])
