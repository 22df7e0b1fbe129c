"""Augmented training views of face images, and the letterboxed input of inference.

A *view* is one fixed-size square canvas made from one image (random scale, placement and crop)
or, now and then, from four images in a 2x2 grid with white gutters (small faces, like the panels
of a manga page). Colour jitter, horizontal flips, greyscale and a screentone (halftone) effect
teach the detector that faces need no colour, so it works on manga pages.
Faces cut by the canvas border keep their box when most of the face is inside; otherwise their
visible part becomes an *ignore* region (trained neither as face nor as background).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageEnhance

from anivision.data.images import load_image

#: Inputs are padded to a multiple of this (the backbone's largest stride).
PAD_TO = 32
#: Padding colour: 0 after the backbone's (0.5, 0.5, 0.5) normalisation.
PAD_VALUE = 128
#: Share of a face that must stay on the canvas for it to remain a training face.
MIN_VISIBLE = 0.6


def resize_long_side(img: Image.Image, long_side: int) -> tuple[Image.Image, float]:
    """``img`` resized so that its longer side is ``long_side``, and the scale applied."""
    s = long_side / max(img.size)
    size = (max(1, round(img.width * s)), max(1, round(img.height * s)))
    return img.resize(size, Image.Resampling.BILINEAR), s


def letterbox(img: Image.Image, long_side: int) -> tuple[np.ndarray, float]:
    """Inference input: RGB resized to ``long_side``, padded right/bottom to a multiple of 32.

    Returns:
        (H, W, 3) uint8 and the scale from image pixels to input pixels.
    """
    small, s = resize_long_side(img.convert("RGB"), long_side)
    h = -(-small.height // PAD_TO) * PAD_TO
    w = -(-small.width // PAD_TO) * PAD_TO
    out = np.full((h, w, 3), PAD_VALUE, np.uint8)
    out[: small.height, : small.width] = np.asarray(small)
    return out, s


def screentone(grey: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Manga-style halftone of an (H, W) uint8 image: mid-tones become dot screens, ink stays."""
    period = float(rng.uniform(3.0, 6.0))
    angle = float(rng.uniform(0, np.pi / 2))
    yy, xx = np.mgrid[0 : grey.shape[0], 0 : grey.shape[1]].astype(np.float32)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    screen = (np.sin(u * 2 * np.pi / period) * np.sin(v * 2 * np.pi / period) + 1) / 2
    g = grey.astype(np.float32) / 255.0
    tone = np.where(g > screen, 255, 0).astype(np.uint8)
    return np.where(g < 0.2, grey, np.where(g > 0.92, 255, tone)).astype(np.uint8)


def _colour(img: Image.Image, rng: np.random.Generator, grey_p: float, tone_p: float) -> Image.Image:
    img = ImageEnhance.Brightness(img).enhance(float(rng.uniform(0.75, 1.25)))
    img = ImageEnhance.Contrast(img).enhance(float(rng.uniform(0.7, 1.3)))
    img = ImageEnhance.Color(img).enhance(float(rng.uniform(0.5, 1.5)))
    if rng.random() < grey_p:
        grey = np.asarray(img.convert("L"))
        if rng.random() < tone_p:
            grey = screentone(grey, rng)
        img = Image.fromarray(grey).convert("RGB")
    return img


