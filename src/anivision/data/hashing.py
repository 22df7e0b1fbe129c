"""Content and perceptual image hashes, and a fast search for near-duplicate images.

Two kinds of hash find two kinds of copy:

* the **content hash** (sha1 of the file's bytes, :func:`file_sha1`) finds byte-identical files;
* **perceptual hashes** find the same picture saved differently: resized, re-compressed or
  lightly cropped. :func:`phash` (low frequencies of a DCT) and :func:`dhash` (signs of
  horizontal gradients) are 64-bit integers; two images are near-copies when few bits differ.

A global hash of the whole frame does not survive cropping: cutting 5 % off each side moves
every feature, and on real anime face crops the pHash distance of such a copy (median 12 bits)
overlaps that of different drawings of the same character. So :func:`perceptual_hashes` also
hashes :data:`CROP_VARIANTS`, 16 sub-windows of each image (0 or 5 % cut from each side); a crop
of image A then matches one of A's windows. :func:`near_duplicate_pairs` compares every window
of every image with the full frame of every other image (XOR + population count on ``uint64``),
keeps pairs close in both pHash and dHash, and confirms them by the correlation of the DCT
coefficients themselves, which removes look-alike drawings the binary hashes let through.

Low frequencies still pass two *different* pictures that share their layout: synthetic faces of
one generator (same framing, plain backgrounds) and fan-art of one character correlate up to
~0.95 at 8x8 DCT coefficients. The last test, :func:`local_difference`, compares the matched
window and frame as 64x64 grey thumbnails, normalised for brightness and contrast, tolerant to
a one-pixel shift (what the 0/5 % windows leave of a crop), and keeps the pair only when no
8x8 block differs much: a copy differs a little everywhere, another picture a lot somewhere.

Images are resampled with exact area averaging written as matrices (``R_y @ x @ R_x.T``), so
the 16 windows of an image cost a few small matrix products rather than 32 PIL resizes.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np
from PIL import Image

# One definition of the content hash for the whole package: split files record this sha1.
from anivision.data.splits import file_sha1

__all__ = [
    "file_sha1",
    "CROP_VARIANTS",
    "PHASH_THRESHOLD",
    "DHASH_THRESHOLD",
    "MIN_CORRELATION",
    "MAX_LOCAL_DIFFERENCE",
    "PerceptualHashes",
    "local_difference",
    "perceptual_hashes",
    "phash",
    "dhash",
    "popcount64",
    "hamming_distance",
    "near_duplicate_pairs",
]

# Thresholds measured on 7.9k real 128 px anime face crops (shared/data/characters) and 8 x 300
# copies of them (0-5 % cut per side, resized to 64-384 px, JPEG quality 30-85): every copy
# matched a window at pHash <= 10, dHash <= 10 and correlation >= 0.945, while the pairs of
# different drawings that pass both hash tests correlate below ~0.90 (edited variants of one
# drawing, e.g. another expression, sit in 0.85-0.95 and are found only in part).
#: Largest pHash Hamming distance (bits of 64) between a window and a full frame.
PHASH_THRESHOLD: int = 10
#: Largest dHash Hamming distance for the same window.
DHASH_THRESHOLD: int = 12
#: Smallest correlation of the 63 low-frequency DCT coefficients that confirms a pair.
MIN_CORRELATION: float = 0.92
#: Largest :func:`local_difference` of a pair: the largest value that leaves no label conflict
#: on ``anivision synth`` output (different faces of one generator reach 0.55); on the pair
#: benchmark (``benchmarks/dupe_pairs.py``, RESULTS.md) it keeps recall at 0.96 with no false
#: pair; recoloured copies whose highlights clip are the copies it misses.
MAX_LOCAL_DIFFERENCE: float = 0.5

_CUT = 0.05  # "lightly cropped": up to ~5 % of the width/height off any side
_AXIS_CUTS = ((0.0, 0.0), (_CUT, 0.0), (0.0, _CUT), (_CUT, _CUT))

#: Windows hashed per image as (left, top, right, bottom) fractions cut off; index 0 is the
#: full frame. Every combination of 0 / 5 % on both ends of both axes: 16 windows.
CROP_VARIANTS: tuple[tuple[float, float, float, float], ...] = tuple(
    (x[0], y[0], x[1], y[1]) for x in _AXIS_CUTS for y in _AXIS_CUTS
)

_HASH = 8  # hash side: 8 x 8 = 64 bits
_DCT_IN = 32  # pHash resamples to 32 x 32 before the DCT
# Images are first reduced by an integer factor (exact box averaging) to a shorter side of
# 64-127 px: the 32 px hash loses nothing and the matrix work drops ~4x for 128 px images.
_WORK_SIDE = 64
_THUMB = 64  # side of the grey thumbnail kept per image for the local-difference test
_BLOCK = 8  # local-difference blocks: 8x8 thumbnail pixels (1/64 of the picture)
_CHROMA = 32  # side of the colour (Cb, Cr) thumbnails: colour needs less resolution
_CHROMA_FLOOR = 8.0  # smallest chroma spread standardised to 1: near-grey pictures keep small differences


class PerceptualHashes(NamedTuple):
    """Hashes of the :data:`CROP_VARIANTS` windows of one image.

    Attributes:
        phash: (K,) uint64 pHash of each window.
        dhash: (K,) uint64 dHash of each window.
        signature: (K, 63) float32 low-frequency DCT coefficients (DC dropped) of each window,
            centred and scaled to unit length so that a dot product is a correlation.
        thumb: (64, 64) uint8 grey thumbnail of the full frame (area-averaged), for
            :func:`local_difference`.
        chroma: (2, 32, 32) uint8 Cb and Cr thumbnails of the full frame (YCbCr), for the
            colour part of :func:`local_difference`.
    """

    phash: np.ndarray
    dhash: np.ndarray
    signature: np.ndarray
    thumb: np.ndarray
    chroma: np.ndarray


@lru_cache(maxsize=4)
def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix ``C`` (n, n): ``C @ x`` is the DCT of a column vector ``x``."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    c = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * i + 1) * k / (2 * n))
    c[0] /= np.sqrt(2.0)
    return c


def _area_matrix(n_out: int, size: int, lo: float, hi: float) -> np.ndarray:
    """(n_out, size) matrix that area-averages pixels ``[lo, hi)`` of a line into ``n_out`` cells.

    Pixel ``p`` covers ``[p, p + 1)``; each output cell gets the overlap-weighted mean of the
    pixels it covers, which is exact box-filter resampling for any (fractional) window.
    """
    edges = lo + (hi - lo) * np.arange(n_out + 1) / n_out
    p = np.arange(size, dtype=np.float64)
    overlap = np.minimum(p[None, :] + 1, edges[1:, None]) - np.maximum(p[None, :], edges[:-1, None])
    overlap = np.clip(overlap, 0.0, None)
    return overlap / np.maximum(overlap.sum(axis=1, keepdims=True), 1e-12)


@lru_cache(maxsize=128)
def _operators(
    height: int, width: int, variants: tuple[tuple[float, float, float, float], ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Left/right matrices giving each window's 8x8 DCT block and 8x9 dHash grid.

    Returns:
        ``(dct_left (K, 8, H), dct_right (K, W, 8), grid_left (K, 8, H), grid_right (K, W, 9))``;
        ``dct_left[k] @ x @ dct_right[k]`` is the low 8x8 DCT of window ``k`` resampled to 32x32.
    """
    c = _dct_matrix(_DCT_IN)[:_HASH]
    dl, dr, gl, gr = [], [], [], []
    for left, top, right, bottom in variants:
        y0, y1 = top * height, height - bottom * height
        x0, x1 = left * width, width - right * width
        dl.append(c @ _area_matrix(_DCT_IN, height, y0, y1))
        dr.append((c @ _area_matrix(_DCT_IN, width, x0, x1)).T)
        gl.append(_area_matrix(_HASH, height, y0, y1))
        gr.append(_area_matrix(_HASH + 1, width, x0, x1).T)
    return np.stack(dl), np.stack(dr), np.stack(gl), np.stack(gr)


