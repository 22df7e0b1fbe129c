"""How often the packaged LBP anime-face cascade finds a face pasted into a larger page.

The shared character images are already 128 px face crops; detection is tested by pasting each
one, rescaled to 128-256 px, at a random place on a 512x512 page (plain light background), and
counting a hit when a detected box overlaps the pasted square with IoU >= 0.3. A detection
elsewhere counts as a false box.

Usage: python benchmarks/faces_hit_rate.py ../shared/data/characters --n 200 [--scale-factor 1.1 --min-neighbors 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from PIL import Image

from anivision.data.faces import CascadeDetector, detect_faces
from anivision.data.folder import scan_class_folders
from anivision.data.images import load_image


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    return inter / float(aw * ah + bw * bh - inter)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale-factor", type=float, default=1.1)
    ap.add_argument("--min-neighbors", type=int, default=5)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    images = scan_class_folders(a.data)
    pick = rng.choice(len(images), size=min(a.n, len(images)), replace=False)
    det = CascadeDetector.from_file(scale_factor=a.scale_factor, min_neighbors=a.min_neighbors)
    hits = false_boxes = 0
    t0 = time.perf_counter()
    for i in pick:
        face = load_image(images.paths[int(i)])
        side = int(rng.integers(128, 257))
        face = face.resize((side, side), Image.BICUBIC)
        page = Image.new("RGB", (512, 512), tuple(int(v) for v in rng.integers(200, 256, 3)))
        x, y = (int(v) for v in rng.integers(0, 512 - side + 1, 2))
        page.paste(face, (x, y))
        boxes = detect_faces(page, det)
        matched = [b for b in boxes if iou((b.x, b.y, b.w, b.h), (x, y, side, side)) >= 0.3]
        hits += bool(matched)
        false_boxes += len(boxes) - len(matched)
    secs = time.perf_counter() - t0
    n = len(pick)
    print(f"scale_factor {a.scale_factor}, min_neighbors {a.min_neighbors}: found {hits}/{n} faces ({100 * hits / n:.1f}%), "
          f"{false_boxes} false box(es), {1000 * secs / n:.0f} ms per 512 px page")


if __name__ == "__main__":
    main()
