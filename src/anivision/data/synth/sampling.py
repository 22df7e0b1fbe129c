"""Drawing identities, work styles and nuisances at random, and varying them per image.

Every draw comes from the :class:`numpy.random.Generator` passed in; the order of the draws is
part of the output (a seed's images depend on it), so keep it when editing.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from anivision.data.synth.drawing import _hsv_rgb
from anivision.data.synth.factors import (
    ACCESSORIES,
    BACKGROUNDS,
    BANG_STYLES,
    EYE_STYLES,
    HAIR_STYLES,
    HSV,
    RGB,
    SHADINGS,
    Identity,
    Nuisance,
    WorkStyle,
)


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _pick(rng: np.random.Generator, options: tuple | list, p: list[float] | None = None):
    # One uniform draw and a linear scan: Generator.choice(p=...) costs ~40 us a call.
    if p is None:
        return options[int(rng.integers(len(options)))]
    r, acc = float(rng.random()), 0.0
    for option, weight in zip(options, p):
        acc += weight
        if r < acc:
            return option
    return options[-1]


def _chance(rng: np.random.Generator, p: float) -> bool:
    return bool(rng.random() < p)


# Natural hair colours (brown, black, blonde, chestnut, silver) as HSV; the rest is any hue.
_NATURAL_HAIR: tuple[HSV, ...] = (
    (0.07, 0.55, 0.38),
    (0.62, 0.30, 0.18),
    (0.12, 0.45, 0.95),
    (0.05, 0.65, 0.55),
    (0.60, 0.06, 0.88),
)

_LINE_COLORS: tuple[RGB, ...] = ((20, 20, 25), (62, 38, 30), (34, 36, 82), (70, 38, 70), (95, 95, 100))


def sample_identity(rng: np.random.Generator) -> Identity:
    """Draw a random character identity.

    Args:
        rng: the generator to draw from.

    Returns:
        An :class:`Identity`.
    """
    hair_style = _pick(rng, HAIR_STYLES)
    bangs = "pointed" if hair_style == "spiky" else _pick(rng, BANG_STYLES)
    if _chance(rng, 0.35):
        h, s, v = _NATURAL_HAIR[int(rng.integers(len(_NATURAL_HAIR)))]
        hair = (h, s * _u(rng, 0.85, 1.15), v * _u(rng, 0.9, 1.05))
    else:
        hair = (_u(rng, 0.0, 1.0), _u(rng, 0.45, 0.8), _u(rng, 0.6, 0.95))
    # Mostly light anime skin; sometimes tanned.
    if _chance(rng, 0.15):
        skin = (_u(rng, 0.05, 0.08), _u(rng, 0.35, 0.5), _u(rng, 0.7, 0.85))
    else:
        skin = (_u(rng, 0.045, 0.085), _u(rng, 0.1, 0.3), _u(rng, 0.9, 1.0))
    return Identity(
        hair_style=hair_style,
        bangs=bangs,
        hair_hsv=hair,
        eye_hue=_u(rng, 0.0, 1.0),
        skin_hsv=skin,
        face_width=_u(rng, 0.8, 0.98),
        chin=_u(rng, 0.0, 1.0),
        chin_length=_u(rng, 1.05, 1.25),
        accessory=_pick(rng, ACCESSORIES, p=[0.35, 0.15, 0.15, 0.12, 0.11, 0.12]),
        accessory_hue=_u(rng, 0.0, 1.0),
        clothes_hsv=(_u(rng, 0.0, 1.0), _u(rng, 0.15, 0.8), _u(rng, 0.3, 0.92)),
        collar=int(rng.integers(3)),
        ahoge=_chance(rng, 0.3),
    )


def sample_style(rng: np.random.Generator) -> WorkStyle:
    """Draw a random rendering style (one "work").

    Args:
        rng: the generator to draw from.

    Returns:
        A :class:`WorkStyle`.
    """
    eye_style = _pick(rng, EYE_STYLES, p=[0.5, 0.3, 0.2])
    return WorkStyle(
        line_width=_u(rng, 0.016, 0.05),
        line_color=_LINE_COLORS[int(rng.integers(len(_LINE_COLORS)))],
        # Log-uniform so muted and vivid palettes are equally common.
        saturation=float(np.exp(rng.uniform(np.log(0.3), np.log(1.25)))),
        brightness=_u(rng, 0.85, 1.1),
        hue_shift=_u(rng, -0.04, 0.04),
        shading=_pick(rng, SHADINGS),
        light_side=1 if _chance(rng, 0.5) else -1,
        eye_style=eye_style,
        eye_scale=_u(rng, 0.8, 1.25),
        eye_height=_u(rng, 0.08, 0.22),
        eye_spacing=_u(rng, 0.4, 0.52),
        highlights=int(rng.integers(1, 3)) if eye_style == "anime" else int(rng.integers(0, 2)),
        mouth_scale=_u(rng, 0.8, 1.2),
    )


def _random_color(rng: np.random.Generator) -> RGB:
    # Mostly pale backgrounds, like character art; sometimes saturated or dark.
    if _chance(rng, 0.7):
        hsv = (_u(rng, 0, 1), _u(rng, 0.0, 0.35), _u(rng, 0.8, 1.0))
    else:
        hsv = (_u(rng, 0, 1), _u(rng, 0.3, 0.9), _u(rng, 0.25, 0.9))
    return _hsv_rgb(hsv)


def sample_nuisance(rng: np.random.Generator) -> Nuisance:
    """Draw random pose, background and JPEG quality.

    Args:
        rng: the generator to draw from.

    Returns:
        A :class:`Nuisance`.
    """
    return Nuisance(
        rotation=float(np.clip(rng.normal(0.0, 7.0), -18.0, 18.0)),
        scale=_u(rng, 0.82, 1.08),
        shift=(_u(rng, -0.06, 0.06), _u(rng, -0.05, 0.05)),
        background=_pick(rng, BACKGROUNDS, p=[0.3, 0.3, 0.2, 0.2]),
        bg_colors=(_random_color(rng), _random_color(rng)),
        bg_angle=_u(rng, 0.0, 2 * math.pi),
        jpeg_quality=int(rng.integers(55, 96)),
    )


def _vary_identity(identity: Identity, rng: np.random.Generator) -> Identity:
    # The same character drawn twice is never exactly the same: small colour drift, and an
    # accessory left off now and then.
    h, s, val = identity.hair_hsv
    hair = ((h + float(rng.normal(0.0, 0.01))) % 1.0, s, val)
    accessory = "none" if _chance(rng, 0.08) else identity.accessory
    return replace(identity, hair_hsv=hair, accessory=accessory)


def _vary_style(style: WorkStyle, rng: np.random.Generator) -> WorkStyle:
    # One artist's pages still differ a little from image to image.
    return replace(
        style,
        line_width=style.line_width * _u(rng, 0.9, 1.1),
        saturation=style.saturation * _u(rng, 0.93, 1.07),
        eye_scale=style.eye_scale * _u(rng, 0.96, 1.04),
    )