def _grey_array(img: Image.Image | np.ndarray) -> np.ndarray:
    """Greyscale float64 (H, W) array, big images reduced by an integer factor first."""
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    grey = img.convert("L")
    factor = min(grey.size) // _WORK_SIDE
    if factor >= 2:
        grey = grey.reduce(factor)
    return np.asarray(grey, dtype=np.float64)


def _pack(bits: np.ndarray) -> np.ndarray:
    """(K, 64) booleans, first = most significant, to (K,) uint64."""
    return np.packbits(bits, axis=1).view(">u8").astype(np.uint64).ravel()


def perceptual_hashes(
    img: Image.Image | np.ndarray,
    variants: tuple[tuple[float, float, float, float], ...] = CROP_VARIANTS,
) -> PerceptualHashes:
    """pHash, dHash and DCT signature of each window of ``img``.

    pHash: the window is area-resampled to 32x32 grey; each bit of the top-left 8x8 block of
    its 2-D DCT says whether the coefficient is above the median of the 63 AC coefficients
    (the DC term, overall brightness, is left out of the median: it is far larger than the rest
    and would only give a constant bit). dHash: the window is resampled to 9x8; each bit says
    whether brightness rises to the right.

    Args:
        img: PIL image (any mode) or uint8 array (H, W) or (H, W, 3).
        variants: windows as (left, top, right, bottom) fractions cut off each side.

    Returns:
        The hashes of the K windows, in the order of ``variants``.
    """
    x = _grey_array(img)
    dl, dr, gl, gr = _operators(x.shape[0], x.shape[1], tuple(variants))
    k = len(variants)
    low = (dl @ x @ dr).reshape(k, _HASH * _HASH)
    ac = low[:, 1:]
    # Median of the 63 AC terms is the 32nd smallest; a partition is several times np.median.
    bits = low > np.partition(ac, ac.shape[1] // 2, axis=1)[:, ac.shape[1] // 2 : ac.shape[1] // 2 + 1]
    grid = gl @ x @ gr  # (K, 8, 9)
    dbits = (grid[:, :, 1:] > grid[:, :, :-1]).reshape(k, _HASH * _HASH)
    sig = ac - ac.mean(axis=1, keepdims=True)
    sig /= np.maximum(np.linalg.norm(sig, axis=1, keepdims=True), 1e-9)  # flat image: all zeros
    thumb = _area_matrix(_THUMB, x.shape[0], 0, x.shape[0]) @ x @ _area_matrix(_THUMB, x.shape[1], 0, x.shape[1]).T
    return PerceptualHashes(_pack(bits), _pack(dbits), sig.astype(np.float32), _to_uint8(thumb), _chroma(img))


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _chroma(img: Image.Image | np.ndarray) -> np.ndarray:
    """(2, 32, 32) uint8 Cb, Cr thumbnails (128: no colour) of the full frame."""
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    ycc = img.convert("RGB").convert("YCbCr")
    factor = min(ycc.size) // _WORK_SIDE
    if factor >= 2:
        ycc = ycc.reduce(factor)
    c = np.asarray(ycc, dtype=np.float64)[..., 1:]
    ry, rx = _area_matrix(_CHROMA, c.shape[0], 0, c.shape[0]), _area_matrix(_CHROMA, c.shape[1], 0, c.shape[1])
    return _to_uint8(np.stack([ry @ c[..., k] @ rx.T for k in range(2)]))


def _standardise(x: np.ndarray, floor: float = 1.0) -> np.ndarray:
    """Each (T, T) image of a (P, T, T) stack to zero mean and unit variance (a spread below
    ``floor`` counts as ``floor``: flat images stay near zero)."""
    x = x - x.mean(axis=(1, 2), keepdims=True)
    return x / np.maximum(x.std(axis=(1, 2), keepdims=True), floor)


def _block_difference(a: np.ndarray, b: np.ndarray, windows: np.ndarray, floor: float) -> np.ndarray:
    """Largest 8x8-grid block mean of the shift-tolerant difference of window ``windows[p]``
    of ``a[p]`` and all of ``b[p]`` ((P, T, T) stacks), after standardising both."""
    t = a.shape[-1]
    gl, gr = _window_resamplers(t)
    a = gl[windows] @ a @ gr[windows].transpose(0, 2, 1)  # the window, back to T x T
    a, b = _standardise(a, floor), _standardise(b, floor)
    d = np.minimum(_shift_tolerant(a, b), _shift_tolerant(b, a))
    g, blk = _THUMB // _BLOCK, t // (_THUMB // _BLOCK)
    return d.reshape(len(d), g, blk, g, blk).mean(axis=(2, 4)).max(axis=(1, 2))


def _shift_tolerant(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per pixel, the smallest ``|a - b|`` over shifts of ``b`` by up to one pixel each way."""
    t = a.shape[-1]
    bp = np.pad(b, ((0, 0), (1, 1), (1, 1)), mode="edge")
    best = np.full(a.shape, np.inf)
    for dy in range(3):
        for dx in range(3):
            np.minimum(best, np.abs(a - bp[:, dy : dy + t, dx : dx + t]), out=best)
    return best


def local_difference(
    thumbs_a: np.ndarray, windows: np.ndarray, thumbs_b: np.ndarray,
    chroma_a: np.ndarray | None = None, chroma_b: np.ndarray | None = None,
) -> np.ndarray:
    """How much the worst block differs between window ``windows[p]`` of picture ``a[p]`` and
    all of picture ``b[p]``, for P pairs.

    Grey thumbnails (and, when given, each colour channel) are brought to the same size,
    standardised (zero mean, unit variance: brightness, contrast and saturation changes cancel),
    compared per pixel with a one-pixel shift tolerance both ways, and averaged over an 8x8 grid
    of blocks; the result is the largest block mean over the grid and the channels, in standard
    deviations. A copy differs a little everywhere; another picture a lot somewhere (a face
    feature, a hair colour).

    Args:
        thumbs_a: (P, 64, 64) uint8 grey thumbnails (:attr:`PerceptualHashes.thumb`).
        windows: (P,) indices into :data:`CROP_VARIANTS` of the window of ``a`` to compare.
        thumbs_b: (P, 64, 64) uint8 grey thumbnails.
        chroma_a: (P, 2, 32, 32) uint8 colour thumbnails (:attr:`PerceptualHashes.chroma`), or None.
        chroma_b: the same for ``b``.

    Returns:
        (P,) float64 local differences (0 for identical pictures).
    """
    windows = np.asarray(windows, dtype=np.int64)
    if len(windows) == 0:
        return np.zeros(0)
    d = _block_difference(np.asarray(thumbs_a, np.float64), np.asarray(thumbs_b, np.float64), windows, 1.0)
    if chroma_a is not None and chroma_b is not None:
        ca, cb = np.asarray(chroma_a, np.float64), np.asarray(chroma_b, np.float64)
        for k in range(ca.shape[1]):
            d = np.maximum(d, _block_difference(ca[:, k], cb[:, k], windows, _CHROMA_FLOOR))
    return d


@lru_cache(maxsize=4)
def _window_resamplers(t: int) -> tuple[np.ndarray, np.ndarray]:
    """(K, t, t) left and right matrices cutting each :data:`CROP_VARIANTS` window out of a
    t x t thumbnail and resampling it to t x t."""
    rows = [_area_matrix(t, t, top * t, t - bottom * t) for _, top, _, bottom in CROP_VARIANTS]
    cols = [_area_matrix(t, t, left * t, t - right * t) for left, _, right, _ in CROP_VARIANTS]
    return np.stack(rows), np.stack(cols)


def phash(img: Image.Image | np.ndarray) -> int:
    """64-bit DCT perceptual hash of the full frame (see :func:`perceptual_hashes`)."""
    return int(perceptual_hashes(img, (CROP_VARIANTS[0],)).phash[0])


def dhash(img: Image.Image | np.ndarray) -> int:
    """64-bit difference hash of the full frame (see :func:`perceptual_hashes`)."""
    return int(perceptual_hashes(img, (CROP_VARIANTS[0],)).dhash[0])


# 16-bit population-count table for NumPy < 2.0, which has no np.bitwise_count.
_POP16 = np.array([bin(i).count("1") for i in range(1 << 16)], dtype=np.uint8)


def popcount64(x: np.ndarray) -> np.ndarray:
    """Number of set bits of each element of a ``uint64`` array (same shape, uint8)."""
    x = np.ascontiguousarray(x, dtype=np.uint64)
    if hasattr(np, "bitwise_count"):  # NumPy >= 2.0: a hardware popcount, several times the table
        return np.bitwise_count(x).astype(np.uint8, copy=False)
    return _POP16[x.view(np.uint16).reshape(x.shape + (4,))].sum(axis=-1, dtype=np.uint8)


def hamming_distance(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Hamming distance between 64-bit hashes, broadcasting like ``a ^ b``.

    Args:
        a: hashes, ``uint64`` array or int.
        b: hashes, ``uint64`` array or int.

    Returns:
        uint8 array of differing bits, of the broadcast shape of ``a`` and ``b``.
    """
    return popcount64(np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64)))


