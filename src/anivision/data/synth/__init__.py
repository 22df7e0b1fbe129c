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

The package is split by part of the face: :mod:`.factors` (the factor dataclasses and names),
:mod:`.sampling` (identities, work styles, nuisances), :mod:`.expressions` (emotion cues),
:mod:`.drawing` (colours, geometry, the pen), :mod:`.head`, :mod:`.hair`, :mod:`.eyes` and
:mod:`.mouth` (the parts of a face), :mod:`.render` (one image) and :mod:`.datasets` (the
class trees written by :func:`generate`).
"""

from __future__ import annotations

from anivision.data.synth.datasets import MAX_SIZE, MIN_SIZE, _params, generate
from anivision.data.synth.expressions import sample_expression
from anivision.data.synth.factors import (
    ACCESSORIES,
    BACKGROUNDS,
    BANG_STYLES,
    EMOTIONS,
    EYE_STYLES,
    GENERATOR_VERSION,
    HAIR_STYLES,
    SHADINGS,
    TASKS,
    Expression,
    FaceParams,
    Identity,
    Nuisance,
    WorkStyle,
)
from anivision.data.synth.render import render_face
from anivision.data.synth.sampling import sample_identity, sample_nuisance, sample_style

__all__ = [
    "ACCESSORIES",
    "BACKGROUNDS",
    "BANG_STYLES",
    "EMOTIONS",
    "EYE_STYLES",
    "GENERATOR_VERSION",
    "HAIR_STYLES",
    "MAX_SIZE",
    "MIN_SIZE",
    "SHADINGS",
    "TASKS",
    "Expression",
    "FaceParams",
    "Identity",
    "Nuisance",
    "WorkStyle",
    "generate",
    "render_face",
    "sample_expression",
    "sample_identity",
    "sample_nuisance",
    "sample_style",
    "_params",
]
