"""Heat maps drawn on images: the jet colour map blended over the picture, and the side-by-side panel."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont


def colorize(heatmap: np.ndarray) -> np.ndarray:
    """(H, W) values in [0, 1] -> (H, W, 3) uint8 RGB through the jet colour map."""
    h = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float32)), 0.0, 1.0)
    return (matplotlib.colormaps["jet"](h)[..., :3] * 255).round().astype(np.uint8)


def overlay(image: Image.Image, heatmap: np.ndarray, alpha: float = 0.45) -> Image.Image:
    """``image`` with ``heatmap`` (H, W, values in [0, 1]) in jet colours blended over it.

    The map is resized (bilinear) to the image; ``alpha`` is the map's weight. Returns RGB.
    """
    rgb = image.convert("RGB")
    hm = np.asarray(heatmap, dtype=np.float32)
    if hm.ndim != 2:
        raise ValueError(f"heatmap of shape {hm.shape}: expected (H, W)")
    if hm.shape != (rgb.height, rgb.width):
        hm = np.asarray(Image.fromarray(hm, mode="F").resize(rgb.size, Image.BILINEAR), dtype=np.float32)
    colour = Image.fromarray(colorize(hm))
    return Image.blend(rgb, colour, float(alpha))


def side_by_side(image: Image.Image, over: Image.Image, title: str, side: int = 256) -> Image.Image:
    """One PNG-ready panel: ``image`` | ``over``, each scaled to ``side`` px, ``title`` above."""
    left = image.convert("RGB").resize((side, side), Image.NEAREST if image.width < side // 2 else Image.BILINEAR)
    right = over.convert("RGB").resize((side, side), Image.NEAREST if over.width < side // 2 else Image.BILINEAR)
    font = ImageFont.load_default()
    bar = 28
    canvas = Image.new("RGB", (2 * side + 12, side + bar + 6), "white")
    ImageDraw.Draw(canvas).text((6, 8), title, fill="black", font=font)
    canvas.paste(left, (4, bar))
    canvas.paste(right, (side + 8, bar))
    return canvas


def save_png(image: Image.Image, path: str | Path) -> None:
    """Save ``image`` as PNG atomically (a temporary file beside it, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            image.save(fh, format="PNG", optimize=True)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
