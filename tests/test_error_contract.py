"""The error contract, as a table: bad input to every sub-command exits 2 with one stderr line
naming the offending file or flag, no traceback, and no half-written file in the output folder.

Each case builds its bad input in its own folder from a few runs made once per module (a
classification run, a few-shot run and its gallery, a retrieval run), then calls
``anivision.cli.main`` in-process.
"""

from __future__ import annotations

import datetime
import errno
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch

from anivision import files
from anivision.cli import main
from anivision.data.synth import generate

from conftest import TINY_CNN, make_class_folders

TINY = ["--backbone", TINY_CNN, "--weights", "none", "--img-size", "32"]


@dataclass
class World:
    root: Path
    data: Path
    cache: Path
    run: Path
    shapes: Path
    fs_run: Path
    gallery: Path
    style: Path
    rt_run: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("contract")
    data, cache = make_class_folders(root / "data", n_per_class=8, size=32), root / "cache"
    run = root / "run"
    assert main(["-q", "train", "--data", str(data), *TINY, "--batch-size", "8", "--epochs", "1", "--strategy", "full",
                 "--cache-dir", str(cache), "--out", str(run)]) == 0
    shapes = make_class_folders(root / "shapes", n_classes=6, n_per_class=6, size=32, seed=1)
    fs_run = root / "fs_run"
    assert main(["-q", "fewshot", "train", "--data", str(shapes), *TINY, "--epochs", "1", "--episodes-per-epoch", "1",
                 "--n-way", "2", "--k-shot", "2", "--n-query", "2", "--val-episodes", "4", "--classes", "2/2/2",
                 "--cache-dir", str(cache), "--out", str(fs_run)]) == 0
    gallery = root / "gallery"
    assert main(["-q", "enroll", str(fs_run), str(shapes), "--out", str(gallery), "--cache-dir", str(cache)]) == 0
    style = root / "style"
    generate("style", style, n_per_class=3, size=32, seed=0, n_works=4, roles_per_work=3, progress=False)
    rt_run = root / "rt_run"
    assert main(["-q", "retrieval", "train", "--data", str(style), *TINY, "--epochs", "1", "--folds", "2", "--fold", "0",
                 "--p", "3", "--k", "2", "--cache-dir", str(cache), "--out", str(rt_run)]) == 0
    return World(root, data, cache, run, shapes, fs_run, gallery, style, rt_run)


# ------------------------------------------------------------------------------ case builders
# Each builder gets the world and an empty folder of its own, and returns (argv, the words the
# error line must hold, the output folder that must hold no half-written file).

Case = Callable[[World, Path], tuple[list[str], list[str], Path]]


def _train(w: World, tmp: Path, *extra: str, data: Path | None = None) -> list[str]:
    return ["-q", "train", "--data", str(data or w.data), *TINY, "--batch-size", "8", "--epochs", "1",
            "--cache-dir", str(w.cache), "--out", str(tmp / "out"), *extra]


def _manifest(w: World, tmp: Path, split: str = "", text: str | None = None, missing: bool = False) -> Path:
    rows = ["path,label" + (",split" if split else "")]
    for i, p in enumerate(sorted(w.data.rglob("*.png"))):
        name = str(tmp / "gone.png") if missing and i == 3 else str(p)
        rows.append(f"{name},{p.parent.name}" + (f",{split if i == 0 else ('train', 'val', 'test')[i % 3]}" if split else ""))
    m = tmp / "m.csv"
    m.write_bytes(("\n".join(rows) + "\n").encode("utf-8") if text is None else text.encode("latin-1"))
    return m


def _copy(src: Path, tmp: Path) -> Path:
    dst = tmp / src.name
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".lock"))
    return dst


def _truncate(path: Path, keep: int = 100) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def _with_bad(src_attr: str, rel: str, how: str) -> Callable[[World, Path], Path]:
    """A copy of one of the world's folders whose ``rel`` file is truncated (``cut``) or garbled JSON (``json``)."""

    def make(w: World, tmp: Path) -> Path:
        folder = _copy(getattr(w, src_attr), tmp)
        target = folder / rel
        if how == "cut":
            _truncate(target)
        else:
            target.write_text('{"classes": [1, 2' if how == "json" else '{"unexpected": true}')
        return folder

    return make


