"""Images given to a model at inference time: files, folders, globs, PIL images or numpy arrays.

Every way in ends in the same place as training data: an RGB image (any PIL mode converted by
:func:`~anivision.data.images.to_rgb`, alpha composited on white), resized on its shorter side
and centre-cropped to the cache size by :func:`~anivision.data.cache.resize_square`, as uint8.
The eval transform then runs on that array. So ``anivision predict``, the Python API and
training all see exactly the same pixels for the same picture.
"""

from __future__ import annotations

import logging
import os
from typing import Iterable, Mapping, Sequence, Union

import numpy as np
from PIL import Image

from anivision.data.cache import DecodedImages, decode_file, decode_into, resize_square
from anivision.data.folder import expand_inputs
from anivision.data.images import LARGE_PIXELS, reduce_for, to_rgb
from anivision.errors import AnivisionError

#: One image: a file path (or folder or glob pattern, which may stand for many), a PIL image of
#: any mode, or a uint8 numpy array (H, W), (H, W, 1), (H, W, 3) RGB or (H, W, 4) RGBA.
ImageInput = Union[str, "os.PathLike[str]", Image.Image, np.ndarray]

log = logging.getLogger(__name__)


def check_unreadable(errors: Mapping[str, str], skip_unreadable: bool = False) -> None:
    """Raise on the first unreadable input (``errors``: input -> reason), or with
    ``skip_unreadable`` log each one as skipped: never dropped silently.

    Raises:
        AnivisionError: an input could not be read, naming it (and how many more).
    """
    if errors and not skip_unreadable:
        first = next(iter(errors.values()))
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise AnivisionError(f"{first}{more}; pass skip_unreadable=True to use the others")
    for reason in errors.values():
        log.warning("skipped: %s", reason)


def array_to_image(arr: np.ndarray) -> Image.Image:
    """A PIL image of a uint8 (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) array.

    Raises:
        AnivisionError: another dtype or shape (a float array is ambiguous: 0-1 or 0-255?).
    """
    if arr.dtype != np.uint8:
        raise AnivisionError(f"numpy image of dtype {arr.dtype}: expected uint8 pixels 0-255 (use (x * 255).astype(np.uint8) for 0-1 floats)")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        return Image.fromarray(arr, mode="L")
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        return Image.fromarray(np.ascontiguousarray(arr), mode="RGB" if arr.shape[2] == 3 else "RGBA")
    raise AnivisionError(f"numpy image of shape {arr.shape}: expected (H, W), (H, W, 3) or (H, W, 4)")


def collect_inputs(images: ImageInput | Iterable[ImageInput]) -> list[ImageInput]:
    """A flat list of single images: folders and globs expanded (sorted), in-memory images kept.

    Raises:
        AnivisionError: a path matches nothing, or no image at all was given.
    """
    if isinstance(images, (str, os.PathLike, Image.Image, np.ndarray)):
        items: Sequence[ImageInput] = [images]
    else:
        items = list(images)
    out: list[ImageInput] = []
    for item in items:
        if isinstance(item, (str, os.PathLike)):
            out.extend(expand_inputs([os.fspath(item)]))
        elif isinstance(item, (Image.Image, np.ndarray)):
            out.append(item)
        else:
            raise AnivisionError(f"cannot read an image from a {type(item).__name__}: give a path, a PIL image or a uint8 numpy array")
    if not out:
        raise AnivisionError("no images given")
    return out


def input_name(item: ImageInput, index: int) -> str:
    """How results name an input: its path, or ``<image i>`` for an in-memory image."""
    return os.fspath(item) if isinstance(item, (str, os.PathLike)) else f"<image {index}>"


def _decode_item(item: ImageInput, size: int) -> tuple[np.ndarray | None, str | None]:
    if isinstance(item, (str, os.PathLike)):
        return decode_file(os.fspath(item), size)  # the training pipeline's own decoder
    img = array_to_image(item) if isinstance(item, np.ndarray) else item
    if img.size[0] * img.size[1] > LARGE_PIXELS:
        img = reduce_for(img, size)  # convert a huge in-memory image after reducing it, not before
    return resize_square(to_rgb(img), size), None


def decode_inputs(images: ImageInput | Iterable[ImageInput], size: int, progress: bool = False) -> DecodedImages:
    """Decode any mix of inputs to (N, size, size, 3) uint8, as training data is decoded.

    Unreadable files are marked invalid with their reason (``errors``), never silently dropped;
    a bad in-memory image (wrong dtype or shape) raises at once, since the caller made it.

    Returns:
        :class:`DecodedImages` whose ``paths`` are the input names (see :func:`input_name`).
    """
    items = collect_inputs(images)
    for item in items:
        if isinstance(item, np.ndarray):
            array_to_image(item)  # validate up front: one clear error, not a worker traceback
    names = [input_name(it, i) for i, it in enumerate(items)]
    pixels = np.zeros((len(items), size, size, 3), dtype=np.uint8)
    valid, errors = decode_into(pixels, items, names, lambda it: _decode_item(it, size), progress, "decode")
    return DecodedImages(pixels, valid, errors, names)
