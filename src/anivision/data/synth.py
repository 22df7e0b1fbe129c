"""Procedural cartoon faces for the emotion, character and style tasks (``anivision synth``).

Every image is drawn from four groups of factors:

* **expression** (:class:`Expression`): the six emotion classes of the emotion study, each with
  its visual cues (brows, eye shape, mouth, blush, tears, sweat drops, anger veins, gloom
  lines). Cues are sampled, not fixed: each class drops some of its cues now and then and
  borrows cues of other classes (angry and crazy faces both show teeth, scared and crazy
  faces both have wide eyes, happy and embarrassed faces both smile and blush), so the task is
  learnable without being trivial.
* **identity** (:class:`Identity`): hair style and colour, bangs, eye colour, skin, face shape,
  accessory, clothes. A character role is one identity.
* **work style** (:class:`WorkStyle`): line weight and colour, palette saturation and
  brightness, shading (flat / cel / gradient), eye convention (big anime eyes / almond / dot),
  proportions. A "work" (an artist or a series) is one style.
* **nuisance** (:class:`Nuisance`): rotation, scale, shift, background, JPEG quality.

Faces are drawn with :mod:`PIL.ImageDraw` on a supersampled canvas and downscaled with
LANCZOS for anti-aliasing. Every shape is a polygon in face units (the face's half-height is
1), mapped to pixels by one affine transform, so rotation and scale cost nothing extra.

Each image has its own :class:`numpy.random.Generator`, seeded from ``(seed, task, class,
image)`` through :class:`numpy.random.SeedSequence`, so any subset of a data set (or a
parallel run) reproduces exactly the same files, and a seed gives byte-identical JPEGs with
the same Pillow and libjpeg.
"""

from __future__ import annotations

import colorsys
import functools
import io
import json
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from anivision.errors import AnivisionError

# Bump when a change alters the pixels a given seed produces.
GENERATOR_VERSION = "1"

EMOTIONS: tuple[str, ...] = ("Angry", "Embarrassed", "Happy", "Psycho-Crazy", "Sad", "Scared")
TASKS: tuple[str, ...] = ("emotion", "character", "style")

HAIR_STYLES: tuple[str, ...] = ("short", "bob", "long", "twintails", "ponytail", "spiky")
BANG_STYLES: tuple[str, ...] = ("blunt", "pointed", "swept")
ACCESSORIES: tuple[str, ...] = ("none", "glasses", "bow", "hairclip", "headband", "cat_ears")
SHADINGS: tuple[str, ...] = ("flat", "cel", "gradient")
EYE_STYLES: tuple[str, ...] = ("anime", "almond", "dot")
BACKGROUNDS: tuple[str, ...] = ("solid", "gradient", "dots", "stripes")

MIN_SIZE = 16
MAX_SIZE = 1024

RGB = tuple[int, int, int]
HSV = tuple[float, float, float]

# Task codes and stream codes in the seed sequence. Fixed integers (never hash(), which is
# salted per process) so the same seed gives the same images in every run.
_TASK_CODE = {"emotion": 1, "character": 2, "style": 3}
_STREAM_IMAGE, _STREAM_ROLE, _STREAM_WORK = 0, 1, 2

# Files this generator writes; only these are removed when a folder is regenerated.
_FILE_RE = re.compile(r"^[A-Za-z0-9_\-]+_\d{5}\.jpg$")


# --------------------------------------------------------------------------------------------
# Factors
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """Who is drawn: what stays the same for one character across images.

    Attributes:
        hair_style: one of :data:`HAIR_STYLES`.
        bangs: one of :data:`BANG_STYLES`.
        hair_hsv: hair colour as HSV in [0, 1].
        eye_hue: iris hue in [0, 1).
        skin_hsv: skin colour as HSV in [0, 1].
        face_width: half-width of the face in face units (half-height of the skull is 1).
        chin: 0 round, 1 pointed.
        chin_length: distance from the eye line to the chin in face units.
        accessory: one of :data:`ACCESSORIES`.
        accessory_hue: hue of bows, clips, headbands, hair ties.
        clothes_hsv: shirt colour as HSV.
        collar: 0 V-neck, 1 sailor collar, 2 shirt collar.
        ahoge: a single upright strand of hair on top.
    """

    hair_style: str
    bangs: str
    hair_hsv: HSV
    eye_hue: float
    skin_hsv: HSV
    face_width: float
    chin: float
    chin_length: float
    accessory: str
    accessory_hue: float
    clothes_hsv: HSV
    collar: int
    ahoge: bool


