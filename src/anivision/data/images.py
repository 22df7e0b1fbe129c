"""Reading images of any PIL mode as RGB, and telling images from other files."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

from anivision.errors import AnivisionError

# Extensions accepted as images when a folder is scanned (lower case, with the dot).
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")

# Truncated files must fail loudly, never decode as half-grey images.
ImageFile.LOAD_TRUNCATED_IMAGES = False


def is_image_file(path: str | Path) -> bool:
    """Return True when ``path`` has one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def to_rgb(img: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Convert any PIL image to RGB.

    Alpha (RGBA, LA, P with transparency) is composited on ``background`` (white by default)
    rather than dropped, so transparent regions do not turn black. 16-bit greyscale (I;16, I)
    is scaled down to 8 bits rather than clipped. CMYK goes through PIL's conversion.

    Args:
        img: image in any mode.
        background: RGB colour put behind transparent pixels.

    Returns:
        An RGB image of the same size.
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
        if mode == "RGB":
            return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if mode.startswith("I;16") else max(float(arr.max()), 1.0)
        arr8 = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr8).convert("RGB")
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr8 = ((arr - lo) / max(hi - lo, 1e-12) * 255.0 + 0.5).astype(np.uint8)
        return Image.fromarray(arr8).convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", rgba.size, background + (255,))
        return Image.alpha_composite(base, rgba).convert("RGB")
    return img.convert("RGB")


def load_image(path: str | Path) -> Image.Image:
    """Decode an image file fully and return it as RGB.

    GIFs and other multi-frame files give their first frame.

    Args:
        path: image file.

    Returns:
        An RGB PIL image.

    Raises:
        AnivisionError: the file is missing, empty, truncated or not an image; the message
            names the file and the problem.
    """
    p = Path(path)
    if not p.exists():
        raise AnivisionError(f"{p}: no such file")
    if p.is_dir():
        raise AnivisionError(f"{p}: is a folder, not an image")
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise AnivisionError(f"{p}: cannot read ({exc.strerror or exc})") from exc
    if size == 0:
        raise AnivisionError(f"{p}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. PIL's "Palette images with transparency" notice
            with Image.open(p) as im:
                im.seek(0)
                im.load()
                return to_rgb(im)
    except Image.DecompressionBombError as exc:
        raise AnivisionError(f"{p}: image too large to decode safely ({exc})") from exc
    except OSError as exc:
        msg = str(exc) or type(exc).__name__
        if "cannot identify image file" in msg:
            msg = "not an image PIL can read"
        elif "truncated" in msg.lower():
            msg = "truncated image"
        raise AnivisionError(f"{p}: {msg}") from exc
    except (ValueError, SyntaxError, EOFError) as exc:  # PIL raises these on some corrupt files
        raise AnivisionError(f"{p}: corrupt image ({exc})") from exc
