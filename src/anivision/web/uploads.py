"""Uploads of the web app: a multipart body parsed in memory, each file checked before decoding.

Nothing here touches the disk: the body is read with a byte cap, parsed by python-multipart's
streaming parser into bytes, and each image is opened from memory. An image's dimensions are
checked from its header (PIL's ``Image.open`` reads only the header) before a single pixel is
decoded, so a 20,000 x 20,000 PNG of a few kilobytes is refused without allocating 1.2 GB.

Every problem is an :class:`UploadError` carrying the HTTP status and a one-line message that
the page shows as is.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass, field

from PIL import Image, UnidentifiedImageError

from anivision.data.images import to_rgb
from anivision.extras import require

#: Default cap on one request's body (all files together), in bytes.
MAX_UPLOAD_BYTES = 32 * 1024 * 1024
#: Default cap on one image's pixels (width x height): 40 MP, e.g. 8000 x 5000.
MAX_PIXELS = 40_000_000
#: Default cap on files per request.
MAX_FILES = 16


class UploadError(Exception):
    """A request the app refuses: ``status`` (4xx) and a one-line ``message`` for the page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Part:
    """One part of a multipart body: its form field name, file name (None for a plain field) and bytes."""

    name: str
    filename: str | None
    data: bytes
    headers: dict[str, str] = field(default_factory=dict)


def _param(params: dict[bytes, bytes], key: bytes) -> str | None:
    value = params.get(key)
    return None if value is None else value.decode("utf-8", "replace")


def parse_multipart(body: bytes, content_type: str, max_parts: int = MAX_FILES + 8) -> list[Part]:
    """The parts of a ``multipart/form-data`` body, in memory.

    Raises:
        UploadError: not multipart form data, no boundary, a malformed body or too many parts.
    """
    pm = require("python_multipart", "web", "anivision serve")
    mtype, params = pm.multipart.parse_options_header(content_type or "")
    if mtype != b"multipart/form-data" or b"boundary" not in params:
        raise UploadError(400, "send the images as multipart/form-data (a form with a file field named 'files')")
    parts: list[Part] = []
    state: dict = {"field": b"", "value": b"", "headers": {}, "chunks": []}

    def on_part_begin() -> None:
        if len(parts) >= max_parts:
            raise UploadError(413, f"too many parts in one request (at most {max_parts})")
        state["headers"], state["chunks"] = {}, []

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["field"].decode("latin-1").lower()] = state["value"].decode("utf-8", "replace")
        state["field"], state["value"] = b"", b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        state["chunks"].append(data[start:end])

    def on_part_end() -> None:
        headers = state["headers"]
        _disp, dparams = pm.multipart.parse_options_header(headers.get("content-disposition", ""))
        parts.append(Part(_param(dparams, b"name") or "", _param(dparams, b"filename"), b"".join(state["chunks"]), headers))

    callbacks = {
        "on_part_begin": on_part_begin, "on_part_data": on_part_data, "on_part_end": on_part_end,
        "on_header_field": on_header_field, "on_header_value": on_header_value, "on_header_end": on_header_end,
    }
    parser = pm.multipart.MultipartParser(params[b"boundary"], callbacks)
    try:
        parser.write(body)
        parser.finalize()
    except UploadError:
        raise
    except Exception as exc:  # noqa: BLE001 - python-multipart raises several kinds on a malformed body
        raise UploadError(400, f"malformed multipart body ({type(exc).__name__}: {exc})") from exc
    return parts


def image_files(parts: list[Part], max_files: int = MAX_FILES) -> list[Part]:
    """The file parts of a form (any field name), at least one and at most ``max_files``.

    Raises:
        UploadError: no file, or too many.
    """
    files = [p for p in parts if p.filename is not None]
    if not files:
        raise UploadError(400, "no image in the request: choose one or more image files")
    if len(files) > max_files:
        raise UploadError(413, f"{len(files)} files in one request: at most {max_files}")
    return files


def open_image(data: bytes, name: str, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode one uploaded file into an RGB image, refusing what should not be decoded.

    The checks, in order: zero bytes; not an image PIL recognises (from the header); more than
    ``max_pixels`` pixels (from the header, before decoding); then a full decode, which fails
    on a truncated or corrupt file. Animated images give their first frame.

    Raises:
        UploadError: 400 empty or truncated/corrupt, 415 not an image, 413 too many pixels.
    """
    label = name or "the upload"
    if not data:
        raise UploadError(400, f"{label}: empty file (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DecompressionBombWarning: we check the size ourselves below
        try:
            im = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:  # PIL's own cap (~179 MP), checked from the header too
            found = re.search(r"\((\d+) pixels\)", str(exc))
            size = f"{int(found.group(1)) / 1e6:g} megapixels" if found else "too many pixels"
            raise UploadError(413, f"{label}: image of {size} is too large (at most {max_pixels / 1e6:g} megapixels); resize it first") from exc
        except UnidentifiedImageError as exc:
            raise UploadError(415, f"{label}: not an image (PNG, JPEG, WebP, BMP or GIF expected)") from exc
        except Exception as exc:  # noqa: BLE001 - a malformed header raises several kinds
            raise UploadError(400, f"{label}: corrupt image header ({type(exc).__name__})") from exc
        w, h = im.size
        if w < 1 or h < 1:
            raise UploadError(400, f"{label}: image of {w} x {h} pixels")
        if w * h > max_pixels:
            raise UploadError(
                413, f"{label}: image of {w:,} x {h:,} pixels ({w * h / 1e6:g} megapixels) is too large (at most {max_pixels / 1e6:g} megapixels); resize it first"
            )
        try:
            im.seek(0)
            im.load()
            return to_rgb(im)
        except Exception as exc:  # noqa: BLE001 - PIL raises OSError, ValueError, SyntaxError, EOFError
            why = "truncated image" if "truncat" in str(exc).lower() else f"corrupt image ({type(exc).__name__})"
            raise UploadError(400, f"{label}: {why}") from exc
