
import numpy as np
import pytest
from PIL import Image

from anivision.data.images import load_image, to_rgb
from anivision.errors import AnivisionError


def test_rgba_alpha_composited_on_white():
    img = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    img.putpixel((0, 0), (255, 0, 0, 255))
    out = np.asarray(to_rgb(img))
    assert out[1, 1].tolist() == [255, 255, 255]
    assert out[0, 0].tolist() == [255, 0, 0]


@pytest.mark.parametrize("mode", ["L", "LA", "P", "CMYK", "I;16", "I", "F", "1", "RGBA"])
def test_every_mode_becomes_rgb(mode):
    img = Image.new("RGB", (8, 8), (10, 120, 250)).convert(mode) if mode not in ("I;16", "I", "F") else None
    if mode == "I;16":
        img = Image.new("I;16", (8, 8), 65535)
    elif mode in ("I", "F"):
        img = Image.new(mode, (8, 8), 7)
    out = to_rgb(img)
    assert out.mode == "RGB" and out.size == (8, 8)
    if mode == "I;16":
        assert np.asarray(out)[0, 0].tolist() == [255, 255, 255]  # full scale maps to white, not clipped


def test_palette_with_transparency(tmp_path):
    img = Image.new("P", (4, 4), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.info["transparency"] = 0
    img.putpixel((0, 0), 1)
    p = tmp_path / "p.png"
    img.save(p, transparency=0)
    out = np.asarray(load_image(p))
    assert out[0, 0].tolist() == [255, 0, 0]
    assert out[2, 2].tolist() == [255, 255, 255]


def test_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (6, 6), c) for c in ((255, 0, 0), (0, 0, 255))]
    p = tmp_path / "a.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:])
    px = np.asarray(load_image(p))[0, 0]
    assert px[0] > 200 and px[2] < 50


def test_bad_files_raise_one_line_errors(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "text.jpg"
    text.write_bytes(b"hello, not an image")
    good = tmp_path / "good.jpg"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(good)
    trunc = tmp_path / "trunc.jpg"
    trunc.write_bytes(good.read_bytes()[:200])
    for p, words in ((empty, "empty"), (text, "not an image"), (trunc, "trunc"), (tmp_path / "missing.png", "no such file")):
        with pytest.raises(AnivisionError) as e:
            load_image(p)
        msg = str(e.value)
        assert str(p) in msg and words in msg.lower() and "\n" not in msg
