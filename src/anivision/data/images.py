"""Reading images of any PIL mode as RGB, and telling images from other files."""

from __future__ import annotations

import threading
import warnings
from contextlib import nullcontext
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

from anivision.errors import AnivisionError

# Extensions accepted as images when a folder is scanned (lower case, with the dot).
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")

# Truncated files must fail loudly, never decode as half-grey images.
ImageFile.LOAD_TRUNCATED_IMAGES = False

#: Images above this many pixels (4096 x 4096) are "large": decoded one at a time in the whole
#: process (a 13000 x 13000 PNG is 0.5 GB of RGB), reduced right after decoding, and a JPEG is
#: decoded at a reduced scale (``Image.draft``). Smaller images decode exactly as before.
LARGE_PIXELS = 4096 * 4096
#: The resize after decoding reduces by box averaging down to this many times the target side
#: first (as PIL's ``resize(reducing_gap=3.0)`` does), so large images give the same pixels.
REDUCING_GAP = 3.0
_LARGE_DECODE = threading.BoundedSemaphore(1)


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


def load_image(path: str | Path, min_side: int | None = None) -> Image.Image:
    """Decode an image file fully and return it as RGB.

    GIFs and other multi-frame files give their first frame.

    Args:
        path: image file.
        min_side: the caller needs only this many pixels on the shorter side (then resizes):
            a large image (over :data:`LARGE_PIXELS`) is then decoded at a reduced scale (JPEG's
            ``draft``) or reduced right after decoding, so its memory stays bounded. ``None``
            decodes at full size.

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
                large = im.size[0] * im.size[1] > LARGE_PIXELS
                if large and min_side and im.format == "JPEG":
                    im.draft(im.mode, _draft_size(im.size, min_side))  # DCT scaling: 1/2 to 1/8 size
                with _LARGE_DECODE if large else nullcontext():  # one large image in memory at a time
                    im.load()
                    return to_rgb(reduce_for(im, min_side) if large and min_side else im)
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
    except MemoryError:
        raise AnivisionError(f"{p}: image too large to decode in this machine's memory") from None


def _draft_size(size: tuple[int, int], min_side: int) -> tuple[int, int]:
    """The size to ask ``draft`` for: the shorter side at least ``REDUCING_GAP * min_side``."""
    w, h = size
    k = min(1.0, REDUCING_GAP * min_side / min(w, h))
    return max(1, int(w * k + 0.999)), max(1, int(h * k + 0.999))


def reduce_for(img: Image.Image, min_side: int) -> Image.Image:
    """``img`` reduced by an integer box factor that keeps its shorter side at least
    ``REDUCING_GAP * min_side`` (the factor PIL's ``resize(reducing_gap=3.0)`` would use), so a
    huge image is not held twice through the colour conversion and the resize.

    The reduction runs in horizontal strips whose heights are multiples of the factor: the same
    pixels as ``img.reduce(factor)``, but only a strip is ever copied (PIL's own ``reduce``
    copies the whole image first for RGBA, and ``convert`` does for palette images).
    """
    factor = int(min(img.size) / (REDUCING_GAP * min_side))
    if factor < 2:
        return img
    w, h = img.size
    step = factor * max(1, 256 // factor)  # strips of about 256 rows
    out: Image.Image | None = None
    for y in range(0, h, step):
        strip = img.crop((0, y, w, min(h, y + step)))
        if strip.mode not in _REDUCIBLE:
            strip = to_rgb(strip)  # P, 1, I;16...: reduce does not take these modes
        small = strip.reduce(factor)
        if out is None:
            out = Image.new(small.mode, (-(-w // factor), -(-h // factor)))
        out.paste(small, (0, y // factor))
    assert out is not None
    return out


#: Modes ``Image.reduce`` takes.
_REDUCIBLE = ("L", "LA", "RGB", "RGBA", "RGBa", "La", "I", "F", "CMYK", "YCbCr")
