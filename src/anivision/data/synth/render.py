"""Rendering one face: the background, the face's layers back to front, and downscaling.

Faces are drawn with :mod:`PIL.ImageDraw` on a supersampled canvas and downscaled with
LANCZOS for anti-aliasing.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from anivision.data.synth.drawing import _mix, _Pen
from anivision.data.synth.eyes import _EyeParts
from anivision.data.synth.factors import FaceParams, Nuisance
from anivision.data.synth.hair import _HairParts
from anivision.data.synth.mouth import _MouthParts
from anivision.data.synth.sampling import _u


def _supersample(size: int) -> int:
    # Small images need more supersampling for smooth edges; big ones are already smooth.
    return 2 if size >= 96 else 3 if size >= 48 else 4


def _background(n: Nuisance, size: int, rng: np.random.Generator) -> Image.Image:
    c1, c2 = n.bg_colors
    if n.background == "gradient":
        # A 16x16 ramp upscaled bilinearly: a smooth gradient at any angle for ~0.1 ms.
        g = np.linspace(-1.0, 1.0, 16)
        t = (np.cos(n.bg_angle) * g[None, :] + np.sin(n.bg_angle) * g[:, None]) / math.sqrt(2) * 0.5 + 0.5
        arr = np.asarray(c1, float) + (np.asarray(c2, float) - np.asarray(c1, float)) * t[..., None]
        return Image.fromarray(arr.round().astype(np.uint8), "RGB").resize((size, size), Image.BILINEAR)
    img = Image.new("RGB", (size, size), c1)
    c2 = _mix(c1, c2, 0.35)  # patterns stay subtle so the face stands out
    draw = ImageDraw.Draw(img)
    if n.background == "dots":
        step = size / _u(rng, 5.0, 9.0)
        r = step * _u(rng, 0.12, 0.25)
        ox, oy = _u(rng, 0, step), _u(rng, 0, step)
        ys = np.arange(-1, size / step + 1)
        for i, gy in enumerate(ys):
            for gx in np.arange(-1, size / step + 1):
                x = ox + gx * step + (step / 2 if i % 2 else 0.0)
                y = oy + gy * step
                draw.ellipse((x - r, y - r, x + r, y + r), fill=c2)
    elif n.background == "stripes":
        step = size / _u(rng, 4.0, 9.0)
        d = np.array([math.cos(n.bg_angle), math.sin(n.bg_angle)])  # across the stripes
        e = np.array([-d[1], d[0]])  # along the stripes
        c = np.array([size / 2, size / 2])
        half = size * 0.75
        off = _u(rng, 0, step)
        for k in np.arange(-half, half, step):
            a = c + d * (k + off)
            b = c + d * (k + off + step / 2)
            quad = [a - e * half, a + e * half, b + e * half, b - e * half]
            draw.polygon([tuple(p) for p in quad], fill=c2)
    return img


class _Face(_HairParts, _EyeParts, _MouthParts):
    """Draws one face; a class only to share the pen, colours and geometry between parts."""

    def draw(self) -> None:
        # Back to front, like cel layers.
        self.body()
        self.back_hair()
        self.skull()
        self.bangs_shadow()
        for which, side in enumerate((-1, 1)):
            self.eye(side, which)
        self.nose()
        self.cheeks()
        self.mouth()
        if self.i.accessory == "glasses":
            self.glasses()
        if self.i.accessory == "cat_ears":
            self.cat_ears()
        self.front_hair()
        self.hair_accessory()
        self.brows()
        self.marks()


def render_face(params: FaceParams, size: int, rng: np.random.Generator) -> Image.Image:
    """Draw one cartoon face.

    Args:
        params: expression, identity, style and nuisance factors.
        size: output width and height in pixels.
        rng: generator for small per-image details (bang tips, pattern phase, gloom lines);
            seed it per image for reproducible output.

    Returns:
        An RGB image of ``size`` x ``size`` pixels.
    """
    ss = _supersample(size)
    canvas = size * ss
    n = params.nuisance
    img = _background(n, canvas, rng)
    unit = canvas * 0.29 * n.scale
    origin = (canvas * (0.5 + n.shift[0]), canvas * (0.45 + n.shift[1]))
    pen = _Pen(img, origin, unit, n.rotation, params.style.line_color, params.style.line_width)
    _Face(params, pen, rng).draw()
    return img.resize((size, size), Image.LANCZOS)
