"""Nose, mouth, cheeks (blush, tears) and the expression marks (gloom, sweat, anger vein)."""

from __future__ import annotations

import math

import numpy as np

from anivision.data.synth.drawing import _WHITE, _clip_vertical, _ellipse, _mix, _teardrop
from anivision.data.synth.head import _FaceBase


class _MouthParts(_FaceBase):
    """Draws the nose, mouth, cheeks and expression marks of a face."""

    def nose(self) -> None:
        y = 0.5 * (self.eye_y + self.mouth_y) + 0.06
        side = self.s.light_side
        self.pen.stroke(np.array([(0.0, y - 0.03), (-side * 0.02, y + 0.015)]),
                        color=_mix(self.skin_shadow, self.line, 0.35), width=self.s.line_width * 0.8)

    def mouth(self) -> None:
        e, s, pen = self.e, self.s, self.pen
        my = self.mouth_y
        mw = 0.12 * e.mouth_width * s.mouth_scale
        xs = np.linspace(-mw, mw, 13)
        u = xs / mw
        lw = s.line_width * 1.1
        if e.mouth == "line":
            pen.stroke(np.stack([xs, my - e.mouth_curve * (u**2 - 0.3)], 1), width=lw)
        elif e.mouth == "wavy":
            pen.stroke(np.stack([xs, my + 0.018 * np.sin(u * 2.5 * math.pi)], 1), width=lw)
        elif e.mouth == "cat":  # the "w" cat mouth
            pen.stroke(np.stack([xs, my + 0.03 * np.abs(np.sin(u * math.pi)) - 0.01], 1), width=lw)
        else:
            top = my - e.mouth_curve * (u**2 - 0.3)
            bottom = top + e.mouth_open * np.clip(1 - u**2, 0, 1) ** 0.6
            poly = np.vstack([np.stack([xs, top], 1), np.stack([xs[::-1], bottom[::-1]], 1)])
            inside = (235, 235, 240) if e.teeth == "full" else _mix((120, 28, 40), self.line, 0.2)
            pen.fill(poly, inside)
            if e.teeth == "full":
                mid = 0.5 * (top + bottom)
                pen.stroke(np.stack([xs, mid], 1), color=_mix(self.line, _WHITE, 0.3), width=lw * 0.6)
                for x in np.linspace(-mw, mw, 8)[1:-1]:
                    yt, yb = np.interp(x, xs, top), np.interp(x, xs, bottom)
                    pen.stroke(np.array([(x, yt), (x, yb)]), color=_mix(self.line, _WHITE, 0.3), width=lw * 0.5)
            else:
                if e.tongue:
                    tongue = _ellipse(0.0, my + e.mouth_open * 0.85, mw * 0.55, e.mouth_open * 0.5, n=16)
                    pen.fill(_clip_vertical(tongue, xs, top, bottom), (235, 110, 125))
                if e.teeth == "top":
                    band = np.vstack([np.stack([xs, top], 1),
                                      np.stack([xs[::-1], np.minimum(top + 0.03, bottom)[::-1]], 1)])
                    pen.fill(band, _WHITE)
            pen.stroke(np.vstack([poly, poly[:1]]), width=lw)

    def cheeks(self) -> None:
        e, s, pen = self.e, self.s, self.pen
        if e.blush > 0:
            pink = _mix(self.skin, (255, 95, 120), 0.6 * e.blush)
            y = self.eye_y + self.hl + 0.16
            for side in (-1, 1):
                cx = side * (self.eye_dx + 0.03)
                if s.shading == "gradient":
                    for k, t in ((1.0, 0.5), (0.7, 1.0)):
                        pen.fill(_ellipse(cx, y, 0.17 * k, 0.07 * k, n=18), _mix(self.skin, pink, t))
                else:
                    pen.fill(_ellipse(cx, y, 0.16, 0.065, n=18), pink)
                if e.blush > 0.6:  # hatching on a strong blush
                    for dx in (-0.06, 0.0, 0.06):
                        pen.stroke(np.array([(cx + dx + 0.025, y - 0.04), (cx + dx - 0.025, y + 0.04)]),
                                   color=_mix(pink, (200, 40, 70), 0.5), width=s.line_width * 0.7)
        if e.tears != "none":
            water, edge = (170, 215, 255), (80, 140, 215)
            for side in (-1, 1):
                x = side * (self.eye_dx + 0.5 * self.ew)
                y = self.eye_y + self.hl + 0.02
                if e.tears == "stream":
                    t = np.linspace(0, 1, 8)
                    xc = x + 0.025 * np.sin(t * 3 * math.pi)
                    yc = y + t * (self.mouth_y + 0.25 - y)
                    wd = 0.02 + 0.035 * t
                    stream = np.vstack([np.stack([xc - wd, yc], 1), np.stack([xc[::-1] + wd[::-1], yc[::-1]], 1)])
                    pen.shape(stream, water, outline=edge, width=s.line_width * 0.6)
                elif side == 1 or self.rng.random() < 0.5:
                    pen.shape(_teardrop(x + side * 0.03, y + 0.1, 0.045), water, outline=edge,
                              width=s.line_width * 0.6)

    # ---- marks ---------------------------------------------------------------------------------

    def marks(self) -> None:
        e, s, pen = self.e, self.s, self.pen
        if e.gloom:
            n = 7
            top = self.eye_y - self.hu - 0.45
            for x in np.linspace(-0.55 * self.w, 0.55 * self.w, n):
                y1 = self.eye_y - self.hu * 0.6 + float(self.rng.normal(0, 0.03))
                pen.stroke(np.array([(x, top), (x, y1)]), color=(70, 55, 130), width=max(s.line_width * 0.7, 0.012))
        for k in range(e.sweat):
            side = 1 if k == 0 else -1
            cx, cy = side * (self.w + 0.02), -0.35 + 0.35 * k
            r = 0.12 if k == 0 else 0.08
            pen.shape(_teardrop(cx, cy, r), (175, 220, 255), outline=(70, 130, 210), width=s.line_width * 0.8)
            pen.fill(_ellipse(cx - 0.35 * r, cy - 0.2 * r, 0.2 * r, 0.35 * r, n=8), _WHITE)
        if e.vein:
            # The four-bracket anger mark, on the hair above one eye.
            cx, cy = 0.6 * self.w, -0.72
            d, r = 0.1, 0.09
            red = (225, 35, 45)
            for qx, qy in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
                ang = math.atan2(-qy, -qx)  # arcs bulge away from the centre
                arc = _ellipse(cx + qx * d, cy + qy * d, r, r, n=7, a0=ang - 0.9, a1=ang + 0.9)
                pen.stroke(arc, color=red, width=max(s.line_width * 1.3, 0.03))
