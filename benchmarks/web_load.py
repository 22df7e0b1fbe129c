"""Load test of ``anivision serve`` on loopback: concurrent uploads, and the answer time for an illustration.

Starts ``anivision serve`` as a subprocess on 127.0.0.1 (a free port) with real runs, then:

1. **Concurrency**: ``--concurrent`` (20) uploads at once of one 640 px image (a character face
   crop scaled up to 640 x 640). Each answer must be HTTP 200 and equal the answer of the same
   upload made alone (every face's box, top labels and identity); how many name the picture's
   true character as the classifier's top label is reported beside.
2. **Latency**: ``--repeats`` uploads, one after the other, of one 640 px illustration with two
   faces (the first ``face-boxes`` illustration with two hand-drawn boxes where the detector also
   finds exactly two faces); the median wall time per answer, seen by the client.

Example (numbers in benchmarks/RESULTS.md)::

    anivision train --data ../shared/data/characters --strategy linear_probe --out runs/char-lp
    anivision enroll tf_efficientnet_lite0 ../shared/data/characters --k-shot 20 --out runs/char-gallery
    python benchmarks/web_load.py --run runs/char-lp --gallery runs/char-gallery --out benchmarks/results/web_load.json
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from PIL import Image

from anivision.data.faces import detect_faces
from anivision.files import atomic_write_json
from anivision.web.service import MIN_FACE, face_detector

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=92)
    return buf.getvalue()


def two_face_illustration(root: Path) -> tuple[Path, list[tuple[float, ...]]]:
    """The first illustration (sorted) with two hand-drawn face boxes where the detector finds exactly two."""
    boxes: dict[str, list[tuple[float, ...]]] = {}
    with open(root / "boxes.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            boxes.setdefault(r["image"], []).append(tuple(float(r[k]) for k in ("x", "y", "w", "h")))
    detector = face_detector()
    for name in sorted(n for n, b in boxes.items() if len(b) == 2):
        path = root / "images" / name
        img = Image.open(path).convert("RGB")
        if max(img.size) == 640 and len([b for b in detect_faces(img, detector) if min(b.w, b.h) >= MIN_FACE]) == 2:
            return path, boxes[name]
    raise SystemExit(f"{root}: no illustration with two detected faces")


def start_server(args: list[str], log_path: Path, timeout: float = 300) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "anivision.cli", "serve", *args, "--host", "127.0.0.1", "--port", "0"]
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        found = re.search(r"anivision serve: (http://\S+)", log_path.read_text())
        if found:
            return proc, found.group(1)
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"the server did not start:\n{log_path.read_text()}")


def post(client: httpx.Client, url: str, name: str, data: bytes) -> tuple[float, httpx.Response]:
    t = time.perf_counter()
    r = client.post(url + "api/analyse", files=[("files", (name, data, "image/jpeg"))])
    return time.perf_counter() - t, r


def summary(answer: dict) -> list[list[str]]:
    """What must not change between two answers to one picture: every face's box and labels."""
    return [[str(f["box"])] + [c["top"][0]["label"] for c in f["classifiers"]] + [str((f["identity"] or {}).get("label"))]
            for im in answer["images"] for f in im["faces"]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", action="append", default=[], required=True, help="classification run(s)")
    ap.add_argument("--gallery", help="an enrolled gallery")
    ap.add_argument("--retrieval", help="a retrieval run")
    ap.add_argument("--retrieval-gallery", help="images the retrieval run searches")
    ap.add_argument("--characters", default=str(SHARED / "characters"), help="character folders (the 640 px image)")
    ap.add_argument("--face-boxes", default=str(SHARED / "face-boxes"), help="illustrations with face boxes")
    ap.add_argument("--concurrent", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=15, help="sequential uploads of the illustration (median)")
    ap.add_argument("--threads", type=int, help="the server's --threads")
    ap.add_argument("--out", help="JSON file of the results")
    args = ap.parse_args()

    character = sorted(p for p in Path(args.characters).iterdir() if p.is_dir())[0]
    face_path = sorted(character.glob("*.jpg"))[0]
    face640 = jpeg(Image.open(face_path).convert("RGB").resize((640, 640), Image.Resampling.BICUBIC))
    scene_path, true_boxes = two_face_illustration(Path(args.face_boxes))
    scene = scene_path.read_bytes()

    serve = [a for r in args.run for a in ("--run", r)]
    for flag in ("gallery", "retrieval", "retrieval_gallery", "threads"):
        if getattr(args, flag):
            serve += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    log = Path(args.out or "web_load.json").with_suffix(".server.log")
    load_start = os.getloadavg()[0]  # other work on the machine: the figures are only comparable at low load
    t = time.perf_counter()
    proc, url = start_server(serve, log)
    started = time.perf_counter() - t
    try:
        with httpx.Client(timeout=300) as client:
            _, ref = post(client, url, "face640.jpg", face640)  # alone (and warms up)
            ref.raise_for_status()
            expected = summary(ref.json())
            barrier = threading.Barrier(args.concurrent)

            def one(i: int) -> tuple[float, int, bool, str]:
                with httpx.Client(timeout=300) as c:
                    barrier.wait()
                    dt, r = post(c, url, f"face640-{i}.jpg", face640)
                    ok = r.status_code == 200 and summary(r.json()) == expected
                    top = r.json()["images"][0]["faces"][0]["classifiers"][0]["top"][0]["label"] if r.status_code == 200 else ""
                    return dt, r.status_code, ok, top

            t = time.perf_counter()
            with ThreadPoolExecutor(args.concurrent) as pool:
                conc = list(pool.map(one, range(args.concurrent)))
            conc_wall = time.perf_counter() - t
            n_right = sum(ok for _, _, ok, _ in conc)
            n_true = sum(ok and top == character.name for _, _, ok, top in conc)

            times, server_times, answer = [], [], None
            post(client, url, scene_path.name, scene)  # warm-up of this image size
            for _ in range(args.repeats):
                dt, r = post(client, url, scene_path.name, scene)
                r.raise_for_status()
                answer = r.json()
                times.append(dt)
                server_times.append(answer["timings"])
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    faces = answer["images"][0]["faces"]
    stages = {k: statistics.median(t[k] for t in server_times) for k in server_times[0]}
    result = {
        "server": {"args": serve, "start_s": round(started, 2), "url": url},
        "concurrency": {
            "image": f"{face_path} scaled to 640 x 640", "true_label": character.name, "uploads": args.concurrent,
            "status": dict(Counter(s for _, s, _, _ in conc)), "answered_correctly": n_right,
            "top_label_is_true_character": n_true,
            "top_labels": dict(Counter(top for _, _, _, top in conc)), "wall_s": round(conc_wall, 3),
            "median_s": round(statistics.median(d for d, *_ in conc), 3), "max_s": round(max(d for d, *_ in conc), 3),
        },
        "illustration": {
            "image": str(scene_path), "size": [answer["images"][0]["width"], answer["images"][0]["height"]],
            "faces_found": len(faces), "boxes": [f["box"] for f in faces], "hand_drawn_boxes": true_boxes,
            "labels": summary(answer), "repeats": args.repeats, "median_s": round(statistics.median(times), 3),
            "min_s": round(min(times), 3), "max_s": round(max(times), 3),
            "server_stage_median_s": {k: round(v, 3) for k, v in stages.items()},
        },
        "cpu_threads": os.cpu_count(),
        "load_average_1min": {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)},
    }
    print(json.dumps(result, indent=2))
    if args.out:
        atomic_write_json(args.out, result)
    ok = n_right == args.concurrent and len(faces) == 2
    print(f"concurrency: {n_right}/{args.concurrent} answered correctly; illustration with {len(faces)} faces: "
          f"median {result['illustration']['median_s']:.3f} s over {args.repeats} uploads", file=sys.stderr)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