def _pickle_weights(tmp: Path) -> Path:
    """A torch file that pickles a Python object besides its tensors (anivision never unpickles one)."""
    p = tmp / "weights.pt"
    torch.save({"w": torch.zeros(2), "made": datetime.datetime(2024, 1, 1)}, p)
    return p


def _image(tmp: Path) -> Path:
    p = tmp / "q.png"
    shutil.copy(sorted((Path(__file__).parent).glob("*.py"))[0], tmp / "unused.txt")  # a stray non-image nearby
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 30, 30)).save(p)
    return p


CASES: dict[str, Case] = {
    # ---- train: manifests
    "train manifest split TEST": lambda w, t: (_train(w, t, data=_manifest(w, t, split="TEST")), ["m.csv", "TEST"], t / "out"),
    "train manifest missing file": lambda w, t: (_train(w, t, data=_manifest(w, t, missing=True)), ["m.csv", "gone.png"], t / "out"),
    "train manifest latin-1": lambda w, t: (_train(w, t, data=_manifest(w, t, text="path,label\ncaf\xe9.png,a\n")), ["m.csv", "UTF-8"], t / "out"),
    # ---- train: flags
    "train --batch-size 0": lambda w, t: (_train(w, t, "--batch-size", "0"), ["--batch-size"], t / "out"),
    "train --dropout 2": lambda w, t: (_train(w, t, "--dropout", "2"), ["--dropout"], t / "out"),
    "train --label-smoothing 5": lambda w, t: (_train(w, t, "--label-smoothing", "5"), ["--label-smoothing"], t / "out"),
    "train --lr-head nan": lambda w, t: (_train(w, t, "--lr-head", "nan"), ["--lr-head"], t / "out"),
    "train --lr-backbone -1": lambda w, t: (_train(w, t, "--lr-backbone", "-1"), ["--lr-backbone"], t / "out"),
    "train --patience -1": lambda w, t: (_train(w, t, "--patience", "-1"), ["--patience"], t / "out"),
    "train --warmup-epochs -1": lambda w, t: (_train(w, t, "--warmup-epochs", "-1"), ["--warmup-epochs"], t / "out"),
    "train --workers -1": lambda w, t: (_train(w, t, "--workers", "-1"), ["--workers"], t / "out"),
    "train --device bogus": lambda w, t: (_train(w, t, "--device", "bogus"), ["--device", "bogus"], t / "out"),
    "train --weights pickle": lambda w, t: (_train(w, t, "--weights", str(_pickle_weights(t))), ["weights.pt"], t / "out"),
    "train yaml wrong type": lambda w, t: ((t / "c.yaml").write_text("label_smoothing: [0.1]\n") and _train(w, t, "--config", str(t / "c.yaml")), ["c.yaml", "label_smoothing"], t / "out"),
    "train yaml python tag": lambda w, t: ((t / "c.yaml").write_text("dropout: !!python/object/apply:os.system ['touch pwned']\n") and _train(w, t, "--config", str(t / "c.yaml")), ["c.yaml"], t / "out"),
    "train --out is a file": lambda w, t: ((t / "out").write_text("x") and _train(w, t), [str(t / "out"), "already exists"], t),
    # ---- evaluate / predict: damaged run folders
    "evaluate truncated model": lambda w, t: (["-q", "evaluate", str(_with_bad("run", "model.safetensors", "cut")(w, t)), "--out", str(t / "ev")], ["model.safetensors"], t / "ev"),
    "evaluate bad config.json": lambda w, t: (["-q", "evaluate", str(_with_bad("run", "config.json", "json")(w, t)), "--out", str(t / "ev")], ["config.json"], t / "ev"),
    "evaluate bad classes.json": lambda w, t: (["-q", "evaluate", str(_with_bad("run", "classes.json", "json")(w, t)), "--out", str(t / "ev")], ["classes.json"], t / "ev"),
    "evaluate --out is a file": lambda w, t: ((t / "ev").write_text("x") and ["-q", "evaluate", str(w.run), "--out", str(t / "ev")], [str(t / "ev"), "already exists"], t),
    "predict truncated model": lambda w, t: (["-q", "predict", str(_with_bad("run", "model.safetensors", "cut")(w, t)), str(_image(t)), "--out", str(t / "p.csv")], ["model.safetensors"], t),
    "predict --out is a folder": lambda w, t: ((t / "p.csv").mkdir() or ["-q", "predict", str(w.run), str(_image(t)), "--out", str(t / "p.csv")], [str(t / "p.csv"), "is a folder"], t),
    "predict --batch-size 0": lambda w, t: (["-q", "predict", str(w.run), str(_image(t)), "--batch-size", "0"], ["--batch-size"], t),
    "predict --top-k 0": lambda w, t: (["-q", "predict", str(w.run), str(_image(t)), "--top-k", "0"], ["--top-k"], t),
    # ---- split
    "split --out is a folder": lambda w, t: ((t / "s.csv").mkdir() or ["-q", "split", str(w.data), "--out", str(t / "s.csv")], [str(t / "s.csv"), "is a folder"], t),
    "split manifest latin-1": lambda w, t: (["-q", "split", str(_manifest(w, t, text="path,label\ncaf\xe9.png,a\n")), "--out", str(t / "s.csv")], ["m.csv"], t),
    # ---- few-shot
    "fewshot train --n-way -1": lambda w, t: (["-q", "fewshot", "train", "--data", str(w.shapes), *TINY, "--n-way", "-1", "--out", str(t / "out")], ["--n-way"], t),
    "fewshot train --k-shot 0": lambda w, t: (["-q", "fewshot", "train", "--data", str(w.shapes), *TINY, "--k-shot", "0", "--out", str(t / "out")], ["--k-shot"], t),
    "fewshot train --lr -1": lambda w, t: (["-q", "fewshot", "train", "--data", str(w.shapes), *TINY, "--n-way", "2", "--lr", "-1", "--out", str(t / "out")], ["--lr"], t),
    "fewshot evaluate --episodes -5": lambda w, t: (["-q", "fewshot", "evaluate", str(w.fs_run), "--episodes", "-5", "--out", str(t / "ev")], ["--episodes"], t),
    "fewshot evaluate --n-way -1": lambda w, t: (["-q", "fewshot", "evaluate", str(w.fs_run), "--n-way", "-1", "--out", str(t / "ev")], ["--n-way"], t),
    "fewshot evaluate truncated model": lambda w, t: (["-q", "fewshot", "evaluate", str(_with_bad("fs_run", "model.safetensors", "cut")(w, t)), "--n-way", "2", "--k-shot", "1", "--n-query", "1", "--episodes", "2", "--cache-dir", str(w.cache), "--out", str(t / "ev")], ["model.safetensors"], t / "ev"),
    "enroll truncated model": lambda w, t: (["-q", "enroll", str(_with_bad("fs_run", "model.safetensors", "cut")(w, t)), str(w.shapes), "--out", str(t / "g"), "--cache-dir", str(w.cache)], ["model.safetensors"], t / "g"),
    "enroll --k-shot 0": lambda w, t: (["-q", "enroll", str(w.fs_run), str(w.shapes), "--k-shot", "0", "--out", str(t / "g")], ["--k-shot"], t),
    "identify bad gallery.json": lambda w, t: (["-q", "identify", str(_with_bad("gallery", "gallery.json", "json")(w, t)), str(_image(t))], ["gallery.json"], t),
    "identify truncated prototypes": lambda w, t: (["-q", "identify", str(_with_bad("gallery", "prototypes.safetensors", "cut")(w, t)), str(_image(t))], ["prototypes.safetensors"], t),
    "identify --top-k 0": lambda w, t: (["-q", "identify", str(w.gallery), str(_image(t)), "--top-k", "0"], ["--top-k"], t),
    "identify --out is a folder": lambda w, t: ((t / "o.csv").mkdir() or ["-q", "identify", str(w.gallery), str(_image(t)), "--out", str(t / "o.csv")], [str(t / "o.csv"), "is a folder"], t),
    # ---- retrieval
    "retrieval train --p 0": lambda w, t: (["-q", "retrieval", "train", "--data", str(w.style), *TINY, "--folds", "2", "--p", "0", "--out", str(t / "out")], ["--p"], t),
    "retrieval train --lr nan": lambda w, t: (["-q", "retrieval", "train", "--data", str(w.style), *TINY, "--folds", "2", "--lr", "nan", "--out", str(t / "out")], ["--lr"], t),
    "retrieval search corrupt fold model": lambda w, t: (["-q", "retrieval", "search", str(_with_bad("rt_run", "fold0/model.safetensors", "cut")(w, t)), str(_image(t)), "--gallery-images", str(w.style), "--out", str(t / "s")], ["model.safetensors"], t / "s"),
    "retrieval search --top-k 0": lambda w, t: (["-q", "retrieval", "search", str(w.rt_run), str(_image(t)), "--gallery-images", str(w.style), "--top-k", "0"], ["--top-k"], t),
    # ---- faces, synth, bench, data check
    "faces crop malformed cascade": lambda w, t: ((t / "bad.xml").write_text("<opencv_storage><cascade>oops") and ["-q", "faces", "crop", str(w.data), str(t / "crops"), "--detector-file", str(t / "bad.xml")], ["bad.xml"], t),
    "synth --n-per-class -1": lambda w, t: (["-q", "synth", "--task", "emotion", "--n-per-class", "-1", "--out", str(t / "s")], ["--n-per-class"], t),
    "synth --out is a file": lambda w, t: ((t / "s").write_text("x") and ["-q", "synth", "--task", "emotion", "--n-per-class", "1", "--size", "32", "--out", str(t / "s")], [str(t / "s")], t),
    "bench --batch-size 0": lambda w, t: (["-q", "bench", "--data", str(w.data), "--backbones", TINY_CNN, "--weights", "none", "--batch-size", "0", "--out", str(t / "b")], ["--batch-size"], t),
    "data check --workers -1": lambda w, t: (["-q", "data", "check", str(w.data), "--workers", "-1", "--out", str(t / "c")], ["--workers"], t),
    "data check latin-1 manifest": lambda w, t: (["-q", "data", "check", str(_manifest(w, t, text="path,label\ncaf\xe9.png,a\n")), "--out", str(t / "c")], ["m.csv"], t),
}
if not torch.cuda.is_available():
    CASES["train --device cuda without a GPU"] = lambda w, t: (_train(w, t, "--device", "cuda"), ["--device", "cuda"], t / "out")


