"""Hair (back hair, bangs, side locks, ponytails and twintails) and hair accessories."""

from __future__ import annotations

import math

import numpy as np

from anivision.data.synth.drawing import _WHITE, _ellipse, _mix, _quad, _scale
from anivision.data.synth.head import _FaceBase


class _HairParts(_FaceBase):
    """Draws the hair, bow, hair clips, headband and cat ears of a face."""

    def back_hair(self) -> None:
        pen, hw, style = self.pen, self.hair_w, self.i.hair_style
        top = _ellipse(0.0, -0.05, hw + 0.05, 1.12, n=22, a0=math.pi, a1=2 * math.pi)
        if style in ("bob", "long"):
            bottom = 0.85 if style == "bob" else 1.95
            flare = 0.05 if style == "bob" else 0.3
            n = 7
            xs = np.linspace(hw + 0.05 + flare, -(hw + 0.05 + flare), n)
            ys = bottom + 0.06 * (np.arange(n) % 2)  # ragged hair ends
            shape = np.vstack([top, [(hw + 0.05 + flare, bottom)], np.stack([xs, ys], 1)])
            pen.shape(shape, self.hair_dark, outline=self.hair_line)
        elif style == "spiky":
            k = 13
            t = np.linspace(math.pi * 0.9, math.pi * 2.1, k)
            r = np.where(np.arange(k) % 2 == 0, 1.45, 1.08)
            pts = np.stack([r * np.cos(t) * (hw / 1.0), r * np.sin(t) * 1.0], axis=1)
            pen.shape(np.vstack([pts, [(hw * 0.9, 0.45), (-hw * 0.9, 0.45)]]), self.hair_dark,
                      outline=self.hair_line)
        else:
            pen.shape(np.vstack([top, [(hw + 0.02, 0.45), (-hw - 0.02, 0.45)]]), self.hair_dark,
                      outline=self.hair_line)
        if style == "twintails":
            for sx in (-1, 1):
                anchor = (sx * (hw - 0.05), -0.6)
                tail = np.vstack([
                    _quad(anchor, (sx * (hw + 0.75), -0.4), (sx * (hw + 0.45), 1.5), n=10),
                    _quad((sx * (hw + 0.45), 1.5), (sx * (hw + 0.05), 0.4), anchor, n=10)[1:],
                ])
                pen.shape(tail, self.hair, outline=self.hair_line)
                pen.shape(_ellipse(anchor[0], anchor[1], 0.09, 0.09, n=12), self.acc)
        elif style == "ponytail":
            anchor = (0.35 * hw, -1.05)
            tail = np.vstack([
                _quad(anchor, (hw + 0.9, -1.1), (hw + 0.5, 0.9), n=10),
                _quad((hw + 0.5, 0.9), (hw + 0.2, -0.4), anchor, n=10)[1:],
            ])
            pen.shape(tail, self.hair, outline=self.hair_line)

    def bangs_edge(self, jitter: bool = True) -> np.ndarray:
        """The lower edge of the front hair, right to left, ending at the temples."""
        hw, rng = self.hair_w, self.rng
        bangs = self.i.bangs
        n_tips = {"blunt": 8, "pointed": 5, "swept": 5}[bangs]
        tip_y = self.eye_y - self.hu - 0.12  # bangs stop just above the brows
        xs = np.linspace(hw * 0.95, -hw * 0.95, 2 * n_tips + 1)
        ys = np.empty_like(xs)
        for k in range(len(xs)):
            if k % 2 == 1:  # a tip
                ys[k] = tip_y
            else:  # a parting between tips
                ys[k] = tip_y - (0.1 if bangs == "blunt" else 0.42)
        if bangs == "swept":
            # Strands lean one way and shorten toward one side.
            ys[1::2] -= np.linspace(0.0, 0.3, n_tips)
            xs[1::2] += 0.12
        if self.i.hair_style == "spiky":
            ys[1::2] += 0.06
        if jitter:
            ys[1::2] += rng.normal(0.0, 0.02, n_tips)
        ys[0] = ys[-1] = tip_y - 0.3
        return np.stack([xs, ys], axis=1)

    def bangs_shadow(self) -> None:
        if self.s.shading == "flat":
            return
        edge = self.bangs_edge(jitter=False)
        band = np.vstack([edge, edge[::-1] + [0.0, 0.07]])
        band[:, 0] = np.clip(band[:, 0], -self.face_half_width(band[:, 1]), self.face_half_width(band[:, 1]))
        self.pen.fill(band, self.skin_shadow)

    def front_hair(self) -> None:
        pen, hw = self.pen, self.hair_w
        cap = _ellipse(0.0, -0.05, hw, 1.12, n=24, a0=math.pi, a1=2 * math.pi)
        edge = self.bangs_edge()
        temple = self.eye_y - 0.05
        shape = np.vstack([cap, [(hw, temple)], edge, [(-hw, temple)]])
        pen.shape(shape, self.hair, outline=self.hair_line)
        # Side locks frame the face; their length is part of the hair style.
        for sx in (-1, 1):
            x0 = sx * hw
            lock = np.array([(x0, -0.3), (x0 - sx * 0.22, -0.1), (sx * (self.w - 0.05), self.side_len),
                             (x0 + sx * 0.02, self.side_len - 0.15)])
            pen.shape(lock, self.hair, outline=self.hair_line)
        if self.s.shading != "flat":
            # The anime "angel ring" highlight; gradient works get a softer two-step one.
            for k, (r0, r1, t) in enumerate(((0.78, 0.9, 0.45), (0.81, 0.87, 0.75))):
                if k == 1 and self.s.shading == "cel":
                    break
                a0, a1 = math.pi * 1.15, math.pi * 1.85
                outer = _ellipse(0.0, -0.05, hw * r1, 1.12 * r1, n=14, a0=a0, a1=a1)
                inner = _ellipse(0.0, -0.05, hw * r0, 1.12 * r0, n=14, a0=a1, a1=a0)
                pen.fill(np.vstack([outer, inner]), _mix(self.hair, _WHITE, t * 0.7))
        if self.i.ahoge:
            strand = np.vstack([_quad((-0.05, -1.12), (0.1, -1.7), (0.4, -1.45), n=8),
                                _quad((0.4, -1.45), (0.15, -1.5), (0.08, -1.1), n=8)[1:]])
            pen.shape(strand, self.hair, outline=self.hair_line)

    def hair_accessory(self) -> None:
        acc, pen, hw = self.i.accessory, self.pen, self.hair_w
        if acc == "bow":
            cx, cy = 0.55 * hw, -0.95
            for sx in (-1, 1):
                wing = np.array([(cx, cy), (cx + sx * 0.3, cy - 0.17), (cx + sx * 0.33, cy + 0.15)])
                pen.shape(wing, self.acc)
            pen.shape(_ellipse(cx, cy, 0.07, 0.07, n=12), _scale(self.acc, 0.8))
        elif acc == "hairclip":
            for k in (0, 1):
                x = -0.5 * hw + 0.08 * k
                pen.shape(np.array([(x - 0.16, -0.55 + 0.05 * k), (x + 0.16, -0.62 + 0.05 * k),
                                    (x + 0.17, -0.58 + 0.05 * k), (x - 0.15, -0.51 + 0.05 * k)]), self.acc,
                          width=self.s.line_width * 0.6)
        elif acc == "headband":
            outer = _ellipse(0.0, -0.05, hw * 0.98, 1.1, n=18, a0=math.pi * 1.08, a1=math.pi * 1.92)
            inner = _ellipse(0.0, -0.05, hw * 0.88, 0.98, n=18, a0=math.pi * 1.92, a1=math.pi * 1.08)
            pen.shape(np.vstack([outer, inner]), self.acc)

    def cat_ears(self) -> None:
        pen, hw = self.pen, self.hair_w
        for sx in (-1, 1):
            ear = np.array([(sx * 0.3 * hw, -0.95), (sx * 0.95 * hw, -1.6), (sx * 0.95 * hw, -0.6)])
            pen.shape(ear, self.hair, outline=self.hair_line)
            inner = np.array([(sx * 0.5 * hw, -0.95), (sx * 0.88 * hw, -1.42), (sx * 0.88 * hw, -0.85)])
            pen.fill(inner, _mix(self.skin, (255, 140, 160), 0.5))
