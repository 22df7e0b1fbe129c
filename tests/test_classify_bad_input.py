"""Bad input to ``anivision train``: one line naming the flag, file or row, exit 2, nothing trained."""

import csv
from pathlib import Path

import pytest

from anivision.cli import main
from anivision.data.folder import load_labeled, read_manifest
from anivision.data.splits import parse_ratios, read_split, stratified_split, write_split
from anivision.errors import AnivisionError
from anivision.tasks.classify import TrainConfig, train_classifier
from anivision.tasks.classify.data import check_split_in_data

from conftest import TINY_CNN, make_class_folders
from test_classify import _train_args


def _refused(capsys, args, out: Path, *words: str) -> str:
    """``main(args)`` exits 2 with one error line holding ``words``, and trains nothing into ``out``."""
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for w in words:
        assert w in err, (w, err)
    assert not (out / "config.json").exists() and not (out / "metrics.jsonl").exists()
    return err


@pytest.mark.parametrize("flag,value,words", [
    ("--batch-size", "0", ("--batch-size", "at least 1")),
    ("--epochs", "0", ("--epochs", "at least 1")),
    ("--img-size", "0", ("--img-size", "2048")),
    ("--img-size", "100000", ("--img-size", "2048")),
    ("--dropout", "2", ("--dropout must be in [0, 1), got 2.0",)),
    ("--label-smoothing", "5", ("--label-smoothing", "[0, 1)")),
    ("--lr-head", "nan", ("--lr-head", "nan")),
    ("--lr-backbone", "-0.1", ("--lr-backbone", "-0.1")),
    ("--patience", "-1", ("--patience", "-1")),
    ("--warmup-epochs", "-2", ("--warmup-epochs", "-2")),
    ("--workers", "-1", ("--workers", "-1")),
    ("--grad-clip", "-1", ("--grad-clip", "-1")),
    ("--weight-decay", "-0.5", ("--weight-decay", "-0.5")),
    ("--partial-groups", "0", ("--partial-groups", "at least 1")),
])
def test_bad_flag_values_are_refused(tiny_data, cache_dir, tmp_path, capsys, flag, value, words):
    out = tmp_path / "run"
    _refused(capsys, _train_args(tiny_data, out, cache_dir, flag, value), out, *words)


def test_yaml_value_of_the_wrong_type_names_file_and_key(tiny_data, cache_dir, tmp_path, capsys):
    cfg, out = tmp_path / "c.yaml", tmp_path / "run"
    cfg.write_text("epochs: ten\n")
    _refused(capsys, _train_args(tiny_data, out, cache_dir, "--config", str(cfg)), out, str(cfg), "epochs", "ten")
    cfg.write_text("dropout: 2\n")
    _refused(capsys, _train_args(tiny_data, out, cache_dir, "--config", str(cfg)), out, str(cfg), "dropout")


def test_config_built_in_code_is_checked(tiny_data, cache_dir, tmp_path):
    out = tmp_path / "run"
    cfg = TrainConfig(data=str(tiny_data), out=str(out), backbone=TINY_CNN, weights="none", img_size=32, dropout=1.5, cache_dir=str(cache_dir))
    with pytest.raises(AnivisionError, match=r"--dropout must be in \[0, 1\), got 1.5"):
        train_classifier(cfg, progress=False)
    assert not out.exists()


def test_split_of_another_dataset_is_refused(tiny_data, cache_dir, tmp_path, capsys):
    other = make_class_folders(tmp_path / "other", seed=3)
    images = load_labeled(other)
    split = write_split(images, stratified_split(images.labels, images.classes, parse_ratios("70/15/15"), 0), tmp_path / "other.csv")
    out = tmp_path / "run"
    _refused(capsys, _train_args(tiny_data, out, cache_dir, "--split", str(split), "--epochs", "1"), out, "--split", str(other))
    # The split of the same dataset passes the check (folder and manifest alike).
    mine = load_labeled(tiny_data)
    check_split_in_data(mine, "s.csv", str(tiny_data))
    manifest = tmp_path / "m.csv"
    _write_manifest(manifest, [[p, mine.classes[y]] for p, y in zip(mine.paths, mine.labels)])
    check_split_in_data(mine, "s.csv", str(manifest))
    with pytest.raises(AnivisionError, match="a row of the manifest"):
        check_split_in_data(images, "s.csv", str(manifest))


def _write_manifest(path: Path, rows: list[list[str]], header=("path", "label")) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_duplicate_manifest_rows_are_refused(tiny_data, cache_dir, tmp_path, capsys):
    images = load_labeled(tiny_data)
    rows = [[p, images.classes[y]] for p, y in zip(images.paths, images.labels)]
    manifest = _write_manifest(tmp_path / "m.csv", rows[:5] + [rows[1]] + rows[5:])
    out = tmp_path / "run"
    _refused(capsys, _train_args(manifest, out, cache_dir, "--epochs", "1"), out, str(manifest), "line 7", "line 3")


def test_blank_split_cell_is_an_error_naming_the_row(tiny_data, tmp_path):
    images = load_labeled(tiny_data)
    splits = stratified_split(images.labels, images.classes, parse_ratios("70/15/15"), 0)
    rows = [[p, images.classes[y], s] for p, y, s in zip(images.paths, images.labels, splits)]
    rows[3][2] = ""
    manifest = _write_manifest(tmp_path / "m.csv", rows, header=("path", "label", "split"))
    with pytest.raises(AnivisionError, match="line 5 has no split"):
        read_manifest(manifest)
    # An entirely empty split column means no split (a fresh one is made).
    for r in rows:
        r[2] = ""
    assert read_manifest(_write_manifest(tmp_path / "m2.csv", rows, header=("path", "label", "split"))).splits is None
    # The same in a split file, and a repeated image there.
    split = write_split(images, splits, tmp_path / "s.csv")
    lines = split.read_text().splitlines()
    blank = lines[:4] + [",".join(c if i != 2 else "" for i, c in enumerate(lines[4].split(",")))] + lines[5:]
    (tmp_path / "blank.csv").write_text("\n".join(blank) + "\n")
    with pytest.raises(AnivisionError, match="line 5 has no split"):
        read_split(tmp_path / "blank.csv")
    (tmp_path / "dup.csv").write_text("\n".join(lines + [lines[2]]) + "\n")
    with pytest.raises(AnivisionError, match=f"line {len(lines) + 1} repeats the image of line 3"):
        read_split(tmp_path / "dup.csv")


def test_out_inside_the_data_folder_is_refused(tiny_data, cache_dir, capsys):
    out = tiny_data / "runs" / "r1"
    _refused(capsys, _train_args(tiny_data, out, cache_dir, "--epochs", "1"), out, "--out", "inside the data folder")
    assert not (tiny_data / "runs").exists()
