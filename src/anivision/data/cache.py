"""Decoded-image cache: every image decoded once, stored as uint8 at cache resolution.

Decoding JPEGs every epoch costs as much as a small backbone's forward pass on a laptop CPU.
The cache stores each image resized (shorter side) and centre-cropped to ``size`` x ``size`` in a
memory-mapped ``.npy`` file of shape (N, size, size, 3), so epochs read pixels straight from
the page cache and the whole set never has to sit in RAM (10k images at 146 px: 640 MB).

Building the cache is also where corrupt files are found: each one is listed, skipped and
counted exactly once, before training starts, so an epoch can never crash on a bad file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, TypeVar

import numpy as np
from PIL import Image

from anivision.data.images import load_image
from anivision.errors import AnivisionError
from anivision.progress import progress_bar

T = TypeVar("T")

log = logging.getLogger(__name__)

CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """``$ANIVISION_CACHE`` or ``~/.cache/anivision``."""
    env = os.environ.get("ANIVISION_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "anivision"


def files_fingerprint(paths: list[str]) -> str:
    """A hash of the file list with each file's size and modification time.

    Any added, removed, renamed or rewritten file changes it, without reading file contents.
    """
    h = hashlib.sha1()
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{os.path.abspath(p)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{os.path.abspath(p)}\0missing\n".encode())
    return h.hexdigest()


def resize_square(img: Image.Image, size: int) -> np.ndarray:
    """Resize the shorter side to ``size`` (bicubic) and centre-crop: (size, size, 3) uint8."""
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.BICUBIC, reducing_gap=3.0)
    left, top = (nw - size) // 2, (nh - size) // 2
    img = img.crop((left, top, left + size, top + size))
    return np.asarray(img, dtype=np.uint8)


@dataclass
class DecodedImages:
    """Images decoded once into a uint8 array.

    Attributes:
        pixels: (N, S, S, 3) uint8 array (memory-mapped when loaded from disk).
        valid: (N,) bool, False for images that could not be decoded.
        errors: path -> one-line reason, for the invalid ones.
        paths: the N paths, in order.
    """

    pixels: np.ndarray
    valid: np.ndarray
    errors: dict[str, str]
    paths: list[str]

    @property
    def size(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def skipped(self) -> list[str]:
        return [p for p, ok in zip(self.paths, self.valid) if not ok]


def decode_file(path: str, size: int) -> tuple[np.ndarray | None, str | None]:
    """One image file as (size, size, 3) uint8, or (None, one-line reason) when it is unreadable."""
    try:
        return resize_square(load_image(path), size), None
    except AnivisionError as exc:
        return None, str(exc)
    except Exception as exc:  # noqa: BLE001 - a decoder bug on one file must not stop the run
        return None, f"{path}: {type(exc).__name__}: {exc}"


def decode_into(
    pixels: np.ndarray, items: Sequence[T], names: Sequence[str],
    decode: Callable[[T], tuple[np.ndarray | None, str | None]],
    progress: bool, desc: str, workers: int | None = None,
) -> tuple[np.ndarray, dict[str, str]]:
    """Decode ``items`` in threads (PIL releases the GIL) into the rows of ``pixels``.

    Returns:
        (valid (N,) bool, errors: name -> one-line reason for each unreadable item).
    """
    valid = np.zeros(len(items), dtype=bool)
    errors: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        results = pool.map(decode, items, chunksize=1)
        for i, (img, err) in enumerate(progress_bar(results, progress, total=len(items), desc=desc, leave=False)):
            if img is None:
                errors[names[i]] = err or "unreadable"
            else:
                pixels[i], valid[i] = img, True
    return valid, errors


def decode_images(
    paths: list[str],
    size: int,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> DecodedImages:
    """Decode ``paths`` to (N, size, size, 3) uint8, reusing an on-disk cache when it is current.

    Args:
        paths: image files.
        size: side of the stored square images.
        cache_dir: where cache files live; ``None`` keeps everything in memory (no disk cache).
        workers: decoding threads (PIL releases the GIL while decoding); default: CPU count.
        progress: show a progress bar.

    Returns:
        The decoded images. Invalid images are zero-filled and marked in ``valid``; each is
        logged as a warning with its reason.
    """
    key = hashlib.sha1(f"v{CACHE_VERSION}:{size}:{files_fingerprint(paths)}".encode()).hexdigest()[:20]
    arr_path = meta_path = None
    if cache_dir is not None:
        cdir = Path(cache_dir) / "images"
        cdir.mkdir(parents=True, exist_ok=True)
        arr_path, meta_path = cdir / f"{key}.npy", cdir / f"{key}.json"
        if arr_path.exists() and meta_path.exists():
            meta = json.loads(meta_path.read_text())
            pixels = np.load(arr_path, mmap_mode="r")
            if pixels.shape == (len(paths), size, size, 3):
                valid = np.asarray(meta["valid"], dtype=bool)
                errors = dict(meta["errors"])
                _report_errors(errors)
                return DecodedImages(pixels, valid, errors, list(paths))
    n = len(paths)
    if arr_path is not None:
        tmp = arr_path.with_name(arr_path.name + f".{os.getpid()}.tmp")
        pixels = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
    else:
        pixels = np.zeros((n, size, size, 3), dtype=np.uint8)
    valid, errors = decode_into(pixels, paths, paths, lambda p: decode_file(p, size), progress, f"decode {size}px", workers)
    _report_errors(errors)
    if arr_path is not None and meta_path is not None:
        pixels.flush()  # type: ignore[union-attr]
        del pixels
        os.replace(tmp, arr_path)
        tmp_meta = meta_path.with_name(meta_path.name + ".tmp")
        tmp_meta.write_text(json.dumps({"size": size, "n": n, "valid": valid.tolist(), "errors": errors}))
        os.replace(tmp_meta, meta_path)
        pixels = np.load(arr_path, mmap_mode="r")
    return DecodedImages(pixels, valid, errors, list(paths))


def _report_errors(errors: dict[str, str]) -> None:
    if errors:
        log.warning("skipping %d unreadable image(s):", len(errors))
        for msg in list(errors.values())[:20]:
            log.warning("  %s", msg)
        if len(errors) > 20:
            log.warning("  ... and %d more (see the run's skipped.txt)", len(errors) - 20)
