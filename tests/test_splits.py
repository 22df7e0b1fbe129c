import csv
from collections import Counter

import pytest

from anivision.data.folder import read_manifest, scan_class_folders
from anivision.data.splits import parse_ratios, read_split, stratified_split, write_split
from anivision.errors import AnivisionError

from conftest import make_class_folders


def test_scan_class_folders_and_errors(tmp_path):
    root = make_class_folders(tmp_path / "d", n_classes=2, n_per_class=3)
    (root / "class0" / "notes.txt").write_text("x")
    imgs = scan_class_folders(root)
    assert imgs.classes == ["class0", "class1"] and len(imgs) == 6
    assert any(p.endswith("notes.txt") for p in imgs.ignored)
    (root / "empty").mkdir()
    with pytest.raises(AnivisionError, match="class folder has no images"):
        scan_class_folders(root)
    with pytest.raises(AnivisionError, match="no such folder"):
        scan_class_folders(tmp_path / "nope")
    (tmp_path / "flat").mkdir()
    with pytest.raises(AnivisionError, match="no class sub-folders"):
        scan_class_folders(tmp_path / "flat")


def test_presets():
    assert parse_ratios("70/15/15") == pytest.approx((0.7, 0.15, 0.15))
    assert parse_ratios("72/18/10") == pytest.approx((0.72, 0.18, 0.10))
    assert parse_ratios("70/30") == pytest.approx((0.7, 0.0, 0.3))
    with pytest.raises(AnivisionError):
        parse_ratios("banana")


def test_stratified_split_is_stratified_and_seeded():
    labels = [0] * 40 + [1] * 20 + [2] * 100
    s1 = stratified_split(labels, ["a", "b", "c"], (0.7, 0.15, 0.15), seed=1)
    s2 = stratified_split(labels, ["a", "b", "c"], (0.7, 0.15, 0.15), seed=1)
    s3 = stratified_split(labels, ["a", "b", "c"], (0.7, 0.15, 0.15), seed=2)
    assert s1 == s2 and s1 != s3
    for c, n in Counter(labels).items():
        parts = Counter(s for s, y in zip(s1, labels) if y == c)
        assert parts["train"] == round(0.7 * n) and parts["val"] + parts["test"] == n - parts["train"]
        assert abs(parts["val"] - parts["test"]) <= 1


def test_split_impossible_for_a_class():
    with pytest.raises(AnivisionError, match="class 'b' has 2 image"):
        stratified_split([0, 0, 0, 1, 1], ["a", "b"], (0.7, 0.15, 0.15), seed=0)


def test_split_csv_roundtrip_and_hash_check(tmp_path):
    root = make_class_folders(tmp_path / "d", n_classes=2, n_per_class=10)
    imgs = scan_class_folders(root)
    splits = stratified_split(imgs.labels, imgs.classes, parse_ratios("70/30"), seed=0)
    out = write_split(imgs, splits, tmp_path / "split.csv")
    rows = list(csv.DictReader(open(out)))
    assert set(rows[0]) == {"path", "label", "split", "sha1"} and len(rows[0]["sha1"]) == 40
    assert {r["split"] for r in rows} == {"train", "test"}
    back = read_split(out)
    assert back.splits == splits and back.classes == imgs.classes
    # A changed image is caught: the split no longer describes the same data.
    victim = root / "class1" / "img000.png"
    victim.write_bytes(victim.read_bytes() + b"\0")
    with pytest.raises(AnivisionError, match="changed since the split"):
        read_split(out)


def test_manifest(tmp_path):
    make_class_folders(tmp_path / "d", n_classes=2, n_per_class=2)
    m = tmp_path / "m.csv"
    m.write_text("path,label,split\nd/class0/img000.png,cat,train\nd/class1/img000.png,dog,test\n")
    imgs = read_manifest(m)
    assert imgs.classes == ["cat", "dog"] and imgs.splits == ["train", "test"]
    assert imgs.paths[0] == str(tmp_path / "d/class0/img000.png")
    bad = tmp_path / "bad.csv"
    bad.write_text("file,cls\n")
    with pytest.raises(AnivisionError, match="needs columns"):
        read_manifest(bad)