def _place(
    img: Image.Image, boxes: np.ndarray, canvas: np.ndarray, cell: tuple[int, int, int, int], scale: float, rng: np.random.Generator
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Paste ``img`` scaled by ``scale`` at a random place in ``cell`` (x0, y0, x1, y1) of ``canvas``.

    Returns:
        (kept boxes, ignore regions) in canvas pixels.
    """
    cx0, cy0, cx1, cy1 = cell
    cw, ch = cx1 - cx0, cy1 - cy0
    w, h = max(1, round(img.width * scale)), max(1, round(img.height * scale))
    small = img.resize((w, h), Image.Resampling.BILINEAR)
    # Offset of the image in the cell: random, negative when the image is larger (a random crop).
    ox = int(rng.integers(min(0, cw - w), max(0, cw - w) + 1))
    oy = int(rng.integers(min(0, ch - h), max(0, ch - h) + 1))
    sx0, sy0 = max(0, -ox), max(0, -oy)
    sx1, sy1 = min(w, cw - ox), min(h, ch - oy)
    canvas[cy0 + oy + sy0 : cy0 + oy + sy1, cx0 + ox + sx0 : cx0 + ox + sx1] = np.asarray(small)[sy0:sy1, sx0:sx1]
    keep, ignore = [], []
    for b in np.asarray(boxes, np.float32).reshape(-1, 4) * scale:
        b = b + np.array([cx0 + ox, cy0 + oy, cx0 + ox, cy0 + oy], np.float32)
        c = np.array([max(b[0], cx0), max(b[1], cy0), min(b[2], cx1), min(b[3], cy1)], np.float32)
        vis = max(c[2] - c[0], 0) * max(c[3] - c[1], 0) / max((b[2] - b[0]) * (b[3] - b[1]), 1e-6)
        if vis >= MIN_VISIBLE and min(c[2] - c[0], c[3] - c[1]) >= 4:
            keep.append(c)
        elif vis > 0:
            ignore.append(c)
    return keep, ignore


def make_view(
    images: list[tuple[Image.Image, np.ndarray]],
    rng: np.random.Generator,
    size: int = 320,
    long_side: int = 384,
    grey_p: float = 0.35,
    tone_p: float = 0.3,
    mosaic_p: float = 0.2,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One augmented ``size`` x ``size`` training canvas.

    Args:
        images: ``(RGB image, boxes x0,y0,x1,y1)``; the first is the view's image, the next three
            fill a 2x2 mosaic (drawn with probability ``mosaic_p`` when four are given).
        rng: the view's generator.
        size: canvas side.
        long_side: the inference size: a face appears at 0.5-1.15 times the size it has when the
            image is resized to this long side.
        grey_p: probability of a greyscale view; ``tone_p`` of those get a screentone.
        mosaic_p: probability of a 2x2 mosaic.

    Returns:
        (size, size, 3) uint8 canvas, (N, 4) face boxes, (M, 4) ignore regions.
    """
    fill = PAD_VALUE if rng.random() < 0.6 else 255
    canvas = np.full((size, size, 3), fill, np.uint8)
    flip = rng.random() < 0.5
    mosaic = len(images) >= 4 and rng.random() < mosaic_p
    if mosaic:
        canvas[:] = 255
        half, gutter = size // 2, int(rng.integers(2, 8))
        cells = [(x, y, x + half - gutter, y + half - gutter) for y in (0, half) for x in (0, half)]
        cells = [(x0 + gutter // 2, y0 + gutter // 2, x1 + gutter // 2, y1 + gutter // 2) for x0, y0, x1, y1 in cells]
        pairs = list(zip(images[:4], cells))
    else:
        pairs = [(images[0], (0, 0, size, size))]
    keep: list[np.ndarray] = []
    ignore: list[np.ndarray] = []
    for (img, boxes), cell in pairs:
        cell_long = max(cell[2] - cell[0], cell[3] - cell[1])
        base = (long_side if not mosaic else cell_long * float(rng.uniform(0.8, 1.4))) / max(img.size)
        k, i = _place(img, boxes, canvas, cell, base * float(np.exp(rng.uniform(np.log(0.5), np.log(1.15)))), rng)
        keep += k
        ignore += i
    out = _colour(Image.fromarray(canvas), rng, grey_p, tone_p)
    arr = np.asarray(out).copy()
    kb = np.array(keep, np.float32).reshape(-1, 4)
    ib = np.array(ignore, np.float32).reshape(-1, 4)
    if flip:
        arr = arr[:, ::-1].copy()
        kb = np.stack([size - kb[:, 2], kb[:, 1], size - kb[:, 0], kb[:, 3]], 1) if len(kb) else kb
        ib = np.stack([size - ib[:, 2], ib[:, 1], size - ib[:, 0], ib[:, 3]], 1) if len(ib) else ib
    return arr, kb, ib


def load_rgb(path: str) -> Image.Image:
    """An image file as RGB (alpha on white), raising a one-line error when unreadable."""
    return load_image(path).convert("RGB")