@dataclass(frozen=True)
class WorkStyle:
    """How it is drawn: what stays the same for one work (artist or series).

    Attributes:
        line_width: outline width in face units.
        line_color: outline colour.
        saturation: multiplier on every colour's saturation (muted < 1 < vivid).
        brightness: multiplier on every colour's value.
        hue_shift: added to every hue, a palette tint.
        shading: one of :data:`SHADINGS`.
        light_side: -1 light from the right (shadow on the left), +1 the other way.
        eye_style: one of :data:`EYE_STYLES`.
        eye_scale: multiplier on eye size.
        eye_height: y of the eye centres in face units (positive is down).
        eye_spacing: eye centre distance from the midline, as a fraction of face width.
        highlights: number of white highlights drawn in each eye (0-2).
        mouth_scale: multiplier on mouth width.
    """

    line_width: float
    line_color: RGB
    saturation: float
    brightness: float
    hue_shift: float
    shading: str
    light_side: int
    eye_style: str
    eye_scale: float
    eye_height: float
    eye_spacing: float
    highlights: int
    mouth_scale: float


@dataclass(frozen=True)
class Nuisance:
    """Picture-taking factors unrelated to the label.

    Attributes:
        rotation: in-plane rotation in degrees (positive is clockwise on screen).
        scale: multiplier on face size.
        shift: (dx, dy) of the face centre as a fraction of the image size.
        background: one of :data:`BACKGROUNDS`.
        bg_colors: the two background colours.
        bg_angle: gradient or stripe direction in radians.
        jpeg_quality: JPEG quality (1-95) the image is saved with.
    """

    rotation: float
    scale: float
    shift: tuple[float, float]
    background: str
    bg_colors: tuple[RGB, RGB]
    bg_angle: float
    jpeg_quality: int


@dataclass(frozen=True)
class Expression:
    """The emotion and the cues that show it.

    Offsets are in face units; positive y is down.

    Attributes:
        emotion: one of :data:`EMOTIONS`.
        brow_inner: vertical offset of the inner brow ends (left eye, right eye).
        brow_outer: vertical offset of the outer brow ends (left eye, right eye).
        brow_lift: vertical offset of both brows.
        brow_weight: multiplier on brow thickness.
        eye_mode: "open", "wide", "spiral", "closed_happy", "closed_squeeze" or "closed_sad".
        eye_open: multiplier on eye opening.
        eye_size: multiplier on each eye's size (left, right); unequal for crazy faces.
        lid_slant: shear of the eye; > 0 raises the outer corner (angry), < 0 lowers it (sad).
        lid_smile: how far the lower lid is pushed up (smiling eyes), 0-1.
        iris_scale: multiplier on iris size (small iris = more white = shock).
        pupil_scale: pupil radius as a fraction of the iris radius.
        gaze: (x, y) gaze offset in [-1, 1]; x > 0 looks to the viewer's right.
        red_iris: replace the iris colour by red (crazy faces).
        mouth: "line", "wavy", "cat" or "open".
        mouth_width: multiplier on mouth width.
        mouth_curve: > 0 raises the mouth corners (smile), < 0 lowers them (frown).
        mouth_open: height of an open mouth in face units.
        teeth: "none", "top" (upper teeth band) or "full" (gritted teeth / grin).
        tongue: draw a tongue in an open mouth.
        blush: 0 none, up to 1 strong.
        tears: "none", "drop" or "stream".
        sweat: number of sweat drops (0-2).
        vein: anger vein mark on the forehead.
        gloom: vertical gloom lines over the upper face.
    """

    emotion: str
    brow_inner: tuple[float, float]
    brow_outer: tuple[float, float]
    brow_lift: float
    brow_weight: float
    eye_mode: str
    eye_open: float
    eye_size: tuple[float, float]
    lid_slant: float
    lid_smile: float
    iris_scale: float
    pupil_scale: float
    gaze: tuple[float, float]
    red_iris: bool
    mouth: str
    mouth_width: float
    mouth_curve: float
    mouth_open: float
    teeth: str
    tongue: bool
    blush: float
    tears: str
    sweat: int
    vein: bool
    gloom: bool


