"""Eyes (anime, almond and dot styles, open or closed), brows and glasses."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from anivision.data.synth.drawing import _WHITE, _clip_vertical, _ellipse, _mix, _quad
from anivision.data.synth.head import _FaceBase


class _EyeParts(_FaceBase):
    """Draws the eyes, brows and glasses of a face."""

    def _eye_transform(self, side: int, size: float) -> Callable[[np.ndarray], np.ndarray]:
        """Map eye-local points (x outward from the nose, y down) to face units."""
        cx, cy = side * self.eye_dx, self.eye_y
        slant = self.e.lid_slant

        def to_face(pts: np.ndarray) -> np.ndarray:
            # The shear tilts the eye: outer corner up when angry, down when sad.
            pts = np.asarray(pts, dtype=float) * size
            return np.stack([cx + side * pts[:, 0], cy + pts[:, 1] - slant * pts[:, 0]], axis=1)

        return to_face

    def eye(self, side: int, which: int) -> None:
        e, s, pen = self.e, self.s, self.pen
        size = e.eye_size[which]
        to_face = self._eye_transform(side, size)
        ew = self.ew if s.eye_style != "dot" else 0.11 * s.eye_scale
        lid_w = s.line_width * (2.2 if s.eye_style == "anime" else 1.6)
        xs = np.linspace(-ew, ew, 13)
        base = np.clip(1.0 - (xs / ew) ** 2, 0.0, 1.0)
        if e.eye_mode == "closed_happy":  # ^ ^
            pen.stroke(to_face(np.stack([xs, -0.45 * self.hu * base**0.7 + 0.05], 1)), width=lid_w)
            return
        if e.eye_mode == "closed_sad":  # u u
            pen.stroke(to_face(np.stack([xs, 0.25 * self.hu * base**0.7], 1)), width=lid_w)
            return
        if e.eye_mode == "closed_squeeze":  # > <
            h = max(self.hu, 0.12) * 0.55
            pen.stroke(to_face(np.array([(ew, -h), (-ew * 0.6, 0.0), (ew, h)])), width=lid_w)
            return
        if s.eye_style == "dot":
            self._dot_eye(to_face, size)
            return

        wide = e.eye_mode in ("wide", "spiral")
        hu = self.hu * e.eye_open
        hl = self.hl * (0.5 + 0.5 * e.eye_open)
        upper = -hu * base**self.lid_pow
        lower = hl * base**self.lid_pow - e.lid_smile * self.hu * base
        lower = np.maximum(lower, upper + 0.01)
        sclera = np.vstack([np.stack([xs, upper], 1), np.stack([xs[::-1], lower[::-1]], 1)])
        pen.fill(to_face(sclera), (252, 252, 255))

        mid = 0.5 * (lower.max() + upper.min())
        if e.eye_mode == "spiral":
            r_max = 0.9 * min(ew, 0.5 * (lower.max() - upper.min()))
            t = np.linspace(0.0, 3.5 * 2 * math.pi, 40)
            r = r_max * t / t[-1]
            spiral = np.stack([r * np.cos(t), mid + r * np.sin(t)], 1)
            pen.stroke(to_face(spiral), color=self.iris_dark, width=max(s.line_width * 0.8, 0.012))
        else:
            span = lower.max() - upper.min()
            k = 0.62 if s.eye_style == "anime" else 0.5
            irx = k * ew * e.iris_scale
            iry = irx * (1.3 if s.eye_style == "anime" else 1.0)
            if s.eye_style == "anime" and not wide:
                iry = max(iry, 0.55 * span)  # the anime iris fills the eye from lid to lid
            gx, gy = e.gaze
            icx = float(np.clip(gx * side, -1, 1)) * ew * 0.35
            icy = mid + gy * span * 0.2
            iris = _clip_vertical(_ellipse(icx, icy, irx, iry, n=24), xs, upper, lower)
            pen.fill(to_face(iris), self.iris_dark)
            if s.eye_style == "anime":
                inner = _ellipse(icx, icy + iry * 0.2, irx * 0.78, iry * 0.72, n=20)
                pen.fill(to_face(_clip_vertical(inner, xs, upper, lower)), self.iris)
                low = _ellipse(icx, icy + iry * 0.45, irx * 0.55, iry * 0.35, n=16)
                pen.fill(to_face(_clip_vertical(low, xs, upper, lower)), self.iris_light)
            else:
                pen.fill(to_face(_clip_vertical(_ellipse(icx, icy, irx * 0.8, iry * 0.8, n=20), xs, upper,
                                                lower)), self.iris)
            pr = e.pupil_scale * irx
            if pr > 0.004:
                pupil = _ellipse(icx, icy, pr, pr * iry / irx, n=16)
                pen.fill(to_face(_clip_vertical(pupil, xs, upper, lower)), (15, 12, 20))
            for h in range(s.highlights):
                # Highlights sit toward the light, upper part of the iris.
                hx = icx - side * s.light_side * irx * (0.35 if h == 0 else -0.3)
                hy = icy - iry * (0.35 if h == 0 else -0.35)
                hr = irx * (0.28 if h == 0 else 0.14)
                pen.fill(to_face(_ellipse(hx, hy, hr, hr, n=12)), _WHITE)
        # Lids are drawn last so they cover the clipped iris edges.
        pen.stroke(to_face(np.stack([xs, upper], 1)), width=lid_w)
        if s.eye_style == "anime":
            end = upper[-1]
            pen.stroke(to_face(np.array([(ew * 0.8, upper[-3]), (ew * 1.2, end - 0.06)])), width=lid_w * 0.8)
            pen.stroke(to_face(np.stack([xs[7:], lower[7:]], 1)), width=s.line_width * 0.8)
        else:
            pen.stroke(to_face(np.stack([xs, lower], 1)), width=s.line_width * 0.8)
        if wide and e.emotion == "Scared":
            # Small shock lines beside the eye.
            for dy in (-0.08, 0.0, 0.08):
                pen.stroke(to_face(np.array([(ew * 1.35, dy), (ew * 1.6, dy * 1.6)])), width=s.line_width * 0.6)

    def _dot_eye(self, to_face, size: float) -> None:
        e, s, pen = self.e, self.s, self.pen
        r = 0.055 * s.eye_scale
        if e.eye_mode in ("wide", "spiral"):
            ring = _ellipse(0.0, 0.0, r * 1.5, r * 1.9 * e.eye_open / 1.3, n=20)
            pen.shape(to_face(ring), (252, 252, 255), width=s.line_width * 0.9)
            if e.eye_mode == "spiral":
                t = np.linspace(0.0, 3 * 2 * math.pi, 30)
                rr = r * 1.3 * t / t[-1]
                pen.stroke(to_face(np.stack([rr * np.cos(t), rr * np.sin(t)], 1)), width=s.line_width * 0.6)
            else:
                pr = r * max(e.pupil_scale, 0.12) * 1.2
                pen.fill(to_face(_ellipse(e.gaze[0] * r * 0.4, 0.0, pr, pr, n=10)), (15, 12, 20))
            return
        gx, gy = e.gaze
        cx, cy = gx * r * 0.6, gy * r * 0.5
        pen.fill(to_face(_ellipse(cx, cy, r * 0.8, r * 1.25 * e.eye_open, n=16)), (20, 16, 24))
        if s.highlights:
            pen.fill(to_face(_ellipse(cx - 0.25 * r, cy - 0.4 * r, 0.25 * r, 0.25 * r, n=8)), _WHITE)
        if abs(e.lid_slant) > 0.05:
            # A lid line over the dot shows the tilt that the dot cannot.
            y = cy - r * 1.25 * e.eye_open - 0.01
            pen.stroke(to_face(np.array([(-r * 1.3, y), (r * 1.3, y)])), width=s.line_width)

    def brows(self) -> None:
        e, s, pen = self.e, self.s, self.pen
        hu = self.hu if s.eye_style != "dot" else 0.12
        ew = self.ew if s.eye_style != "dot" else 0.13
        y0 = -hu - 0.1 + e.brow_lift
        color = _mix(self.hair_dark, self.line, 0.5)
        for which, side in enumerate((-1, 1)):
            cx, cy = side * self.eye_dx, self.eye_y
            inner = (-0.85 * ew, y0 + e.brow_inner[which])
            outer = (1.1 * ew, y0 + e.brow_outer[which])
            mid = (0.15 * ew, y0 - 0.035 + 0.5 * (e.brow_inner[which] + e.brow_outer[which]))
            pts = _quad(inner, mid, outer, n=7)
            pts = np.stack([cx + side * pts[:, 0], cy + pts[:, 1]], 1)
            pen.stroke(pts, color=color, width=max(s.line_width * 1.5, 0.025) * e.brow_weight)

    def glasses(self) -> None:
        pen, s = self.pen, self.s
        hu = self.hu if s.eye_style != "dot" else 0.1
        ew = self.ew if s.eye_style != "dot" else 0.12
        frame = _mix(self.line, self.acc, 0.3)
        for side in (-1, 1):
            ring = _ellipse(side * self.eye_dx, self.eye_y - 0.02, ew + 0.07, hu * 0.8 + 0.06, n=22)
            pen.stroke(np.vstack([ring, ring[:1]]), color=frame, width=0.02)
        y = self.eye_y - 0.02 - 0.05
        pen.stroke(np.array([(-self.eye_dx + ew + 0.07, y), (self.eye_dx - ew - 0.07, y)]), color=frame, width=0.02)
