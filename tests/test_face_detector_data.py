"""Reading face-box folders: bad CSVs are one-line errors, bad rows are warnings, never silent drops."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anivision.errors import AnivisionError
from anivision.tasks.faces import read_face_boxes
from anivision.tasks.faces.views import letterbox, make_view, screentone


def folder(tmp_path: Path, boxes: str, images: str | None = None, files: tuple[str, ...] = ("a.png", "b.png")) -> Path:
    root = tmp_path / "fb"
    (root / "images").mkdir(parents=True)
    for f in files:
        Image.new("RGB", (100, 80), "white").save(root / "images" / f)
    (root / "boxes.csv").write_text(boxes)
    if images is not None:
        (root / "images.csv").write_text(images)
    return root


def test_missing_columns_and_files_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(AnivisionError, match="no such folder"):
        read_face_boxes(tmp_path / "nope")
    root = folder(tmp_path, "image,x,y,width,height\na.png,1,2,3,4\n")
    with pytest.raises(AnivisionError, match=r"boxes.csv: missing column\(s\) w, h") as e:
        read_face_boxes(root)
    assert "\n" not in str(e.value)
    (root / "boxes.csv").write_text("image,x,y,w,h\na.png,1,two,3,4\n")
    with pytest.raises(AnivisionError, match="line 2: x,y,w,h must be numbers"):
        read_face_boxes(root)
    (root / "boxes.csv").unlink()
    with pytest.raises(AnivisionError, match="boxes.csv: no such file"):
        read_face_boxes(root)


def test_bad_boxes_and_missing_images_are_warned_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    boxes = "image,x,y,w,h\na.png,10,10,20,20\na.png,5,5,0,10\na.png,200,200,10,10\na.png,90,70,20,20\nmissing.png,1,1,5,5\n"
    images = "image,split\na.png,train\nb.png,train\nmissing.png,train\nc.png,val\n"
    root = folder(tmp_path, boxes, images)
    with caplog.at_level(logging.WARNING):
        data = read_face_boxes(root, "train")
    assert [im.name for im in data.images] == ["a.png", "b.png"]
    a = data.images[0]
    assert a.boxes.tolist() == [[10, 10, 30, 30], [90, 70, 100, 80]]  # the last one cut at the border
    assert data.n_negatives == 1 and data.n_faces == 2  # b.png has no face: a negative, not a problem
    assert data.problems == {"zero-size boxes": 1, "boxes outside the image": 1, "boxes cut at the image border": 1, "missing images": 1}
    text = caplog.text
    assert "line 3: box 0x10 has zero size" in text and "line 4" in text and "outside the 100x80 image" in text
    assert "missing.png: listed but missing; skipped with its 1 box(es)" in text
    with pytest.raises(AnivisionError, match="--split test: .*it has train, val"):
        read_face_boxes(root, "test")
    with pytest.raises(AnivisionError, match="no readable image in split 'val'"):
        read_face_boxes(root, "val")


def test_folder_without_images_csv_uses_every_image(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = folder(tmp_path, "image,x,y,w,h\na.png,10,10,20,20\n")
    data = read_face_boxes(root)
    assert sorted(im.name for im in data.images) == ["a.png", "b.png"] and data.n_negatives == 1
    with pytest.raises(AnivisionError, match="no split column"):
        read_face_boxes(root, "val")
    (root / "boxes.csv").write_text("image,x,y,w,h\nghost.png,1,1,5,5\n")
    with caplog.at_level(logging.WARNING):
        data = read_face_boxes(root)
    assert data.problems == {"missing images": 1} and "ghost.png: listed but missing" in caplog.text


def test_views_keep_boxes_on_the_canvas() -> None:
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8))
    boxes = np.array([[100, 50, 160, 110]], np.float32)
    for seed in range(12):
        arr, keep, ignore = make_view([(img, boxes)] * 4, np.random.default_rng(seed), 128, 128, mosaic_p=0.5)
        assert arr.shape == (128, 128, 3) and arr.dtype == np.uint8
        for b in np.r_[keep, ignore]:
            assert 0 <= b[0] < b[2] <= 128 and 0 <= b[1] < b[3] <= 128
    arr, s = letterbox(img, 96)
    assert arr.shape == (64, 96, 3) and s == pytest.approx(0.32)
    tone = screentone(np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (32, 1)), np.random.default_rng(0))
    assert set(np.unique(tone[:, 20:50])) <= {0, 255}  # mid-tones become black-and-white dots
