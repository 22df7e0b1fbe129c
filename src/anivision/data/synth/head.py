"""The base of a face drawing: its palette and geometry, the skull and the body.

:class:`_FaceBase` holds what every part shares (pen, colours, eye and mouth positions); the
parts themselves are drawn by the subclasses in :mod:`~anivision.data.synth.hair`,
:mod:`~anivision.data.synth.eyes` and :mod:`~anivision.data.synth.mouth`, combined in
:mod:`~anivision.data.synth.render`.
"""

from __future__ import annotations

import math

import numpy as np

from anivision.data.synth.drawing import _WHITE, _ellipse, _mix, _Pen, _scale, _styled
from anivision.data.synth.factors import FaceParams


class _FaceBase:
    """Palette and geometry of one face, shared by the parts; draws the skull and body."""

    def __init__(self, params: FaceParams, pen: _Pen, rng: np.random.Generator) -> None:
        self.p = params
        self.e = params.expression
        self.i = params.identity
        self.s = params.style
        self.pen = pen
        self.rng = rng
        s, i = self.s, self.i
        self.line = s.line_color
        self.skin = _styled(i.skin_hsv, s, sat_weight=0.5)  # skin stays skin-like in muted works
        self.skin_shadow = _mix(self.skin, (190, 90, 110), 0.22)
        self.skin_light = _mix(self.skin, _WHITE, 0.35)
        self.hair = _styled(i.hair_hsv, s)
        self.hair_dark = _scale(self.hair, 0.72)
        self.hair_light = _mix(self.hair, _WHITE, 0.4)
        self.hair_line = _mix(self.line, self.hair_dark, 0.3)
        if self.e.red_iris:
            self.iris = _styled((0.99, 0.85, 0.8), s)
        else:
            self.iris = _styled((i.eye_hue, 0.7, 0.8), s)
        self.iris_dark = _mix(self.iris, (10, 10, 20), 0.45)
        self.iris_light = _mix(self.iris, _WHITE, 0.35)
        self.acc = _styled((i.accessory_hue, 0.75, 0.9), s)
        self.clothes = _styled(i.clothes_hsv, s)

        self.w = i.face_width
        self.chin_y = i.chin_length
        self.eye_y = s.eye_height
        self.eye_dx = s.eye_spacing * self.w
        self.mouth_y = 0.58 * self.chin_y + 0.05
        es = s.eye_scale
        if s.eye_style == "anime":
            self.ew, self.hu, self.hl, self.lid_pow = 0.2 * es, 0.25 * es, 0.13 * es, 0.35
        elif s.eye_style == "almond":
            self.ew, self.hu, self.hl, self.lid_pow = 0.19 * es, 0.12 * es, 0.07 * es, 0.9
        else:
            self.ew, self.hu, self.hl, self.lid_pow = 0.075 * es, 0.1 * es, 0.1 * es, 0.5
        self.hair_w = self.w + 0.12
        self.side_len = {"short": 0.25, "bob": 0.75, "long": 1.0, "twintails": 0.6,
                         "ponytail": 0.5, "spiky": 0.2}[i.hair_style]

    # ---- skull, body -------------------------------------------------------------------------

    def face_outline(self) -> np.ndarray:
        """Skull dome on top, cheeks narrowing to the chin below (half-height 1 above y=0)."""
        w, L = self.w, self.chin_y
        top = _ellipse(0.0, 0.0, w, 1.0, n=22, a0=math.pi, a1=2 * math.pi)
        ys = L * np.sin(np.linspace(0.0, math.pi / 2, 14))
        # Exponent 0.5 is an ellipse (round chin); toward 1 the chin turns pointed.
        q = 0.5 + 0.5 * self.i.chin
        xs = w * np.clip(1.0 - (ys / L) ** 2, 0.0, 1.0) ** q
        right = np.stack([xs, ys], axis=1)[1:]
        left = np.stack([-xs, ys], axis=1)[::-1][1:-1]
        return np.vstack([top, right, left])

    def face_half_width(self, y: np.ndarray) -> np.ndarray:
        w, L = self.w, self.chin_y
        up = w * np.sqrt(np.clip(1.0 - y**2, 0.0, 1.0))
        down = w * np.clip(1.0 - (y / L) ** 2, 0.0, 1.0) ** (0.5 + 0.5 * self.i.chin)
        return np.where(y < 0, up, down)

    def body(self) -> None:
        pen, w = self.pen, self.w
        torso = np.array([(-0.3, 1.38), (0.3, 1.38), (1.25, 1.58), (1.8, 2.7), (-1.8, 2.7), (-1.25, 1.58)])
        pen.shape(torso, self.clothes)
        collar = self.i.collar
        if collar == 0:
            pen.shape(np.array([(-0.32, 1.4), (0.32, 1.4), (0.0, 1.85)]), self.skin)
        elif collar == 1:
            white = _mix(_WHITE, self.clothes, 0.08)
            for sx in (-1, 1):
                pen.shape(np.array([(0.0, 1.9), (sx * 0.32, 1.38), (sx * 1.1, 1.55), (sx * 0.9, 1.95)]), white)
            pen.shape(np.array([(-0.12, 1.85), (0.12, 1.85), (0.0, 2.15)]), self.acc)
        else:
            for sx in (-1, 1):
                pen.shape(np.array([(0.0, 1.75), (sx * 0.3, 1.38), (sx * 0.5, 1.7)]), _WHITE)
        neck = np.array([(-0.24 * w, 0.5), (0.24 * w, 0.5), (0.27 * w, 1.45), (0.0, 1.6), (-0.27 * w, 1.45)])
        pen.shape(neck, self.skin)
        if self.s.shading != "flat":
            # Shadow the chin casts on the neck; the face covers its top part.
            pen.fill(np.array([(-0.24 * w, 0.5), (0.24 * w, 0.5), (0.26 * w, self.chin_y + 0.12),
                               (-0.26 * w, self.chin_y + 0.12)]), self.skin_shadow)

    def skull(self) -> None:
        pen = self.pen
        outline = self.face_outline()
        shading = self.s.shading
        pen.shape(outline, self.skin_shadow if shading == "gradient" else self.skin)
        if shading == "gradient":
            # Nested, shrinking copies from shadow to highlight: a radial gradient without masks.
            centre = np.array([0.0, 0.0])
            for k, t in ((0.93, 0.35), (0.84, 0.65), (0.72, 0.9), (0.55, 1.0)):
                pen.fill(centre + (outline - centre) * k, _mix(self.skin_shadow, self.skin_light, t * 0.8))
        elif shading == "cel":
            # One hard-edged shadow down the cheek away from the light.
            side = self.s.light_side
            # Start the outline at the chin so each cheek's edge is one contiguous run; the
            # run's own chord is the shadow's straight, hard inner edge.
            rolled = np.roll(outline, -int(np.argmax(outline[:, 1])), axis=0)
            shadow = rolled[side * rolled[:, 0] > 0.55 * self.w]
            if len(shadow) >= 3:
                pen.fill(shadow, self.skin_shadow)
            pen.stroke(np.vstack([outline, outline[:1]]), width=self.s.line_width)