def near_duplicate_pairs(
    phashes: np.ndarray,
    dhashes: np.ndarray,
    signatures: np.ndarray,
    phash_threshold: int = PHASH_THRESHOLD,
    dhash_threshold: int = DHASH_THRESHOLD,
    min_correlation: float = MIN_CORRELATION,
    row_block: int = 128,
    col_block: int = 4096,
    *,
    thumbs: np.ndarray | None = None,
    chroma: np.ndarray | None = None,
    max_local_difference: float = MAX_LOCAL_DIFFERENCE,
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of images where a window of one matches the full frame of the other.

    Exact search over all N x K x N (window, frame) combinations, blocked so the temporaries
    (``row_block * col_block`` elements) stay in cache: XOR + popcount of the pHashes first,
    then dHash and correlation only for the few candidates. About 2.2 ns per combination:
    ~2 s for 8k images with 16 windows.

    Args:
        phashes: (N, K) uint64 pHashes; column 0 must be the full frame.
        dhashes: (N, K) uint64 dHashes of the same windows.
        signatures: (N, K, S) unit-length DCT signatures of the same windows.
        phash_threshold: largest pHash distance.
        dhash_threshold: largest dHash distance.
        min_correlation: smallest signature correlation.
        row_block: windows compared per block.
        col_block: full frames compared per block.
        thumbs: (N, 64, 64) uint8 thumbnails; when given, a pair must also have a
            :func:`local_difference` of at most ``max_local_difference`` (``data check`` gives them).
        chroma: (N, 2, 32, 32) uint8 colour thumbnails for the same test (with ``thumbs``).
        max_local_difference: largest local difference of a pair.

    Returns:
        ``(pairs, dists)``: (P, 2) int64 unique pairs ``i < j`` sorted lexicographically, and
        (P,) uint8 smallest pHash distance found for each pair.
    """
    ph = np.ascontiguousarray(phashes, dtype=np.uint64)
    if ph.ndim == 1:
        ph = ph[:, None]
    n, k = ph.shape
    dh = np.ascontiguousarray(dhashes, dtype=np.uint64).reshape(n, k)
    sig = np.asarray(signatures, dtype=np.float32).reshape(n, k, -1)
    windows = ph.reshape(n * k)
    frames = ph[:, 0]
    # Equal column blocks, and row blocks a multiple of 8, so every block is contiguous and its
    # hit mask can be read as uint64 words (8 booleans each) below.
    col_block = -(-n // -(-n // col_block))
    row_block = max(8, row_block - row_block % 8)
    buffers: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    found: list[np.ndarray] = []
    for r0 in range(0, n * k, row_block):
        rows = windows[r0 : r0 + row_block, None]
        for c0 in range(0, n, col_block):
            cols = frames[None, c0 : c0 + col_block]
            shape = (rows.shape[0], cols.shape[1])
            if shape not in buffers:  # preallocated outputs: the three passes stay in cache
                buffers[shape] = (np.empty(shape, np.uint64), np.empty(shape, np.uint8), np.empty(shape, bool))
            x, c, h = buffers[shape]
            np.bitwise_xor(rows, cols, out=x)
            if hasattr(np, "bitwise_count"):
                np.bitwise_count(x, out=c)
            else:
                c[...] = popcount64(x)
            np.less_equal(c, phash_threshold, out=h)
            flat = h.reshape(-1)
            if flat.size % 8 == 0:
                # Scanning 8x fewer words, then only the words that hold a hit, is several
                # times faster than nonzero() over the whole mask (hits are sparse).
                words = np.flatnonzero(flat.view(np.uint64))
                if len(words) == 0:
                    continue
                pos = (words[:, None] * 8 + np.arange(8)).ravel()
                pos = pos[flat[pos]]
            else:
                pos = np.flatnonzero(flat)
            ri, ci = np.divmod(pos, shape[1])
            found.append(np.stack([ri + r0, ci + c0, c[ri, ci]], axis=1).astype(np.int64))
    if not found:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.uint8)
    cand = np.concatenate(found)
    img_i, win, img_j, pdist = cand[:, 0] // k, cand[:, 0] % k, cand[:, 1], cand[:, 2]
    keep = img_i != img_j
    img_i, win, img_j, pdist = img_i[keep], win[keep], img_j[keep], pdist[keep]
    keep = hamming_distance(dh[img_i, win], dh[img_j, 0]) <= dhash_threshold
    img_i, win, img_j, pdist = img_i[keep], win[keep], img_j[keep], pdist[keep]
    corr = np.einsum("ps,ps->p", sig[img_i, win], sig[img_j, 0])
    keep = corr >= min_correlation
    if thumbs is not None:
        img_i, win, img_j, pdist = img_i[keep], win[keep], img_j[keep], pdist[keep]
        step = 1024  # candidates per chunk: (1024, 64, 64) float64 temporaries, ~32 MB each
        diff = np.concatenate([np.zeros(0)] + [
            local_difference(thumbs[img_i[c : c + step]], win[c : c + step], thumbs[img_j[c : c + step]],
                             None if chroma is None else chroma[img_i[c : c + step]], None if chroma is None else chroma[img_j[c : c + step]])
            for c in range(0, len(img_i), step)
        ])
        keep = diff <= max_local_difference
    lo = np.minimum(img_i[keep], img_j[keep])
    hi = np.maximum(img_i[keep], img_j[keep])
    pdist = pdist[keep]
    if len(lo) == 0:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.uint8)
    # A pair can be found from both sides and through several windows: keep its smallest distance.
    order = np.lexsort((pdist, hi, lo))
    lo, hi, pdist = lo[order], hi[order], pdist[order]
    first = np.ones(len(lo), dtype=bool)
    first[1:] = (lo[1:] != lo[:-1]) | (hi[1:] != hi[:-1])
    return np.stack([lo[first], hi[first]], axis=1), pdist[first].astype(np.uint8)
