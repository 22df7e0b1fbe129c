"""Explanations of any images (paths, folders, globs, PIL images, uint8 arrays) by a classifier.

Images are decoded as for prediction (:func:`~anivision.data.inputs.decode_inputs`, then the
eval transform), so the map explains exactly the pixels the model classified; ``image`` on each
:class:`Explanation` is that model-input view (the centre crop, before normalisation).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import v2

from anivision.data.inputs import ImageInput, check_unreadable, decode_inputs
from anivision.data.transforms import DataConfig, cache_size, eval_transform
from anivision.errors import AnivisionError
from anivision.explain.cam import METHODS, explain_batch
from anivision.explain.overlay import overlay

log = logging.getLogger(__name__)


@dataclass
class Explanation:
    """Why a classifier gave one image a class: a Grad-CAM(++) heat map.

    Attributes:
        source: the image's path, or ``<image i>`` for the i-th in-memory image.
        label: the class explained (the predicted one unless a class was named).
        prob: the model's probability for ``label``.
        heatmap: (H, W) float32 in [0, 1] at the model's input size; high = drove ``label``.
        overlay: ``image`` with the heat map blended over it in jet colours (RGB).
        image: the model-input view of the picture (RGB, H x W, before normalisation).
        predicted: the most probable class (equal to ``label`` unless a class was named).
    """

    source: str
    label: str
    prob: float
    heatmap: np.ndarray
    overlay: Image.Image
    image: Image.Image
    predicted: str = ""


def class_index(classes: Sequence[str], class_name: str | None) -> int | None:
    """The index of ``class_name`` in ``classes`` (None for None).

    Raises:
        AnivisionError: not one of the classes (the message lists them).
    """
    if class_name is None:
        return None
    if class_name not in classes:
        shown = ", ".join(classes[:20]) + (", ..." if len(classes) > 20 else "")
        raise AnivisionError(f"--class {class_name!r}: not a class of this model (classes: {shown})")
    return list(classes).index(class_name)


def explain_pixels(
    model: nn.Module, classes: Sequence[str], data_config: DataConfig, pixels: np.ndarray, sources: Sequence[str],
    method: str = "gradcam++", target: int | Sequence[int] | None = None, batch_size: int = 16,
) -> list[Explanation]:
    """Explanations of decoded (N, S, S, 3) uint8 images (S = the cache size of ``data_config``).

    ``target``: None explains each image's predicted class, an int that class for all, a
    sequence one class per image.
    """
    if method not in METHODS:
        raise AnivisionError(f"--method {method}: expected one of {', '.join(METHODS)}")
    crop, norm = v2.CenterCrop(data_config.img_size), eval_transform(data_config)
    device = next(model.parameters()).device
    out: list[Explanation] = []
    for start in range(0, len(pixels), max(1, batch_size)):
        raw = torch.from_numpy(np.ascontiguousarray(pixels[start:start + batch_size])).permute(0, 3, 1, 2)
        x = norm(raw).to(device)
        model.eval()
        with torch.no_grad():
            probs = torch.softmax(model(x).float(), dim=1).cpu().numpy()
        pred = probs.argmax(axis=1)
        if target is None:
            chosen = pred
        elif isinstance(target, (int, np.integer)):
            chosen = np.full(len(pred), int(target))
        else:
            chosen = np.asarray(target[start:start + len(pred)], dtype=np.int64)
        maps = explain_batch(model, x, [int(c) for c in chosen], method)
        views = crop(raw).permute(0, 2, 3, 1).numpy()
        for j in range(len(pred)):
            img = Image.fromarray(np.ascontiguousarray(views[j]), "RGB")
            c = int(chosen[j])
            out.append(Explanation(sources[start + j], classes[c], float(probs[j, c]), maps[j], overlay(img, maps[j]), img, classes[int(pred[j])]))
    return out


def explain_images(
    model: nn.Module, classes: Sequence[str], data_config: DataConfig, images: ImageInput | Iterable[ImageInput],
    method: str = "gradcam++", class_name: str | None = None, batch_size: int = 16, skip_unreadable: bool = False,
) -> list[Explanation]:
    """One :class:`Explanation` per readable input, in input order (folders sorted).

    Raises:
        AnivisionError: unknown method or class name, an unreadable file (unless
            ``skip_unreadable``: then it is logged as skipped), a bad array, pytorch-grad-cam missing.
    """
    if method not in METHODS:
        raise AnivisionError(f"--method {method}: expected one of {', '.join(METHODS)}")
    target = class_index(classes, class_name)
    decoded = decode_inputs(images, cache_size(data_config))
    check_unreadable(decoded.errors, skip_unreadable)
    rows = np.flatnonzero(decoded.valid)
    if len(rows) == 0:
        return []
    return explain_pixels(model, classes, data_config, decoded.pixels[rows], [decoded.paths[i] for i in rows], method, target, batch_size)
