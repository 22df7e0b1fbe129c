"""Papercuts: progress bars never in logs or pipes, unreadable files listed once."""

from __future__ import annotations

from pathlib import Path

from conftest import TINY_CNN, make_class_folders, run_cli

BAR = "%|"  # what every tqdm bar line contains


def test_no_progress_bars_in_redirected_output(tmp_path: Path) -> None:
    # Not a terminal (captured pipes): commands print their results and log lines, never bars,
    # whether or not -q is given.
    synth = run_cli(["synth", "--task", "emotion", "--out", str(tmp_path / "s"), "--n-per-class", "3", "--size", "48"])
    assert synth.returncode == 0 and "wrote 18 images" in synth.stdout
    data = make_class_folders(tmp_path / "data", n_classes=2, n_per_class=8)
    train = run_cli(["train", "--data", str(data), "--backbone", TINY_CNN, "--weights", "none", "--img-size", "32",
                     "--batch-size", "8", "--epochs", "1", "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "run")])
    assert train.returncode == 0 and "epoch 1/1" in train.stderr
    check = run_cli(["data", "check", str(data), "--out", str(tmp_path / "chk")])
    assert check.returncode == 0
    for r in (synth, train, check):
        assert BAR not in r.stderr and BAR not in r.stdout, r.stderr[-500:]


def test_predict_lists_each_unreadable_file_once(tmp_path: Path) -> None:
    data = make_class_folders(tmp_path / "data", n_classes=2, n_per_class=8)
    assert run_cli(["-q", "train", "--data", str(data), "--backbone", TINY_CNN, "--weights", "none", "--img-size", "32",
                    "--batch-size", "8", "--epochs", "1", "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "run")]).returncode == 0
    q = tmp_path / "q"
    q.mkdir()
    (q / "broken.png").write_bytes(b"not an image")
    (q / "empty.jpg").write_bytes(b"")
    (data / "class0" / "img000.png").rename(q / "good.png")
    r = run_cli(["predict", str(tmp_path / "run"), str(q), "--out", str(tmp_path / "p.csv")])
    assert r.returncode == 0
    for name in ("broken.png", "empty.jpg"):
        assert r.stderr.count(name) == 1, r.stderr
    assert "1 prediction(s) (2 skipped)" in r.stdout