@dataclass(frozen=True)
class FaceParams:
    """Everything :func:`render_face` needs to draw one face."""

    expression: Expression
    identity: Identity
    style: WorkStyle
    nuisance: Nuisance


# --------------------------------------------------------------------------------------------
# Sampling the factors
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


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


class _Face:
    """Draws one face; a class only to share the pen, colours and geometry between parts."""

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

    # ---- hair ----------------------------------------------------------------------------------

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

    # ---- eyes ----------------------------------------------------------------------------------

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

    # ---- mouth, cheeks -------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# Data sets
# --------------------------------------------------------------------------------------------


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *key]))


def _names(prefix: str, n: int) -> list[str]:
    width = max(2, len(str(n - 1)))
    return [f"{prefix}_{k:0{width}d}" for k in range(n)]


@dataclass(frozen=True)
class _Job:
    """One image to draw: where it goes and the keys its parameters are derived from."""

    rel_dir: str
    name: str
    keys: tuple[int, ...]


def _params(task: str, seed: int, keys: tuple[int, ...]) -> tuple[FaceParams, np.random.Generator]:
    """Parameters and render generator of one image, from its keys alone."""
    code = _TASK_CODE[task]
    if task == "emotion":
        c, i = keys
        rng = _rng(seed, code, _STREAM_IMAGE, c, i)
        identity, style = sample_identity(rng), sample_style(rng)
        expression = sample_expression(EMOTIONS[c], rng)
    elif task == "character":
        c, i = keys
        base = sample_identity(_rng(seed, code, _STREAM_ROLE, c))
        rng = _rng(seed, code, _STREAM_IMAGE, c, i)
        identity, style = _vary_identity(base, rng), sample_style(rng)
        expression = sample_expression(EMOTIONS[int(rng.integers(len(EMOTIONS)))], rng)
    else:
        w, r, i = keys
        work = sample_style(_rng(seed, code, _STREAM_WORK, w))
        base = sample_identity(_rng(seed, code, _STREAM_ROLE, w, r))
        rng = _rng(seed, code, _STREAM_IMAGE, w, r, i)
        identity, style = _vary_identity(base, rng), _vary_style(work, rng)
        expression = sample_expression(EMOTIONS[int(rng.integers(len(EMOTIONS)))], rng)
    return FaceParams(expression, identity, style, sample_nuisance(rng)), rng


def _jobs(task: str, n_per_class: int, n_classes: int, n_works: int, roles_per_work: int) -> Iterator[_Job]:
    if task == "emotion":
        for c, name in enumerate(EMOTIONS):
            for i in range(n_per_class):
                yield _Job(name, f"{name}_{i:05d}.jpg", (c, i))
    elif task == "character":
        for c, name in enumerate(_names("role", n_classes)):
            for i in range(n_per_class):
                yield _Job(name, f"{name}_{i:05d}.jpg", (c, i))
    else:
        roles = _names("role", roles_per_work)
        for w, work in enumerate(_names("work", n_works)):
            for r, role in enumerate(roles):
                for i in range(n_per_class):
                    yield _Job(f"{work}/{role}", f"{role}_{i:05d}.jpg", (w, r, i))


def _encode_jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    # Every encoder option fixed, so bytes depend only on pixels and quality.
    img.save(buf, format="JPEG", quality=quality, subsampling=2, optimize=False, progressive=False)
    return buf.getvalue()


def _remove_previous(out: Path) -> None:
    """Delete the images a previous run listed in its synth.json, so a rerun gives the same tree.

    Only files named like ours, in folders that run wrote, are removed; anything else the
    user put there is left alone.
    """
    meta = out / "synth.json"
    if not meta.is_file():
        return
    try:
        counts = json.loads(meta.read_text(encoding="utf-8")).get("counts", {})
    except (OSError, ValueError, AttributeError):
        return
    if not isinstance(counts, dict):
        return
    for rel in counts:
        rel_path = Path(str(rel))
        if rel_path.is_absolute() or ".." in rel_path.parts:
            continue
        folder = out / rel_path
        if not folder.is_dir():
            continue
        for f in folder.iterdir():
            if f.is_file() and _FILE_RE.match(f.name):
                f.unlink()
        for d in (folder, folder.parent):
            if d != out and d.is_dir() and not any(d.iterdir()):
                d.rmdir()


