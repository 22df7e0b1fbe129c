"""Colour and geometry helpers, and the pen that draws face-unit shapes on the canvas.

Face units: origin at the eye-line centre of the skull, y down, the skull's half-height is 1.
"""

from __future__ import annotations

import colorsys
import functools
import math

import numpy as np
from PIL import Image, ImageDraw

from anivision.data.synth.factors import HSV, RGB, WorkStyle

# --------------------------------------------------------------------------------------------
# Colour helpers
# --------------------------------------------------------------------------------------------


def _hsv_rgb(hsv: HSV) -> RGB:
    r, g, b = colorsys.hsv_to_rgb(hsv[0] % 1.0, min(max(hsv[1], 0.0), 1.0), min(max(hsv[2], 0.0), 1.0))
    return (int(round(r * 255)), int(round(g * 255)), int(round(b * 255)))


def _styled(hsv: HSV, style: WorkStyle, sat_weight: float = 1.0) -> RGB:
    """Apply the work's palette (saturation, brightness, tint) to a colour."""
    sat = hsv[1] * (style.saturation ** sat_weight)
    return _hsv_rgb((hsv[0] + style.hue_shift, sat, hsv[2] * style.brightness))


def _mix(a: RGB, b: RGB, t: float) -> RGB:
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))  # type: ignore[return-value]


def _scale(c: RGB, f: float) -> RGB:
    return tuple(int(min(255, round(x * f))) for x in c)  # type: ignore[return-value]


_WHITE: RGB = (255, 255, 255)


# --------------------------------------------------------------------------------------------
# Geometry helpers (face units: origin at the eye-line centre of the skull, y down)
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=512)
def _unit_arc(n: int, a0: float, a1: float) -> np.ndarray:
    # Cached: a face draws ~15 ellipses and recomputing cos/sin dominated their cost.
    t = np.linspace(a0, a1, n)
    arc = np.stack([np.cos(t), np.sin(t)], axis=1)
    arc.setflags(write=False)
    return arc


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 28,
             a0: float = 0.0, a1: float = 2 * math.pi) -> np.ndarray:
    return _unit_arc(n, a0, a1) * (rx, ry) + (cx, cy)


def _clip_vertical(pts: np.ndarray, xs: np.ndarray, top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    """Clip a vertically convex shape to the region between two curves.

    Clamping each point's y between the curves gives exactly the intersection when both
    shapes are vertically convex (irises in eyelids, tongues in mouths), without masks.
    """
    x = np.clip(pts[:, 0], xs[0], xs[-1])
    y = np.clip(pts[:, 1], np.interp(x, xs, top), np.interp(x, xs, bottom))
    return np.stack([x, y], axis=1)


def _teardrop(cx: float, cy: float, r: float) -> np.ndarray:
    t = np.linspace(-math.pi / 2 + 0.8, 1.5 * math.pi - 0.8, 16)
    arc = np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)
    return np.vstack([[cx, cy - 2.3 * r], arc])


def _quad(p0: tuple[float, float], p1: tuple[float, float], p2: tuple[float, float], n: int = 8) -> np.ndarray:
    """Points on a quadratic Bezier curve."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    a, b, c = (np.asarray(p, dtype=float) for p in (p0, p1, p2))
    return (1 - t) ** 2 * a + 2 * (1 - t) * t * b + t**2 * c


class _Pen:
    """Draws polygons and strokes given in face units on the supersampled canvas."""

    def __init__(self, img: Image.Image, origin: tuple[float, float], unit: float, angle_deg: float,
                 line_color: RGB, line_width: float) -> None:
        self.draw = ImageDraw.Draw(img)
        self.unit = unit
        a = math.radians(angle_deg)
        self._m = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]]) * unit
        self._o = np.asarray(origin, dtype=float)
        self.line_color = line_color
        self.line_width = line_width

    def xy(self, pts: np.ndarray) -> list[float]:
        return (np.asarray(pts, dtype=float) @ self._m + self._o).ravel().tolist()

    def px(self, width: float) -> int:
        return max(1, int(round(width * self.unit)))

    def fill(self, pts: np.ndarray, color: RGB) -> None:
        self.draw.polygon(self.xy(pts), fill=color)

    def shape(self, pts: np.ndarray, color: RGB, outline: RGB | None = None, width: float | None = None) -> None:
        """Fill a closed polygon and stroke its outline (centred on the edge, like ink)."""
        xy = self.xy(pts)
        self.draw.polygon(xy, fill=color)
        w = self.px(self.line_width if width is None else width)
        # Mitre-free joints leave notches only on sharp corners; our outlines are smooth, so
        # skip the ~5x slower curved joints here.
        self.draw.line(xy + xy[:2], fill=outline or self.line_color, width=w)

    def stroke(self, pts: np.ndarray, color: RGB | None = None, width: float | None = None) -> None:
        """An open stroke with rounded joints (brows, lids, mouths: few points, thick lines)."""
        w = self.px(self.line_width if width is None else width)
        self.draw.line(self.xy(pts), fill=color or self.line_color, width=w, joint="curve" if w > 2 else None)
