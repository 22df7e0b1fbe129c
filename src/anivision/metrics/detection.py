"""Object-detection metrics as pure functions of numpy arrays: IoU, matching, AP, PR curve, best F1.

Boxes are ``(x0, y0, x1, y1)`` rows; detections carry a fifth column, the score. Matching is
COCO's greedy rule: per image, detections in descending score each take the unmatched ground
truth box of highest IoU at or above the threshold; a detection that finds none is a false
positive. AP is the area under the precision envelope (all points, as PASCAL VOC 2010+ and
COCO's interpolation without the 101-point sampling); AP50:95 averages AP over IoU thresholds
0.50, 0.55, ..., 0.95.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of (N, 4) and (M, 4) x0, y0, x1, y1 boxes."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def match_image(dets: np.ndarray, gts: np.ndarray, iou_thr: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching in one image.

    Args:
        dets: (N, 5) boxes and scores.
        gts: (M, 4) ground-truth boxes.
        iou_thr: IoU needed for a match.

    Returns:
        ``(det_gt, gt_det)``: for each detection (in the given order) the index of the ground
        truth it matched or -1; for each ground truth the detection that matched it or -1.
    """
    dets = np.asarray(dets, np.float64).reshape(-1, 5)
    gts = np.asarray(gts, np.float64).reshape(-1, 4)
    det_gt = np.full(len(dets), -1, np.int64)
    gt_det = np.full(len(gts), -1, np.int64)
    if not len(dets) or not len(gts):
        return det_gt, gt_det
    iou = box_iou(dets[:, :4], gts)
    for d in np.argsort(-dets[:, 4], kind="stable"):
        cand = np.where(gt_det < 0, iou[d], -1.0)
        g = int(np.argmax(cand))
        if cand[g] >= iou_thr:
            det_gt[d], gt_det[g] = g, d
    return det_gt, gt_det


def score_hits(dets: Sequence[np.ndarray], gts: Sequence[np.ndarray], iou_thr: float = 0.5) -> tuple[np.ndarray, np.ndarray, int]:
    """Every detection of every image as (scores, is_true_positive), sorted by score, and the number of faces."""
    if len(dets) != len(gts):
        raise ValueError(f"{len(dets)} detection lists for {len(gts)} images")
    scores, hits = [], []
    n_gt = 0
    for d, g in zip(dets, gts):
        d = np.asarray(d, np.float64).reshape(-1, 5)
        det_gt, _ = match_image(d, g, iou_thr)
        scores.append(d[:, 4])
        hits.append(det_gt >= 0)
        n_gt += len(np.asarray(g).reshape(-1, 4))
    s = np.concatenate(scores) if scores else np.zeros(0)
    h = np.concatenate(hits) if hits else np.zeros(0, bool)
    order = np.argsort(-s, kind="stable")
    return s[order], h[order], n_gt


def pr_curve(scores: np.ndarray, hits: np.ndarray, n_gt: int) -> dict[str, np.ndarray]:
    """Precision and recall after each detection (sorted by descending score), with its threshold."""
    tp = np.cumsum(hits.astype(np.float64))
    fp = np.cumsum(~hits.astype(bool))
    precision = tp / np.maximum(tp + fp, 1e-12)
    recall = tp / n_gt if n_gt else np.zeros_like(tp)
    return {"precision": precision, "recall": recall, "threshold": np.asarray(scores, np.float64)}


def average_precision(scores: np.ndarray, hits: np.ndarray, n_gt: int) -> float:
    """Area under the precision envelope; 0 with no detections or no ground truth."""
    if n_gt == 0 or len(scores) == 0:
        return 0.0
    c = pr_curve(scores, hits, n_gt)
    r = np.concatenate([[0.0], c["recall"], [c["recall"][-1]]])
    p = np.concatenate([[1.0], c["precision"], [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    return float(np.sum((r[1:] - r[:-1]) * p[1:]))


def best_f1(scores: np.ndarray, hits: np.ndarray, n_gt: int) -> dict[str, float]:
    """The score threshold with the highest F1 and its precision, recall and F1.

    Ties in score are cut together (a threshold keeps every detection at or above it).
    """
    if n_gt == 0 or len(scores) == 0:
        return {"threshold": float("nan"), "precision": 0.0, "recall": 0.0, "f1": 0.0}
    c = pr_curve(scores, hits, n_gt)
    last = np.r_[scores[1:] != scores[:-1], True]  # the last detection of each score value
    p, r, t = c["precision"][last], c["recall"][last], c["threshold"][last]
    f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0.0)
    i = int(np.argmax(f1))
    return {"threshold": float(t[i]), "precision": float(p[i]), "recall": float(r[i]), "f1": float(f1[i])}


def recall_at_precision(scores: np.ndarray, hits: np.ndarray, n_gt: int, min_precision: float = 0.9) -> float:
    """Highest recall reached at a threshold whose precision is at least ``min_precision``."""
    if n_gt == 0 or len(scores) == 0:
        return 0.0
    c = pr_curve(scores, hits, n_gt)
    last = np.r_[scores[1:] != scores[:-1], True]
    ok = (c["precision"] >= min_precision) & last
    return float(c["recall"][ok].max()) if ok.any() else 0.0


def detection_metrics(dets: Sequence[np.ndarray], gts: Sequence[np.ndarray], min_score: float | None = None) -> dict[str, Any]:
    """AP50, AP50:95 and the operating points at IoU 0.5 of detections against ground truth.

    Args:
        dets: per image, (N, 5) detections x0, y0, x1, y1, score.
        gts: per image, (M, 4) ground-truth boxes (an image without faces is (0, 4)).
        min_score: also report precision and recall of the detections at or above this score.

    Returns:
        ``ap50``, ``ap50_95``, ``ap_per_iou``, ``best_f1`` (threshold, precision, recall, f1),
        ``recall_at_p90``, ``n_images``, ``n_faces``, ``n_detections`` and, with ``min_score``,
        ``at_min_score``.
    """
    aps = {}
    for thr in IOU_THRESHOLDS:
        s, h, n_gt = score_hits(dets, gts, thr)
        aps[f"{thr:.2f}"] = average_precision(s, h, n_gt)
    s, h, n_gt = score_hits(dets, gts, 0.5)
    out: dict[str, Any] = {
        "ap50": aps["0.50"],
        "ap50_95": float(np.mean(list(aps.values()))),
        "ap_per_iou": aps,
        "best_f1": best_f1(s, h, n_gt),
        "recall_at_p90": recall_at_precision(s, h, n_gt, 0.9),
        "n_images": len(gts),
        "n_faces": n_gt,
        "n_detections": int(len(s)),
    }
    if min_score is not None:
        keep = s >= min_score
        tp = int(h[keep].sum())
        out["at_min_score"] = {
            "min_score": float(min_score),
            "precision": tp / int(keep.sum()) if keep.any() else 0.0,
            "recall": tp / n_gt if n_gt else 0.0,
        }
    return out
