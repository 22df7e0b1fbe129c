"""Regression tests for a fault campaign: each failed before its fix (tiny data, CPU, seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from anivision.cli import build_parser, main
from anivision.commands.fewshot import _next_hint
from anivision.data import synth
from anivision.data.reid import ReidImages
from anivision.data.transforms import DataConfig
from anivision.embeddings import embed_paths
from anivision.errors import AnivisionError
from anivision.models.reid_head import ReidModel
from anivision.tasks.retrieval.search import build_gallery_index
from conftest import TINY_CNN, make_class_folders, run_cli

DCFG = DataConfig(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def _one_line_error(r) -> str:
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()  # warnings (skipped images) may come before it
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], r.stderr
    assert "Traceback" not in r.stderr
    return errors[0]


def _corrupt_characters(root: Path) -> Path:
    for name in ("alice", "bob"):
        (root / name).mkdir(parents=True)
        for j in range(2):
            (root / name / f"{j}.jpg").write_bytes(b"\xff\xd8\xff not an image")
    return root


# 1. evaluate --out RUN must not overwrite the run's own metrics.json and report.md.
def test_evaluate_refuses_out_that_is_the_run_folder(tmp_path: Path) -> None:
    data, run, cache = make_class_folders(tmp_path / "data", n_per_class=8, size=32), tmp_path / "run", tmp_path / "cache"
    assert main(["-q", "train", "--data", str(data), "--backbone", TINY_CNN, "--weights", "none", "--img-size", "32",
                 "--batch-size", "8", "--cache-dir", str(cache), "--out", str(run), "--epochs", "1", "--strategy", "full"]) == 0
    before = {n: (run / n).read_bytes() for n in ("metrics.json", "report.md")}
    r = run_cli(["-q", "evaluate", str(run), "--out", str(tmp_path / "." / "run")])
    assert str(tmp_path / "." / "run") in _one_line_error(r)
    assert {n: (run / n).read_bytes() for n in before} == before


# 2. demo validates --epochs and --n-per-class before generating or training anything.
@pytest.mark.parametrize("flags,word", [(["--epochs", "0"], "--epochs"), (["--n-per-class", "2"], "--n-per-class"),
                                        (["--n-per-class", "0"], "--n-per-class")])
def test_demo_rejects_bad_epochs_and_n_per_class(tmp_path: Path, flags: list[str], word: str) -> None:
    r = run_cli(["-q", "demo", "--out", str(tmp_path / "demo"), *flags])
    assert word in _one_line_error(r)
    assert not (tmp_path / "demo").exists()


# 3. The 'next:' hint of fewshot train is a command fewshot evaluate accepts.
@pytest.mark.parametrize("n_way", [1, 5])
def test_fewshot_next_hint_is_valid(n_way: int) -> None:
    def parsed(hint: str):
        argv = hint.split(" (")[0].removeprefix("next: anivision ").split()
        return build_parser().parse_args(argv)

    a = parsed(_next_hint("RUN", n_way, 1, {"train": ["a"], "val": [], "test": ["x", "y", "z"]}))
    assert 2 <= a.n_way <= 3 and a.class_set is None
    a = parsed(_next_hint("RUN", n_way, 1, {"train": ["a"], "val": ["v"], "test": ["x"]}))
    assert a.class_set == "unseen" and a.n_way == 2
    hint = _next_hint("RUN", n_way, 1, {"train": ["a"], "val": [], "test": ["x"]})
    assert "--data" in hint and parsed(hint).n_way >= 2


# 4. A set with no readable image: embed_paths returns all-invalid rows; callers say so in one line.
def test_embed_paths_with_nothing_readable(tmp_path: Path) -> None:
    paths = [str(p) for p in sorted(_corrupt_characters(tmp_path / "c").rglob("*.jpg"))]
    model = timm.create_model(TINY_CNN, num_classes=0)
    emb = embed_paths(model, paths, DCFG, cache_dir=tmp_path / "cache", progress=False)
    assert emb.features.shape[0] == len(paths) and not emb.valid.any() and len(emb.skipped) == len(paths)


def test_enroll_with_only_corrupt_images_is_one_line_error(tmp_path: Path) -> None:
    chars = _corrupt_characters(tmp_path / "chars")
    r = run_cli(["-q", "enroll", TINY_CNN, str(chars), "--weights", "none", "--img-size", "32",
                 "--out", str(tmp_path / "gallery"), "--cache-dir", str(tmp_path / "cache")])
    assert "no readable image" in _one_line_error(r)


def test_search_gallery_with_only_corrupt_images_is_a_clear_error(tmp_path: Path) -> None:
    paths = [str(p) for p in sorted(_corrupt_characters(tmp_path / "g").rglob("*.jpg"))]
    gallery = ReidImages(paths, ["w"] * len(paths), [Path(p).parent.name for p in paths])
    torch.manual_seed(0)
    model = ReidModel(timm.create_model(TINY_CNN, num_classes=0), num_classes=2, pool="auto", img_size=32)
    with pytest.raises(AnivisionError, match="no readable gallery image"):
        build_gallery_index(model, DCFG, gallery, tmp_path / "index", progress=False)


# 5. synth reruns delete only their own recorded files and never write or delete through a symlink.
def test_synth_rerun_keeps_user_files(tmp_path: Path) -> None:
    out = tmp_path / "emo"
    synth.generate("emotion", out, n_per_class=2, size=32, progress=False)
    (out / "Happy" / "IMG_00001.jpg").write_bytes(b"mine")
    (out / "Happy" / "Happy_00007.jpg").write_bytes(b"also mine")  # ours by pattern, not in the record
    synth.generate("emotion", out, n_per_class=1, size=32, progress=False)
    assert (out / "Happy" / "IMG_00001.jpg").read_bytes() == b"mine"
    assert (out / "Happy" / "Happy_00007.jpg").read_bytes() == b"also mine"
    assert not (out / "Happy" / "Happy_00001.jpg").exists()
    assert json.loads((out / "synth.json").read_text())["counts"]["Happy"] == 1


def test_synth_refuses_symlinked_class_folder_outside_out(tmp_path: Path) -> None:
    out, outside = tmp_path / "emo", tmp_path / "elsewhere"
    synth.generate("emotion", out, n_per_class=2, size=32, progress=False)
    outside.mkdir()
    for name in ("Sad_00000.jpg", "Sad_00001.jpg", "keep.txt"):
        (outside / name).write_bytes(b"outside " + name.encode())
    for f in (out / "Sad").iterdir():
        f.unlink()
    (out / "Sad").rmdir()
    (out / "Sad").symlink_to(outside, target_is_directory=True)
    before = {p.name: p.read_bytes() for p in outside.iterdir()}
    with pytest.raises(AnivisionError, match="symlink"):
        synth.generate("emotion", out, n_per_class=2, size=32, progress=False)
    assert {p.name: p.read_bytes() for p in outside.iterdir()} == before
    r = run_cli(["-q", "synth", "--task", "emotion", "--out", str(out), "--n-per-class", "2", "--size", "32"])
    assert "symlink" in _one_line_error(r)
    assert {p.name: p.read_bytes() for p in outside.iterdir()} == before
    assert np.all([(out / "Happy" / f"Happy_0000{i}.jpg").is_file() for i in (0, 1)])
