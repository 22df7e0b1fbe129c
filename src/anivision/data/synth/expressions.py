"""Sampling the cues of each emotion (brows, eyes, mouth, blush, tears, sweat, veins, gloom).

Cues are sampled, not fixed: each class drops some of its cues now and then and borrows cues of
other classes, so the emotion task is learnable without being trivial.
"""

from __future__ import annotations

import numpy as np

from anivision.data.synth.factors import EMOTIONS, Expression
from anivision.data.synth.sampling import _chance, _u
from anivision.errors import AnivisionError


def sample_expression(emotion: str, rng: np.random.Generator) -> Expression:
    """Draw the cues of one emotion, with cue dropout and cues borrowed from other classes.

    Args:
        emotion: one of :data:`EMOTIONS`.
        rng: the generator to draw from.

    Returns:
        An :class:`Expression`.

    Raises:
        AnivisionError: for an unknown emotion.
    """
    if emotion not in EMOTIONS:
        raise AnivisionError(f"unknown emotion {emotion!r}; expected one of {', '.join(EMOTIONS)}")
    j = lambda s: float(rng.normal(0.0, s))  # noqa: E731  small jitter on every cue
    v: dict = dict(
        emotion=emotion, brow_lift=0.0, brow_weight=1.0, eye_mode="open", eye_open=1.0,
        eye_size=(1.0, 1.0), lid_slant=0.0, lid_smile=0.0, iris_scale=1.0, pupil_scale=0.45,
        gaze=(j(0.15), j(0.1)), red_iris=False, mouth="line", mouth_width=1.0, mouth_curve=0.0,
        mouth_open=0.0, teeth="none", tongue=False, blush=0.0, tears="none", sweat=0,
        vein=False, gloom=False,
    )
    inner = outer = 0.0
    asym = (0.0, 0.0)

    if emotion == "Angry":
        inner, outer = _u(rng, 0.07, 0.16), _u(rng, -0.07, -0.01)
        v.update(brow_weight=_u(rng, 1.2, 1.7), eye_open=_u(rng, 0.6, 0.9),
                 lid_slant=_u(rng, 0.12, 0.35), iris_scale=_u(rng, 0.75, 0.95),
                 pupil_scale=_u(rng, 0.3, 0.5))
        m = rng.random()
        if m < 0.35:
            v.update(mouth="line", mouth_curve=_u(rng, -0.07, -0.02), mouth_width=_u(rng, 0.6, 1.0))
        elif m < 0.7:
            v.update(mouth="open", teeth="full", mouth_open=_u(rng, 0.05, 0.09),
                     mouth_curve=_u(rng, -0.05, 0.0), mouth_width=_u(rng, 0.9, 1.3))
        else:
            v.update(mouth="open", teeth="top", mouth_open=_u(rng, 0.1, 0.18),
                     mouth_curve=_u(rng, -0.07, -0.02), mouth_width=_u(rng, 0.8, 1.2))
        v.update(vein=_chance(rng, 0.45), blush=_u(rng, 0.3, 0.6) if _chance(rng, 0.08) else 0.0,
                 sweat=int(_chance(rng, 0.05)), gloom=_chance(rng, 0.08))
    elif emotion == "Embarrassed":
        inner, outer = _u(rng, -0.07, -0.01), _u(rng, -0.01, 0.04)
        m = rng.random()
        if m < 0.65:
            sx = 1.0 if _chance(rng, 0.5) else -1.0
            v.update(eye_open=_u(rng, 0.65, 0.95), gaze=(sx * _u(rng, 0.55, 1.0), _u(rng, 0.1, 0.6)),
                     lid_slant=_u(rng, -0.12, 0.04))
        elif m < 0.85:
            v.update(eye_mode="closed_squeeze")
        else:
            v.update(eye_mode="closed_happy")
        m = rng.random()
        if m < 0.35:
            v.update(mouth="line", mouth_curve=_u(rng, 0.0, 0.035), mouth_width=_u(rng, 0.45, 0.75))
        elif m < 0.7:
            v.update(mouth="wavy", mouth_width=_u(rng, 0.6, 1.0))
        elif m < 0.85:
            v.update(mouth="open", mouth_open=_u(rng, 0.04, 0.08), mouth_width=_u(rng, 0.35, 0.55))
        else:
            v.update(mouth="cat", mouth_width=_u(rng, 0.6, 0.9))
        v.update(blush=_u(rng, 0.65, 1.0) if _chance(rng, 0.92) else 0.0,
                 sweat=int(_chance(rng, 0.4)), tears="drop" if _chance(rng, 0.04) else "none")
    elif emotion == "Happy":
        inner, outer = _u(rng, -0.03, 0.02), _u(rng, -0.02, 0.03)
        v.update(brow_lift=_u(rng, -0.06, -0.01))
        if _chance(rng, 0.5):
            v.update(eye_mode="closed_happy")
        else:
            v.update(eye_open=_u(rng, 0.75, 1.0), lid_smile=_u(rng, 0.2, 0.5))
        m = rng.random()
        if m < 0.5:
            v.update(mouth="open", mouth_open=_u(rng, 0.08, 0.16), mouth_curve=_u(rng, 0.02, 0.07),
                     mouth_width=_u(rng, 0.9, 1.3), tongue=_chance(rng, 0.6),
                     teeth="top" if _chance(rng, 0.2) else "none")
        elif m < 0.8:
            v.update(mouth="line", mouth_curve=_u(rng, 0.05, 0.09), mouth_width=_u(rng, 0.8, 1.2))
        else:
            v.update(mouth="cat", mouth_width=_u(rng, 0.7, 1.0))
        v.update(blush=_u(rng, 0.25, 0.55) if _chance(rng, 0.3) else 0.0,
                 tears="drop" if _chance(rng, 0.04) else "none")
    elif emotion == "Psycho-Crazy":
        m = rng.random()
        if m < 0.45:  # one brow up, one down
            a, b = _u(rng, 0.05, 0.12), _u(rng, -0.12, -0.05)
            asym = (a, b) if _chance(rng, 0.5) else (b, a)
            inner, outer = 0.0, _u(rng, -0.04, 0.0)
        elif m < 0.75:
            inner, outer = _u(rng, -0.04, 0.0), _u(rng, -0.08, -0.03)
            v.update(brow_lift=_u(rng, -0.06, -0.02))
        else:  # angry-looking brows: overlaps with Angry on purpose
            inner, outer = _u(rng, 0.05, 0.12), _u(rng, -0.05, 0.0)
        m = rng.random()
        if m < 0.5:
            v.update(eye_mode="wide", eye_open=_u(rng, 1.15, 1.45), iris_scale=_u(rng, 0.5, 0.7),
                     pupil_scale=_u(rng, 0.0, 0.12))
        elif m < 0.8:
            v.update(eye_mode="spiral", eye_open=_u(rng, 1.05, 1.3))
        else:
            v.update(eye_open=_u(rng, 0.9, 1.15), iris_scale=_u(rng, 0.7, 0.9),
                     pupil_scale=_u(rng, 0.05, 0.15), lid_slant=_u(rng, 0.05, 0.2))
        if _chance(rng, 0.4):
            big = _u(rng, 1.12, 1.3)
            v.update(eye_size=(big, 1.0) if _chance(rng, 0.5) else (1.0, big))
        v.update(red_iris=_chance(rng, 0.35))
        if _chance(rng, 0.75):
            v.update(mouth="open", teeth="full", mouth_open=_u(rng, 0.05, 0.12),
                     mouth_curve=_u(rng, 0.09, 0.16), mouth_width=_u(rng, 1.4, 1.9),
                     tongue=_chance(rng, 0.15))
        else:  # a wide open smile: overlaps with Happy on purpose
            v.update(mouth="open", mouth_open=_u(rng, 0.1, 0.18), mouth_curve=_u(rng, 0.06, 0.12),
                     mouth_width=_u(rng, 1.2, 1.6), tongue=_chance(rng, 0.5))
        v.update(gloom=_chance(rng, 0.55), blush=_u(rng, 0.4, 0.8) if _chance(rng, 0.25) else 0.0,
                 sweat=int(_chance(rng, 0.1)), vein=_chance(rng, 0.1))
    elif emotion == "Sad":
        inner, outer = _u(rng, -0.13, -0.05), _u(rng, 0.01, 0.07)
        m = rng.random()
        if m < 0.75:
            v.update(eye_open=_u(rng, 0.55, 0.85), lid_slant=_u(rng, -0.3, -0.08),
                     gaze=(j(0.2), _u(rng, 0.0, 0.6)))
        else:
            v.update(eye_mode="closed_sad")
        m = rng.random()
        if m < 0.6:
            v.update(mouth="line", mouth_curve=_u(rng, -0.09, -0.035), mouth_width=_u(rng, 0.7, 1.1))
        elif m < 0.85:
            v.update(mouth="open", mouth_open=_u(rng, 0.07, 0.14), mouth_curve=_u(rng, -0.07, -0.03),
                     mouth_width=_u(rng, 0.8, 1.2))
        else:
            v.update(mouth="wavy", mouth_width=_u(rng, 0.6, 1.0))
        t = rng.random()
        v.update(tears="stream" if t < 0.45 else "drop" if t < 0.85 else "none",
                 gloom=_chance(rng, 0.15), blush=_u(rng, 0.2, 0.5) if _chance(rng, 0.15) else 0.0)
    else:  # Scared
        inner, outer = _u(rng, -0.13, -0.05), _u(rng, -0.08, -0.01)
        v.update(brow_lift=_u(rng, -0.07, -0.02))
        if _chance(rng, 0.85):
            v.update(eye_mode="wide", eye_open=_u(rng, 1.15, 1.4), iris_scale=_u(rng, 0.55, 0.75),
                     pupil_scale=_u(rng, 0.15, 0.35))
        else:
            v.update(eye_open=_u(rng, 0.9, 1.1), pupil_scale=_u(rng, 0.2, 0.35))
        m = rng.random()
        if m < 0.45:
            v.update(mouth="open", mouth_open=_u(rng, 0.1, 0.18), mouth_curve=_u(rng, -0.02, 0.0),
                     mouth_width=_u(rng, 0.45, 0.75))
        elif m < 0.75:
            v.update(mouth="open", mouth_open=_u(rng, 0.09, 0.15), mouth_curve=_u(rng, -0.07, -0.03),
                     mouth_width=_u(rng, 1.0, 1.4), teeth="top" if _chance(rng, 0.4) else "none")
        else:  # wavy mouth: overlaps with Embarrassed on purpose
            v.update(mouth="wavy", mouth_width=_u(rng, 0.7, 1.1))
        v.update(sweat=int(rng.integers(1, 3)) if _chance(rng, 0.8) else 0, gloom=_chance(rng, 0.35),
                 tears="drop" if _chance(rng, 0.2) else "none",
                 blush=_u(rng, 0.2, 0.4) if _chance(rng, 0.05) else 0.0)

    v["brow_inner"] = (inner + asym[0] + j(0.015), inner + asym[1] + j(0.015))
    v["brow_outer"] = (outer + j(0.015), outer + j(0.015))
    return Expression(**v)
