"""``anivision faces evaluate``: any face detector against a face-box folder.

Writes ``metrics.json`` (AP50, AP50:95, precision and recall at IoU 0.5 at the best-F1 threshold
and at the detector's own ``min_score``), ``report.md``, ``detections.csv``, ``pr_curve.png`` and
``errors.png`` (the images with missed faces or false boxes at the best-F1 threshold: ground
truth green, missed faces orange, true detections blue, false ones red).
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (must follow matplotlib.use)
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from anivision.data.faces import detect_faces  # noqa: E402
from anivision.files import atomic_write_json, atomic_write_text  # noqa: E402
from anivision.metrics.detection import detection_metrics, match_image, pr_curve, score_hits  # noqa: E402
from anivision.progress import progress_bar  # noqa: E402
from anivision.tasks.faces.data import FaceBoxes  # noqa: E402
from anivision.tasks.faces.views import load_rgb  # noqa: E402

GRID_COLS = 4
THUMB = 256
COLOURS = {"truth": (44, 160, 44), "missed": (255, 140, 0), "hit": (31, 119, 180), "false": (214, 39, 40)}


def run_detector(detector: Any, data: FaceBoxes, greyscale: bool = False, progress: bool = True) -> tuple[list[np.ndarray], float]:
    """(N, 5) detections per image in image pixels, and the mean seconds per image."""
    dets = []
    seconds = 0.0
    for im in progress_bar(data.images, progress, desc="detect", unit="img"):
        img = load_rgb(str(im.path))
        if greyscale:
            img = img.convert("L").convert("RGB")
        t0 = time.perf_counter()
        boxes = detect_faces(img, detector)
        seconds += time.perf_counter() - t0
        dets.append(np.array([[b.x, b.y, b.x + b.w, b.y + b.h, b.score] for b in boxes], np.float64).reshape(-1, 5))
    return dets, seconds / max(len(data.images), 1)


def plot_pr(dets: list[np.ndarray], gts: list[np.ndarray], metrics: dict[str, Any], path: Path, title: str) -> None:
    """Precision-recall curve at IoU 0.5 with the best-F1 point marked."""
    s, h, n_gt = score_hits(dets, gts, 0.5)
    c = pr_curve(s, h, n_gt)
    fig, ax = plt.subplots(figsize=(5, 4.2))
    ax.plot(c["recall"], c["precision"], color="#1f77b4", lw=2, label=f"AP50 {metrics['ap50']:.3f}")
    b = metrics["best_f1"]
    ax.scatter([b["recall"]], [b["precision"]], color="#d62728", zorder=3, label=f"best F1 {b['f1']:.3f} (score >= {b['threshold']:.2f})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _thumb(path: Path, det: np.ndarray, gt: np.ndarray) -> Image.Image:
    img = load_rgb(str(path))
    s = THUMB / max(img.size)
    img = img.resize((max(1, round(img.width * s)), max(1, round(img.height * s))))
    draw = ImageDraw.Draw(img)
    det_gt, gt_det = match_image(det, gt, 0.5)
    for g, d in zip(gt, gt_det):
        draw.rectangle(list(g * s), outline=COLOURS["truth" if d >= 0 else "missed"], width=3 if d < 0 else 2)
    for b, g in zip(det, det_gt):
        draw.rectangle(list(b[:4] * s), outline=COLOURS["hit" if g >= 0 else "false"], width=2)
    return img


def error_grid(data: FaceBoxes, dets: list[np.ndarray], threshold: float, path: Path, limit: int = 16) -> int:
    """Grid of the images with a missed face or a false box at ``threshold``; returns how many had one."""
    bad = []
    for im, d in zip(data.images, dets):
        d = d[d[:, 4] >= threshold] if np.isfinite(threshold) else d[:0]
        det_gt, gt_det = match_image(d, im.boxes, 0.5)
        if (det_gt < 0).any() or (gt_det < 0).any():
            bad.append((im, d))
    tiles = [_thumb(im.path, d, im.boxes) for im, d in bad[:limit]]
    cols = min(GRID_COLS, max(len(tiles), 1))
    rows = max(1, -(-len(tiles) // cols))
    grid = Image.new("RGB", (cols * THUMB, rows * THUMB), "white")
    for i, t in enumerate(tiles):
        grid.paste(t, ((i % cols) * THUMB, (i // cols) * THUMB))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    grid.save(tmp)
    os.replace(tmp, path)
    return len(bad)


def _report(m: dict[str, Any]) -> str:
    b = m["best_f1"]
    lines = [
        f"# Face detector evaluation: {m['detector']}", "",
        f"Data: `{m['boxes']}`, split `{m['split']}`{' (greyscale copies)' if m['greyscale'] else ''}: "
        f"{m['n_images']} image(s), {m['n_faces']} face(s), {m['n_negatives']} without a face.", "",
        "| metric | value |", "|---|---|",
        f"| AP50 | {m['ap50']:.3f} |", f"| AP50:95 | {m['ap50_95']:.3f} |",
        f"| best-F1 threshold | {b['threshold']:.3f} |",
        f"| precision / recall at best F1 (IoU 0.5) | {b['precision']:.3f} / {b['recall']:.3f} (F1 {b['f1']:.3f}) |",
        f"| recall at precision >= 0.90 | {m['recall_at_p90']:.3f} |",
        f"| ms per image (detector only) | {1000 * m['seconds_per_image']:.1f} |",
    ]
    if "at_min_score" in m:
        a = m["at_min_score"]
        lines.append(f"| precision / recall at score >= {a['min_score']:.2f} | {a['precision']:.3f} / {a['recall']:.3f} |")
    lines += ["", "![PR curve](pr_curve.png)", "",
              f"{m['n_error_images']} image(s) with a missed face (orange) or a false box (red) at the best-F1 threshold; "
              "the first 16 below (green: found faces, blue: right boxes).", "", "![errors](errors.png)", ""]
    return "\n".join(lines)


def evaluate_detector(
    detector: Any, data: FaceBoxes, out: str | Path, name: str = "", split: str = "all",
    greyscale: bool = False, min_score: float | None = None, progress: bool = True,
) -> dict[str, Any]:
    """Run ``detector`` over ``data`` and write the evaluation into ``out``.

    Args:
        detector: anything :func:`~anivision.data.faces.detect_faces` takes; give a learned
            detector a low ``min_score`` (e.g. 0.01) so the PR curve covers every threshold.
        data: the images and boxes (from :func:`~anivision.tasks.faces.data.read_face_boxes`).
        out: output folder.
        name: the detector as the report names it.
        split: recorded in the report.
        greyscale: detect on greyscale copies of the images.
        min_score: also report precision/recall above this score (e.g. the cropping default).

    Returns:
        What ``metrics.json`` holds.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dets, sec = run_detector(detector, data, greyscale, progress)
    gts = [im.boxes for im in data.images]
    m = detection_metrics(dets, gts, min_score)
    m.update(detector=name or type(detector).__name__, boxes=str(data.root), split=split, greyscale=greyscale,
             n_negatives=data.n_negatives, problems=data.problems, seconds_per_image=sec)
    plot_pr(dets, gts, m, out / "pr_curve.png", f"{m['detector']} ({split}{', grey' if greyscale else ''})")
    m["n_error_images"] = error_grid(data, dets, m["best_f1"]["threshold"], out / "errors.png")
    rows = [[im.name, *(f"{v:.1f}" for v in (d[0], d[1], d[2] - d[0], d[3] - d[1])), f"{d[4]:.4f}"] for im, ds in zip(data.images, dets) for d in ds]
    tmp = out / "detections.csv.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "x", "y", "w", "h", "score"])
        w.writerows(rows)
    os.replace(tmp, out / "detections.csv")
    atomic_write_json(out / "metrics.json", m)
    atomic_write_text(out / "report.md", _report(m))
    return m
