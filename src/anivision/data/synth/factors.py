"""The four groups of factors a face is drawn from, and the names each factor may take.

:class:`Expression` (the emotion and its cues), :class:`Identity` (who is drawn),
:class:`WorkStyle` (how it is drawn) and :class:`Nuisance` (pose, background, JPEG quality),
bundled in :class:`FaceParams`. See :mod:`anivision.data.synth` for how they combine.
"""

from __future__ import annotations

from dataclasses import dataclass

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

RGB = tuple[int, int, int]
HSV = tuple[float, float, float]


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
