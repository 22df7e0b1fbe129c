"""The near-duplicate rule on the tool's own synthetic data: different synthetic faces share
their framing and plain backgrounds, which the low-frequency hashes alone took for copies
(label conflicts on ``anivision synth`` output); copies of them must still be found."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anivision.data.checks import check_dataset
from anivision.data.hashing import CROP_VARIANTS, local_difference, near_duplicate_pairs, perceptual_hashes
from anivision.data.synth import _params, generate, render_face
from anivision.data.synth.datasets import _encode_jpeg


def synth_face(c: int, i: int, seed: int = 0) -> Image.Image:
    """The file ``anivision synth --task emotion --seed 0`` writes for class c, image i, decoded."""
    params, rng = _params("emotion", seed, (c, i))
    data = _encode_jpeg(render_face(params, 128, rng), params.nuisance.jpeg_quality)
    return Image.open(io.BytesIO(data)).convert("RGB")


def jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def linked(images: list[Image.Image], local: bool = True) -> list[list[int]]:
    hs = [perceptual_hashes(im) for im in images]
    pairs, _ = near_duplicate_pairs(np.stack([h.phash for h in hs]), np.stack([h.dhash for h in hs]), np.stack([h.signature for h in hs]),
                                    thumbs=np.stack([h.thumb for h in hs]) if local else None,
                                    chroma=np.stack([h.chroma for h in hs]) if local else None)
    return pairs.tolist()


def test_different_synthetic_faces_that_fooled_the_hashes_are_not_linked() -> None:
    # Angry_00018, Embarrassed_00034 and Happy_00058 of 'synth --task emotion' (seed 0): three
    # different faces that the hash and correlation tests alone linked into one group (a
    # reported label conflict).
    faces = [synth_face(0, 18), synth_face(1, 34), synth_face(2, 58)]
    assert linked(faces, local=False) == [[0, 2], [1, 2]]
    assert linked(faces) == []


def test_copies_of_synthetic_faces_are_still_linked() -> None:
    face = synth_face(2, 5)
    w, h = face.size
    copies = [
        jpeg(face, 35),
        jpeg(face.resize((60, 60), Image.Resampling.BILINEAR), 80),
        jpeg(face.crop((4, 3, w - 5, h - 2)), 85),  # 2-4 % off the sides
        jpeg(Image.eval(face, lambda v: int(v * 0.9)), 90),  # darker (no clipping)
    ]
    for copy in copies:
        assert linked([face, copy]) == [[0, 1]]


def test_local_difference_is_zero_for_the_same_picture_and_large_for_another() -> None:
    a, b = perceptual_hashes(synth_face(3, 1)), perceptual_hashes(synth_face(3, 2))
    d = local_difference(np.stack([a.thumb, a.thumb, a.thumb]), np.array([0, 0, 0]), np.stack([a.thumb, b.thumb, 255 - a.thumb]))
    assert d[0] == pytest.approx(0.0, abs=1e-9) and d[1] > 0.5 and d[2] > 1.0
    assert len(CROP_VARIANTS) == 16 and local_difference(np.zeros((0, 64, 64)), np.zeros(0, int), np.zeros((0, 64, 64))).shape == (0,)


@pytest.mark.parametrize(("task", "n_per_class", "n_classes"), [("emotion", 60, None), ("character", 40, 8)],
                         ids=["emotion-6x60", "character-8x40"])
def test_no_label_conflicts_on_synth_output(tmp_path: Path, task: str, n_per_class: int, n_classes: int | None) -> None:
    # The README's example emotion set and the demo's character set (seed 0, 128 px).
    kw = {"n_classes": n_classes} if n_classes else {}
    generate(task, tmp_path / "data", n_per_class=n_per_class, size=128, seed=0, progress=False, **kw)
    r = check_dataset(tmp_path / "data", progress=False)
    assert r["n_readable"] == n_per_class * (n_classes or 6)
    assert r["label_conflicts"] == [] and r["duplicates"] == []