def _check(task: str, out: Path, n_per_class: int, size: int, seed: int, n_classes: int | None,
           n_works: int, roles_per_work: int) -> None:
    if task not in TASKS:
        raise AnivisionError(f"unknown synth task {task!r}; expected one of {', '.join(TASKS)}")
    if n_per_class < 1:
        raise AnivisionError(f"n-per-class must be at least 1, got {n_per_class}")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise AnivisionError(f"size must be between {MIN_SIZE} and {MAX_SIZE} pixels, got {size}")
    if seed < 0:
        raise AnivisionError(f"seed must be a non-negative integer, got {seed}")
    if n_classes is not None and task != "character":
        raise AnivisionError(f"n-classes applies to the character task only, not {task!r}")
    if n_classes is not None and n_classes < 1:
        raise AnivisionError(f"n-classes must be at least 1, got {n_classes}")
    if task == "style" and (n_works < 1 or roles_per_work < 1):
        raise AnivisionError(f"n-works and roles-per-work must be at least 1, got {n_works} and {roles_per_work}")
    if out.exists() and not out.is_dir():
        raise AnivisionError(f"output path {out} exists and is not a folder")


def generate(
    task: str,
    out: str | Path,
    n_per_class: int = 60,
    size: int = 128,
    seed: int = 0,
    *,
    n_classes: int | None = None,
    n_works: int = 8,
    roles_per_work: int = 4,
    progress: bool = True,
) -> dict:
    """Write a synthetic data set of cartoon faces.

    Layouts: ``emotion`` → ``out/<Emotion>/``; ``character`` → ``out/role_NN/``; ``style`` →
    ``out/work_NN/role_NN/``. Files are ``<class>_<index:05d>.jpg`` (for style, the class is the
    role). ``out/synth.json`` records the task, seed, size, counts and generator version.
    The same arguments give byte-identical files; rerunning into a folder that holds an
    earlier output first removes the images that output listed.

    Args:
        task: ``"emotion"``, ``"character"`` or ``"style"``.
        out: output folder (created if missing).
        n_per_class: images per class (per role for style).
        size: image width and height in pixels, 16-1024.
        seed: non-negative seed of the whole data set.
        n_classes: number of roles for ``character`` (default 8); not allowed otherwise.
        n_works: number of works (rendering styles) for ``style``.
        roles_per_work: identities per work for ``style``.
        progress: show a tqdm progress bar.

    Returns:
        Summary dict: ``task``, ``out``, ``seed``, ``size``, ``n_per_class``, ``n_images``,
        ``counts`` (class folder relative to ``out`` → images), ``version``, and
        ``n_classes`` / ``n_works`` + ``roles_per_work`` where they apply.

    Raises:
        AnivisionError: for bad arguments or an output path that is a file.
    """
    out = Path(out)
    _check(task, out, n_per_class, size, seed, n_classes, n_works, roles_per_work)
    n_classes = 8 if n_classes is None else n_classes
    out.mkdir(parents=True, exist_ok=True)
    _remove_previous(out)

    jobs = list(_jobs(task, n_per_class, n_classes, n_works, roles_per_work))
    counts: dict[str, int] = {}
    for job in tqdm(jobs, desc=f"synth {task}", unit="img", disable=not progress):
        folder = out / job.rel_dir
        if job.rel_dir not in counts:
            folder.mkdir(parents=True, exist_ok=True)
            counts[job.rel_dir] = 0
        params, rng = _params(task, seed, job.keys)
        img = render_face(params, size, rng)
        (folder / job.name).write_bytes(_encode_jpeg(img, params.nuisance.jpeg_quality))
        counts[job.rel_dir] += 1

    meta: dict = {"task": task, "seed": seed, "size": size, "n_per_class": n_per_class}
    if task == "character":
        meta["n_classes"] = n_classes
    if task == "style":
        meta.update(n_works=n_works, roles_per_work=roles_per_work)
    meta.update(n_images=len(jobs), counts=counts, version=GENERATOR_VERSION)
    # No paths or times in the file, so two runs give identical bytes wherever they write.
    (out / "synth.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return {**meta, "out": str(out)}