def _half_written(folder: Path) -> list[str]:
    """Temporary files a write left behind under ``folder`` (``x.PID.tmp``, ``x.tmp``, ``.new-*``)."""
    if not folder.exists():
        return []
    return [str(p) for p in folder.rglob("*") if p.name.endswith(".tmp") or ".tmp." in p.name or p.name.startswith(".new-")]


def _assert_one_line(capsys: pytest.CaptureFixture[str], code: int, words: list[str]) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_line_and_exit_2(world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    argv, words, out = CASES[name](world, tmp_path)
    capsys.readouterr()
    _assert_one_line(capsys, main(argv), words)
    assert _half_written(out) == [] and _half_written(tmp_path) == []


def test_the_table_covers_every_sub_command() -> None:
    assert len(CASES) >= 36
    commands = {name.split(" ")[0] for name in CASES}
    assert commands >= {"train", "evaluate", "predict", "split", "fewshot", "enroll", "identify", "retrieval", "faces", "synth", "bench", "data"}


# ------------------------------------------------------------------------------ disk faults


@pytest.mark.parametrize("err,word", [(errno.EROFS, "read-only"), (errno.ENOSPC, "no space left"), (errno.EACCES, "permission denied")])
def test_os_errors_on_write_are_one_line_naming_the_path(world: World, tmp_path: Path, capsys, monkeypatch, err: int, word: str) -> None:
    """A read-only, full or forbidden output location (injected: the tests may run as root, where
    chmod does not stop a write) gives one line naming the file, exit 2, and no temp file."""
    real_replace = os.replace

    def failing_replace(src, dst, *a, **k):
        if str(tmp_path) in str(dst):
            raise OSError(err, os.strerror(err), str(dst))
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", failing_replace)
    monkeypatch.setattr(files.os, "replace", failing_replace)
    capsys.readouterr()
    line = _assert_one_line(capsys, main(_train(world, tmp_path)), [str(tmp_path / "out")])
    assert word in line.lower()
    assert _half_written(tmp_path) == []


# ------------------------------------------------------------------------------ warnings, not errors


def test_dangling_symlinks_are_listed_with_the_skipped_files(world: World, tmp_path: Path, caplog) -> None:
    data = make_class_folders(tmp_path / "data", n_per_class=8, size=32)
    (data / "class0" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    with caplog.at_level(logging.WARNING):
        assert main(_train(world, tmp_path, data=data)) == 0
    assert "gone.png" in caplog.text
    assert "gone.png" in (tmp_path / "out" / "skipped.txt").read_text()
