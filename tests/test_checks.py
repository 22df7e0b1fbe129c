"""``anivision data check``: hashes, near-duplicate search, dataset checks, report and CLI."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from anivision.commands import data as data_cmd
from anivision.data.checks import check_dataset, write_check_report
from anivision.data.hashing import (
    DHASH_THRESHOLD,
    MIN_CORRELATION,
    PHASH_THRESHOLD,
    dhash,
    file_sha1,
    hamming_distance,
    near_duplicate_pairs,
    perceptual_hashes,
    phash,
    popcount64,
)
from anivision.errors import AnivisionError


def pattern(seed: int, size: int = 96) -> Image.Image:
    """A smooth random picture: low-resolution noise upscaled, plus a few random shapes.

    Smooth (not pixel noise) so that, like real pictures, most of its energy is in the low
    frequencies the perceptual hash looks at; distinct seeds give unrelated pictures.
    """
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
    img = Image.fromarray(base).resize((size, size), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(4):
        x0, y0 = rng.integers(0, size * 3 // 4, 2)
        w, h = rng.integers(size // 8, size // 2, 2)
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([int(x0), int(y0), int(x0 + w), int(y0 + h)], fill=fill)
    return img


def jpeg_copy(img: Image.Image, quality: int = 70) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def crop_fraction(img: Image.Image, left: float, top: float, right: float, bottom: float) -> Image.Image:
    w, h = img.size
    return img.crop((round(left * w), round(top * h), w - round(right * w), h - round(bottom * h)))


def pair_found(a: Image.Image, b: Image.Image) -> bool:
    ha, hb = perceptual_hashes(a), perceptual_hashes(b)
    pairs, _ = near_duplicate_pairs(
        np.stack([ha.phash, hb.phash]), np.stack([ha.dhash, hb.dhash]), np.stack([ha.signature, hb.signature]),
        thumbs=np.stack([ha.thumb, hb.thumb]), chroma=np.stack([ha.chroma, hb.chroma]),
    )
    return len(pairs) == 1


# ------------------------------------------------------------------------------ hashing


def test_popcount_and_hamming_match_python() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2**63, size=200, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    b = rng.integers(0, 2**63, size=200, dtype=np.uint64)
    assert popcount64(a).tolist() == [bin(int(v)).count("1") for v in a]
    assert hamming_distance(a, b).tolist() == [bin(int(x) ^ int(y)).count("1") for x, y in zip(a, b)]
    assert hamming_distance(a[:, None], b[None, :3]).shape == (200, 3)


def test_popcount_lookup_table_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """NumPy < 2.0 has no bitwise_count: the 16-bit table must give the same counts."""
    rng = np.random.default_rng(1)
    x = rng.integers(0, 2**63, size=(7, 5), dtype=np.uint64) | np.uint64(1 << 63)
    expected = popcount64(x)
    monkeypatch.delattr(np, "bitwise_count", raising=False)
    assert np.array_equal(popcount64(x), expected)
    assert popcount64(np.array([0, 2**64 - 1], dtype=np.uint64)).tolist() == [0, 64]


def test_hashes_are_stable_64_bit_ints_and_mode_independent() -> None:
    img = pattern(3)
    assert 0 <= phash(img) < 2**64 and 0 <= dhash(img) < 2**64
    assert phash(img) == phash(np.asarray(img))
    assert phash(img.convert("L")) == phash(img)  # greyscale input hashes alike
    h = perceptual_hashes(img)
    assert h.phash.shape == (16,) and h.dhash.shape == (16,) and h.signature.shape == (16, 63)
    assert h.thumb.shape == (64, 64) and h.thumb.dtype == np.uint8
    assert int(h.phash[0]) == phash(img)
    assert np.allclose(np.linalg.norm(h.signature, axis=1), 1.0, atol=1e-5)


def test_flat_image_does_not_crash() -> None:
    h = perceptual_hashes(Image.new("RGB", (40, 30), (128, 128, 128)))
    assert np.all(np.isfinite(h.signature))


@pytest.mark.parametrize(
    "make_copy",
    [
        lambda im: jpeg_copy(im.resize((48, 48), Image.Resampling.BILINEAR), 60),  # smaller + JPEG
        lambda im: jpeg_copy(im.resize((200, 200), Image.Resampling.BICUBIC), 85),  # larger + JPEG
        lambda im: jpeg_copy(crop_fraction(im, 0.05, 0.05, 0.05, 0.05), 80),  # 5 % off each side
        lambda im: jpeg_copy(crop_fraction(im, 0.0, 0.0, 0.05, 0.05), 80),  # 5 % off right, bottom
        lambda im: jpeg_copy(crop_fraction(im, 0.03, 0.0, 0.0, 0.04).resize((70, 70)), 75),
    ],
    ids=["down-jpeg", "up-jpeg", "crop-each-side", "crop-corner", "crop-resize-jpeg"],
)
def test_near_copies_are_found(make_copy) -> None:
    for seed in range(5):
        img = pattern(seed)
        assert pair_found(img, make_copy(img)), f"seed {seed}"


def test_distinct_images_are_not_paired() -> None:
    imgs = [pattern(seed) for seed in range(40)]
    hs = [perceptual_hashes(im) for im in imgs]
    for thumbs in (None, np.stack([h.thumb for h in hs])):
        pairs, _ = near_duplicate_pairs(
            np.stack([h.phash for h in hs]), np.stack([h.dhash for h in hs]), np.stack([h.signature for h in hs]), thumbs=thumbs
        )
        assert pairs.tolist() == []


def test_near_duplicate_pairs_match_naive_loop() -> None:
    """The blocked XOR/popcount search equals a plain triple loop over (window, frame)."""
    rng = np.random.default_rng(0)
    n, k, s = 37, 3, 5
    ph = rng.integers(0, 2**63, size=(n, k), dtype=np.uint64)
    dh = rng.integers(0, 2**63, size=(n, k), dtype=np.uint64)
    # Plant near pairs: copies of other rows with a few bits flipped.
    for i in range(0, n - 1, 4):
        w = rng.integers(k)
        ph[i + 1, 0] = ph[i, w] ^ np.uint64(0b1011)
        dh[i + 1, 0] = dh[i, w] ^ np.uint64(0b1)
    sig = rng.normal(size=(n, k, s)).astype(np.float32)
    sig[::3] = sig[0]  # some signatures agree
    sig /= np.linalg.norm(sig, axis=2, keepdims=True)
    tp, td, mc = 6, 20, 0.5
    expected: dict[tuple[int, int], int] = {}
    for i in range(n):
        for w in range(k):
            for j in range(n):
                if i == j:
                    continue
                dp = bin(int(ph[i, w]) ^ int(ph[j, 0])).count("1")
                dd = bin(int(dh[i, w]) ^ int(dh[j, 0])).count("1")
                if dp <= tp and dd <= td and float(sig[i, w] @ sig[j, 0]) >= mc:
                    key = (min(i, j), max(i, j))
                    expected[key] = min(expected.get(key, 99), dp)
    assert expected, "the planted pairs should give some matches"
    for row_block, col_block in ((128, 4096), (8, 5), (16, 7)):  # blocks that do not divide n
        pairs, dists = near_duplicate_pairs(ph, dh, sig, tp, td, mc, row_block=row_block, col_block=col_block)
        got = {(int(a), int(b)): int(d) for (a, b), d in zip(pairs, dists)}
        assert got == expected
        assert pairs.tolist() == sorted(pairs.tolist())


def test_default_thresholds_are_sane() -> None:
    assert 0 < PHASH_THRESHOLD < 32 and 0 < DHASH_THRESHOLD < 32 and 0 < MIN_CORRELATION < 1


# ------------------------------------------------------------------------ dataset checks


def make_dataset(root: Path, n_classes: int = 3, n_per_class: int = 4) -> dict[str, Path]:
    """``root/class<c>/img<j>.png``, all distinct pictures. Returns name -> path."""
    paths = {}
    for c in range(n_classes):
        d = root / f"class{c}"
        d.mkdir(parents=True, exist_ok=True)
        for j in range(n_per_class):
            p = d / f"img{j}.png"
            pattern(100 + c * 10 + j, size=64).save(p)
            paths[f"class{c}/img{j}"] = p
    return paths


def write_split_csv(csv_path: Path, rows: list[tuple[Path, str, str]]) -> Path:
    """Split file with paths relative to its folder, as ``anivision split`` writes them."""
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "split", "sha1"])
        for p, label, part in rows:
            rel = os.path.relpath(Path(p).resolve(), csv_path.parent.resolve())  # e.g. ../data/...
            w.writerow([rel.replace(os.sep, "/"), label, part, file_sha1(p)])
    return csv_path


def names(groups: list[list[str]], root: Path) -> list[list[str]]:
    """Groups of paths as sorted ``class/file`` names, for readable assertions."""
    return sorted(sorted(Path(p).relative_to(root).as_posix() for p in g) for g in groups)


def test_check_finds_planted_problems(tmp_path: Path) -> None:
    root = tmp_path / "data"
    paths = make_dataset(root)
    # Exact duplicate within a class.
    (root / "class0" / "copy.png").write_bytes(paths["class0/img0"].read_bytes())
    # Resized + JPEG-recompressed copy within a class.
    src = Image.open(paths["class1/img1"]).convert("RGB")
    jpeg_copy(src.resize((48, 48), Image.Resampling.BILINEAR), 70).save(root / "class1" / "small.jpg", quality=70)
    # The same picture in two classes.
    (root / "class2" / "conflict.png").write_bytes(paths["class0/img2"].read_bytes())
    # Corrupt: truncated JPEG, zero-byte PNG, a text file with an image name.
    buf = io.BytesIO()
    pattern(7, size=64).save(buf, "JPEG", quality=90)
    (root / "class1" / "trunc.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (root / "class2" / "empty.png").write_bytes(b"")
    (root / "class2" / "fake.jpg").write_text("not an image")
    # Tiny, greyscale, a non-image file, an empty class folder.
    pattern(8, size=16).save(root / "class0" / "tiny.png")
    pattern(9, size=64).convert("L").save(root / "class2" / "grey.png")
    (root / "class0" / "notes.txt").write_text("hello")
    (root / "empty_class").mkdir()

    r = check_dataset(root, progress=False)

    assert names([r["corrupt"]], root) == [["class1/trunc.jpg", "class2/empty.png", "class2/fake.jpg"]]
    assert "truncated" in r["corrupt_reasons"][str(root / "class1" / "trunc.jpg")]
    assert "0 bytes" in r["corrupt_reasons"][str(root / "class2" / "empty.png")]
    assert names(r["duplicates"], root) == [["class0/copy.png", "class0/img0.png"], ["class0/img2.png", "class2/conflict.png"]]
    assert names(r["near_duplicates"], root) == [["class1/img1.png", "class1/small.jpg"]]
    assert names(r["label_conflicts"], root) == [["class0/img2.png", "class2/conflict.png"]]
    assert r["leakage"] == []
    assert names([r["tiny"]], root) == [["class0/tiny.png"]]
    assert r["n_images"] == 12 + 8 and r["n_readable"] == 17
    assert r["counts"]["per_class"] == {"class0": 6, "class1": 5, "class2": 6}
    assert r["n_grayscale"] == 1 and r["grayscale_fraction"] == pytest.approx(1 / 17)
    assert names([r["ignored"]], root) == [["class0/notes.txt"]]
    assert r["empty_classes"] == ["empty_class"]
    assert r["split"] is None
    assert r["files"][str(root / "class2" / "conflict.png")]["label"] == "class2"
    json.dumps(r)  # JSON-ready


def test_clean_dataset_has_no_findings(tmp_path: Path) -> None:
    root = tmp_path / "data"
    make_dataset(root, n_classes=4, n_per_class=5)
    r = check_dataset(root, progress=False)
    for key in ("corrupt", "duplicates", "near_duplicates", "label_conflicts", "leakage", "tiny"):
        assert r[key] == [], key
    assert r["n_images"] == r["n_readable"] == 20 and r["grayscale_fraction"] == 0.0


def make_split_dataset(tmp_path: Path) -> tuple[Path, Path]:
    """Dataset with an exact copy in train/test and a near copy in train/val, plus its split."""
    root = tmp_path / "data"
    paths = make_dataset(root, n_classes=2, n_per_class=4)
    exact = root / "class0" / "exact_copy.png"
    exact.write_bytes(paths["class0/img0"].read_bytes())
    near = root / "class1" / "near_copy.jpg"
    src = Image.open(paths["class1/img3"]).convert("RGB")
    jpeg_copy(crop_fraction(src, 0.05, 0.05, 0.0, 0.0).resize((80, 80)), 75).save(near, quality=75)
    rows = []
    for c in range(2):
        parts = ["train", "train", "val", "test"]
        rows += [(paths[f"class{c}/img{j}"], f"class{c}", parts[j]) for j in range(4)]
    rows += [(exact, "class0", "test"), (near, "class1", "val")]  # img0 and img3 of class1 are train/test
    split = write_split_csv(tmp_path / "splits" / "split.csv", rows)
    return root, split


def test_leakage_across_splits(tmp_path: Path) -> None:
    root, split = make_split_dataset(tmp_path)
    r = check_dataset(root, split_csv=split, progress=False)
    assert names(r["leakage"], root) == [
        ["class0/exact_copy.png", "class0/img0.png"],
        ["class1/img3.png", "class1/near_copy.jpg"],
    ]
    assert r["label_conflicts"] == []
    assert r["counts"]["per_split"] == {"train": 4, "val": 3, "test": 3, "unassigned": 0}
    assert r["counts"]["per_class_split"]["class0"] == {"train": 2, "val": 1, "test": 2}
    assert r["split"]["missing"] == [] and r["split"]["changed"] == [] and r["split"]["unassigned"] == []
    assert r["files"][str(root / "class0" / "exact_copy.png")]["split"] == "test"


def test_split_problems_are_listed(tmp_path: Path) -> None:
    root, split = make_split_dataset(tmp_path)
    pattern(55, size=64).save(root / "class0" / "img1.png")  # changed after the split
    (root / "class1" / "img2.png").unlink()  # missing
    pattern(56, size=64).save(root / "class1" / "new.png")  # in no split
    r = check_dataset(root, split_csv=split, progress=False)
    assert names([r["split"]["changed"]], root) == [["class0/img1.png"]]
    assert [Path(p).name for p in r["split"]["missing"]] == ["img2.png"]
    assert names([r["split"]["unassigned"]], root) == [["class1/new.png"]]
    assert r["counts"]["per_split"]["unassigned"] == 1


def test_bad_inputs_raise(tmp_path: Path) -> None:
    with pytest.raises(AnivisionError, match="no such"):
        check_dataset(tmp_path / "nope", progress=False)
    root = tmp_path / "data"
    make_dataset(root, n_classes=1, n_per_class=2)
    bad = tmp_path / "bad.csv"
    bad.write_text("file,class\na.png,x\n")
    with pytest.raises(AnivisionError, match="columns"):
        check_dataset(root, split_csv=bad, progress=False)
    with pytest.raises(AnivisionError, match="no such split file"):
        check_dataset(root, split_csv=tmp_path / "missing.csv", progress=False)


def test_report_files(tmp_path: Path) -> None:
    root, split = make_split_dataset(tmp_path)
    r = check_dataset(root, split_csv=split, progress=False)
    md, js = write_check_report(r, tmp_path / "report")
    loaded = json.loads(js.read_text())
    for key in ("corrupt", "duplicates", "near_duplicates", "leakage", "label_conflicts", "counts", "tiny",
                "grayscale_fraction", "n_images"):
        assert key in loaded
    text = md.read_text()
    assert "## Leakage (2 groups)" in text and "near_copy.jpg" in text and "| class0 |" in text


def test_manifest_input(tmp_path: Path) -> None:
    """DIR may be a CSV manifest path,label[,split] instead of a folder."""
    root = tmp_path / "data"
    paths = make_dataset(root, n_classes=2, n_per_class=2)
    manifest = tmp_path / "m.csv"
    rows = ["path,label,split"] + [f"{p.relative_to(tmp_path).as_posix()},{k.split('/')[0]},train" for k, p in paths.items()]
    rows.append(f"{paths['class0/img0'].relative_to(tmp_path).as_posix()},class1,test")  # listed twice
    manifest.write_text("\n".join(rows) + "\n")
    r = check_dataset(manifest, progress=False)
    assert len(r["label_conflicts"]) == 1 and len(r["leakage"]) == 1


# ------------------------------------------------------------------------------------ CLI


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    data_cmd.register(parser.add_subparsers())
    return parser.parse_args(argv)


def test_cli_strict_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, split = make_split_dataset(tmp_path)
    out = tmp_path / "rep"
    args = parse(["data", "check", str(root), "--split", str(split), "--out", str(out)])
    assert args.func(args) == 0  # findings alone do not fail without --strict
    assert (out / "check.md").is_file() and (out / "check.json").is_file()
    assert f"report: {out / 'check.md'}" in capsys.readouterr().out
    args = parse(["data", "check", str(root), "--split", str(split), "--out", str(out), "--strict"])
    assert args.func(args) == 1
    clean = tmp_path / "clean"
    make_dataset(clean, n_classes=2, n_per_class=3)
    args = parse(["data", "check", str(clean), "--out", str(out), "--strict"])
    assert args.func(args) == 0


def test_cli_default_out_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "mydata"
    make_dataset(root, n_classes=2, n_per_class=2)
    monkeypatch.chdir(tmp_path)
    args = parse(["data", "check", "mydata"])
    assert args.func(args) == 0
    assert (tmp_path / "check-mydata" / "check.md").is_file()
    with pytest.raises(AnivisionError, match="no such"):
        args = parse(["data", "check", str(tmp_path / "missing")])
        args.func(args)
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label,split\nmydata/class0/img0.png,class0,holdout\n")
    with pytest.raises(AnivisionError, match="unknown split name"):
        args = parse(["data", "check", "mydata", "--split", str(bad)])
        args.func(args)
