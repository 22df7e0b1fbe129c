"""Decoded-image cache: every image decoded once, stored as uint8 at cache resolution.

Decoding JPEGs every epoch costs as much as a small backbone's forward pass on a laptop CPU.
The cache stores each image resized (shorter side) and centre-cropped to ``size`` x ``size`` in a
memory-mapped ``.npy`` file of shape (N, size, size, 3), so epochs read pixels straight from
the page cache and the whole set never has to sit in RAM (10k images at 146 px: 640 MB).

Building the cache is also where corrupt files are found: each one is listed, skipped and
counted exactly once, before training starts, so an epoch can never crash on a bad file.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Sequence, TypeVar

import numpy as np
from PIL import Image

from anivision.data.images import load_image
from anivision.errors import AnivisionError
from anivision.files import atomic_write_json, remove_quietly, replacing, sweep_temp_files
from anivision.progress import progress_bar

T = TypeVar("T")

log = logging.getLogger(__name__)

#: The most decoding threads by default (memory grows with each image decoded at once).
MAX_DECODE_WORKERS = 4

CACHE_VERSION = 2  # 2: meta with checksums (a version-1 cache is rebuilt once)


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
        return resize_square(load_image(path, min_side=size), size), None
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
    pool = ThreadPoolExecutor(max_workers=workers or default_decode_workers())
    try:
        results = pool.map(decode, items, chunksize=1)
        for i, (img, err) in enumerate(progress_bar(results, progress, total=len(items), desc=desc, leave=False)):
            if img is None:
                errors[names[i]] = err or "unreadable"
            else:
                pixels[i], valid[i] = img, True
    finally:
        # On Ctrl-C or an error, drop the images not started yet instead of decoding them all first.
        pool.shutdown(wait=True, cancel_futures=True)
    return valid, errors


def default_decode_workers() -> int:
    """Decoding threads: at most 4 (each may hold a large image being decoded; more threads add
    memory, not speed, once the disk or the CPU is busy)."""
    return max(1, min(MAX_DECODE_WORKERS, os.cpu_count() or 1))


def decode_images(
    paths: list[str],
    size: int,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> DecodedImages:
    """Decode ``paths`` to (N, size, size, 3) uint8, reusing an on-disk cache when it is current.

    A cache on disk is verified before use (:func:`load_cache`: the meta file parses and matches
    its checksum, the array file has the expected size and header, sampled rows match their
    checksum); a damaged one is rebuilt with a warning naming the file. Before a new cache is
    written, the free space is checked and the file is allocated in full, so a full disk is a
    one-line error instead of a crash (SIGBUS) halfway through decoding.

    Args:
        paths: image files.
        size: side of the stored square images.
        cache_dir: where cache files live; ``None`` keeps everything in memory (no disk cache).
        workers: decoding threads (PIL releases the GIL while decoding); default:
            :func:`default_decode_workers`.
        progress: show a progress bar.

    Returns:
        The decoded images. Invalid images are zero-filled and marked in ``valid``; each is
        logged as a warning with its reason.

    Raises:
        AnivisionError: not enough free space for the cache (naming the folder and the bytes).
    """
    n = len(paths)
    if cache_dir is None:
        pixels = np.zeros((n, size, size, 3), dtype=np.uint8)
        valid, errors = decode_into(pixels, paths, paths, lambda p: decode_file(p, size), progress, f"decode {size}px", workers)
        _report_errors(errors)
        return DecodedImages(pixels, valid, errors, list(paths))
    key = hashlib.sha1(f"v{CACHE_VERSION}:{size}:{files_fingerprint(paths)}".encode()).hexdigest()[:20]
    cdir = Path(cache_dir) / "images"
    cdir.mkdir(parents=True, exist_ok=True)
    sweep_temp_files(cdir)  # what a killed process left half-written
    arr_path, meta_path = cdir / f"{key}.npy", cdir / f"{key}.json"
    cached = load_cache(arr_path, meta_path, n, size)
    if cached is not None:
        pixels, meta = cached
        errors = dict(meta["errors"])
        _report_errors(errors)
        return DecodedImages(pixels, np.asarray(meta["valid"], dtype=bool), errors, list(paths))
    check_free_space(cdir, cache_bytes(n, size))
    with replacing(arr_path) as tmp:
        pixels = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
        allocate(tmp)
        valid, errors = decode_into(pixels, paths, paths, lambda p: decode_file(p, size), progress, f"decode {size}px", workers)
        pixels.flush()
        del pixels
        checksum, nbytes = sample_checksum(tmp, n, size), tmp.stat().st_size
    _report_errors(errors)
    meta = {"size": size, "n": n, "valid": valid.tolist(), "errors": errors, "bytes": nbytes, "checksum": checksum}
    atomic_write_json(meta_path, {**meta, "meta_sha1": _meta_sha1(meta)})
    return DecodedImages(np.load(arr_path, mmap_mode="r"), valid, errors, list(paths))


# ----------------------------------------------------------------------------- cache files


def cache_bytes(n: int, size: int) -> int:
    """Bytes of the ``.npy`` file of ``n`` images at ``size`` px, header included (at most 4 KB)."""
    return n * size * size * 3 + NPY_HEADER_MAX


#: An upper bound of a ``.npy`` header (numpy pads it to 64 bytes, or 4 KB at most).
NPY_HEADER_MAX = 4096


def _data_offset(fh: BinaryIO) -> int:
    """Where the pixels of an open ``.npy`` file start (its header read and checked)."""
    major, _ = np.lib.format.read_magic(fh)
    read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    read(fh)
    return fh.tell()


def check_free_space(folder: Path, need: int) -> None:
    """Refuse to start a cache file that the disk cannot hold (a sparse file would die with SIGBUS).

    Raises:
        AnivisionError: naming the folder, the bytes needed and the bytes free.
    """
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return  # the file system does not say: the allocation below still fails cleanly
    if need > free:
        raise AnivisionError(
            f"{folder}: the decoded-image cache needs {_size_text(need)} ({need} bytes) but only {_size_text(free)} "
            f"({free} bytes) is free; free some space, point --cache-dir (or $ANIVISION_CACHE) at a larger disk, or lower --img-size"
        )


def allocate(path: Path) -> None:
    """Reserve the whole file on disk now, so a full disk fails here (ENOSPC) and not as SIGBUS
    when a page of the memory map is first written. A file system without ``fallocate`` is left sparse."""
    if not hasattr(os, "posix_fallocate"):
        return
    with open(path, "r+b") as fh:
        try:
            os.posix_fallocate(fh.fileno(), 0, os.fstat(fh.fileno()).st_size)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise AnivisionError(f"{path.parent}: no space left for the decoded-image cache ({_size_text(os.fstat(fh.fileno()).st_size)}); "
                                     "free some space or point --cache-dir at a larger disk") from None
            # EOPNOTSUPP/EINVAL: this file system cannot preallocate; the free-space check stands


def sample_checksum(path: Path, n: int, size: int, rows: int = 32) -> str:
    """sha1 of the ``.npy`` header and of up to ``rows`` evenly spaced images (cheap at any N):
    a garbled or overwritten file of the right size is caught without reading all of it."""
    h = hashlib.sha1()
    row = size * size * 3
    with open(path, "rb") as fh:
        header = _data_offset(fh)
        fh.seek(0)
        h.update(fh.read(header))
        for i in sorted({int(i) for i in np.linspace(0, max(n - 1, 0), min(rows, n))}) if n else []:
            fh.seek(header + i * row)
            h.update(fh.read(row))
    return h.hexdigest()


def _meta_sha1(meta: dict) -> str:
    return hashlib.sha1(json.dumps(meta, sort_keys=True).encode()).hexdigest()


def load_cache(arr_path: Path, meta_path: Path, n: int, size: int) -> tuple[np.ndarray, dict] | None:
    """A verified cache (memory-mapped pixels, meta), or None when there is none or it is damaged.

    A damaged cache (unreadable or edited meta, truncated or garbled array) is removed with a
    warning naming the file, and the caller builds it again.
    """
    if not arr_path.exists() or not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or meta.get("meta_sha1") != _meta_sha1({k: v for k, v in meta.items() if k != "meta_sha1"}):
            raise ValueError("meta file does not match its checksum")
        if (meta["n"], meta["size"]) != (n, size) or len(meta["valid"]) != n:
            raise ValueError("meta file describes another set of images")
        actual, expected = arr_path.stat().st_size, int(meta["bytes"])
        if actual != expected:
            raise ValueError(f"{actual} bytes, expected {expected}")
        if sample_checksum(arr_path, n, size) != meta["checksum"]:
            raise ValueError("pixels or header do not match their checksum")
        pixels = np.load(arr_path, mmap_mode="r")
        if pixels.shape != (n, size, size, 3) or pixels.dtype != np.uint8:
            raise ValueError(f"array of shape {pixels.shape} and type {pixels.dtype}")
    except (OSError, ValueError, KeyError, TypeError) as exc:  # JSONDecodeError is a ValueError
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        log.warning("%s: damaged decoded-image cache (%s); rebuilding it", arr_path, reason)
        remove_quietly(arr_path)
        remove_quietly(meta_path)
        return None
    return pixels, meta


def _size_text(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def _report_errors(errors: dict[str, str]) -> None:
    if errors:
        log.warning("skipping %d unreadable image(s):", len(errors))
        for msg in list(errors.values())[:20]:
            log.warning("  %s", msg)
        if len(errors) > 20:
            log.warning("  ... and %d more (see the run's skipped.txt)", len(errors) - 20)
