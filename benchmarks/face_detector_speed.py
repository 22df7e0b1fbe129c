"""Detection time per 640 px illustration on one CPU thread: the learned detector vs the LBP cascade.

Each validation image (long side 640 px) is given to both detectors in turn, alternating which goes
first, for ``--rounds`` rounds; the medians over all calls are printed (ms per image), so both
see the same machine load.

    python benchmarks/face_detector_speed.py --boxes ../shared/data/face-boxes --detector learned
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import cv2
import torch

from anivision.data.faces import detect_faces
from anivision.tasks.faces import load_detector, read_face_boxes
from anivision.tasks.faces.views import load_rgb, resize_long_side


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--boxes", required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--detector", default="learned", help="learned, a run folder or a .safetensors file")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    learned = load_detector(args.detector)
    cascade = load_detector("lbp", min_size=8)
    data = read_face_boxes(args.boxes, args.split)
    images = [resize_long_side(load_rgb(str(im.path)), 640)[0] for im in data.images]
    times: dict[str, list[float]] = {"learned": [], "lbp": []}
    detect_faces(images[0], learned)  # warm-up
    for r in range(args.rounds):
        for i, img in enumerate(images):
            order = [("learned", learned), ("lbp", cascade)]
            for name, det in order if (i + r) % 2 == 0 else order[::-1]:
                t0 = time.perf_counter()
                detect_faces(img, det)
                times[name].append(time.perf_counter() - t0)
    out = {name: {"median_ms": 1000 * statistics.median(t), "mean_ms": 1000 * statistics.fmean(t), "calls": len(t)} for name, t in times.items()}
    out["ratio_learned_over_lbp"] = out["learned"]["median_ms"] / out["lbp"]["median_ms"]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
