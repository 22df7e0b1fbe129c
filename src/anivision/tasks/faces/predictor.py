"""The trained face detector as an object, and :func:`load_detector` for every kind of detector.

:class:`LearnedFaceDetector` has the ``detect(image) -> list[Box]`` protocol of
:class:`~anivision.data.faces.CascadeDetector`, so :func:`anivision.data.faces.detect_faces` and
``crop_faces`` take either; it also accepts colour (``colour = True`` tells ``detect_faces`` to
pass RGB), although it was trained to work on greyscale too.

The packaged detector (``learned``) lives in ``anivision/models/weights/face_detector.safetensors``:
EfficientNet-Lite0 (ImageNet weights, Apache-2.0) with a head trained on the face-boxes
illustrations (see the README's face section for its data and licence). Its architecture is in
the file's safetensors metadata, so one file is a whole detector.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from anivision.data.faces import Box, CascadeDetector
from anivision.errors import AnivisionError
from anivision.models.detector import FaceDetectorNet, decode
from anivision.tasks.faces.train import META_FILE, META_KEY, WEIGHTS_FILE, to_input
from anivision.tasks.faces.views import letterbox

#: The packaged detector, inside :mod:`anivision.models`.
PACKAGED_WEIGHTS = "weights/face_detector.safetensors"
#: Default confidence for cropping: the best-F1 threshold on held-out training images (RESULTS.md).
DEFAULT_MIN_SCORE = 0.3
DETECTOR_NAMES = ("learned", "lbp")


class LearnedFaceDetector:
    """A trained :class:`~anivision.models.detector.FaceDetectorNet` behind the ``detect`` protocol.

    Args:
        model: the network (eval mode is set here).
        img_size: long side the image is resized to before detection.
        min_score: detections below this confidence are dropped.
        nms_iou: overlapping detections above this IoU are merged (the best kept).
    """

    colour = True

    def __init__(self, model: FaceDetectorNet, img_size: int = 384, min_score: float = DEFAULT_MIN_SCORE, nms_iou: float = 0.5) -> None:
        if not 0 <= min_score <= 1:
            raise AnivisionError(f"--min-score must be between 0 and 1, got {min_score}")
        if img_size < 64:
            raise AnivisionError(f"--img-size must be at least 64, got {img_size}")
        self.model = model.eval()
        self.img_size = int(img_size)
        self.min_score = float(min_score)
        self.nms_iou = nms_iou

    @torch.inference_mode()
    def detect_array(self, image: np.ndarray | Image.Image) -> np.ndarray:
        """(N, 5) x0, y0, x1, y1, score in pixels of ``image`` ((H, W) grey, (H, W, 3) RGB or PIL)."""
        img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, np.uint8))
        arr, scale = letterbox(img.convert("RGB"), self.img_size)
        hm, ltrb = self.model(to_input(arr))
        det = decode(hm, ltrb, self.min_score, nms_iou=self.nms_iou)[0].numpy().astype(np.float64)
        det[:, :4] /= scale
        det[:, [0, 2]] = det[:, [0, 2]].clip(0, img.width)
        det[:, [1, 3]] = det[:, [1, 3]].clip(0, img.height)
        keep = (det[:, 2] - det[:, 0] >= 1) & (det[:, 3] - det[:, 1] >= 1)
        return det[keep]

    def detect(self, image: np.ndarray) -> list[Box]:
        """Faces in an (H, W) greyscale or (H, W, 3) RGB uint8 image, best first."""
        return [
            Box(int(round(x0)), int(round(y0)), int(round(x1 - x0)), int(round(y1 - y0)), float(s))
            for x0, y0, x1, y1, s in self.detect_array(image)
        ]


def packaged_weights_path() -> Path:
    """Path of the detector shipped with the package."""
    return Path(str(resources.files("anivision.models").joinpath(PACKAGED_WEIGHTS)))


def read_meta(path: Path) -> dict[str, Any]:
    """The detector description of a weights file (its metadata, or ``detector.json`` beside it)."""
    try:
        with safe_open(str(path), "pt") as fh:
            meta = (fh.metadata() or {}).get(META_KEY)
    except Exception as exc:  # noqa: BLE001 - any decoding failure is the file's fault
        raise AnivisionError(f"{path}: not a safetensors weights file ({type(exc).__name__})") from exc
    if meta:
        return json.loads(meta)
    side = path.with_name(META_FILE)
    if side.is_file():
        return json.loads(side.read_text())
    raise AnivisionError(f"{path}: no detector description (neither safetensors metadata nor {META_FILE} beside it)")


def load_learned(path: str | Path | None = None, **settings: Any) -> LearnedFaceDetector:
    """A trained detector from a weights file or run folder (default: the packaged one).

    Args:
        path: ``.safetensors`` file, or a run folder of ``anivision faces train``.
        **settings: ``img_size`` (default: the training size), ``min_score``, ``nms_iou``.
    """
    p = packaged_weights_path() if path is None else Path(path)
    if p.is_dir():
        if not (p / WEIGHTS_FILE).is_file():
            raise AnivisionError(f"{p}: no {WEIGHTS_FILE} (not a finished 'anivision faces train' run)")
        p = p / WEIGHTS_FILE
    if not p.is_file():
        raise AnivisionError(f"{p}: no such detector file")
    meta = read_meta(p)
    model = FaceDetectorNet(meta["backbone"], "none", int(meta["width"]))
    state = {k: v.float() for k, v in load_file(str(p)).items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise AnivisionError(f"{p}: weights do not fit the detector its metadata describes ({str(exc).splitlines()[0]})") from exc
    settings = {k: v for k, v in settings.items() if v is not None}
    settings.setdefault("img_size", int(meta.get("img_size", 384)))
    return LearnedFaceDetector(model, **settings)


def load_detector(name_or_path: str | Path = "learned", min_score: float | None = None, img_size: int | None = None, **cascade: Any) -> Any:
    """Any face detector by name or file, ready for :func:`anivision.data.faces.detect_faces`.

    Args:
        name_or_path: ``learned`` (the packaged detector), ``lbp`` (the packaged LBP cascade), a
            run folder or ``.safetensors`` file of a trained detector, or a cascade ``.xml``.
        min_score: learned detectors: the confidence to keep a face (default 0.3).
        img_size: learned detectors: the long side images are resized to.
        **cascade: cascades: ``scale_factor``, ``min_neighbors``, ``min_size``, ``equalize``.

    Raises:
        AnivisionError: unknown name, missing or unloadable file.
    """
    s = str(name_or_path)
    if s == "lbp" or s.lower().endswith(".xml"):
        return CascadeDetector.from_file(None if s == "lbp" else s, **cascade)
    if s == "learned":
        return load_learned(None, min_score=min_score, img_size=img_size)
    p = Path(s)
    if not p.exists():
        raise AnivisionError(f"--detector {s}: not {' or '.join(DETECTOR_NAMES)}, and no such file or run folder")
    return load_learned(p, min_score=min_score, img_size=img_size)


def export_weights(source: str | Path, dest: str | Path, half: bool = True) -> Path:
    """Write a trained detector (run folder or weights file) as one self-describing safetensors file.

    Args:
        source: a run folder of ``faces train`` or a detector ``.safetensors``.
        dest: the file to write (e.g. the packaged ``face_detector.safetensors``).
        half: store float16 (half the size; detection upcasts to float32).
    """
    src = Path(source)
    src = src / WEIGHTS_FILE if src.is_dir() else src
    meta = read_meta(src)
    state = load_file(str(src))
    if half:
        state = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt", META_KEY: json.dumps(meta)})
    tmp.replace(dest)
    return dest
