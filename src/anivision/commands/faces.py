"""``anivision faces crop|train|evaluate``: find anime faces, train a detector, measure one."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from anivision.commands import add_shared, deprecated, print_help_when_bare
from anivision.data.faces import crop_faces
from anivision.errors import AnivisionError
from anivision.tasks.faces import FaceTrainConfig, evaluate_detector, load_detector, read_face_boxes, train_detector
from anivision.tasks.faces.predictor import DEFAULT_MIN_SCORE

DETECTOR_HELP = (
    "learned (the packaged CNN detector), lbp (the 2011 LBP cascade), a detector run folder or "
    ".safetensors file from 'faces train', or an OpenCV cascade .xml"
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``faces`` command and its ``crop``, ``train`` and ``evaluate`` sub-commands.

    Args:
        subparsers: the object returned by ``ArgumentParser.add_subparsers()``.
    """
    faces = subparsers.add_parser("faces", help="face tools: detect and crop anime faces, train and evaluate a face detector")
    sub = faces.add_subparsers(dest="faces_command", metavar="FACES_COMMAND")
    print_help_when_bare(faces)
    _register_crop(sub)
    _register_train(sub)
    _register_evaluate(sub)


def _register_crop(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "crop",
        help="detect anime faces and save crops, keeping the folder layout",
        description=(
            "Detect anime faces (default: the packaged learned detector; --detector lbp: nagadomi's LBP "
            "anime-face cascade, MIT) and save each face as DST/<sub-folder>/<stem>_face<i>.jpg, best face "
            "first. Writes DST/boxes.csv (source,crop,x,y,w,h,score; score is the detector's confidence), "
            "DST/no_face.txt and DST/unreadable.txt."
        ),
    )
    p.add_argument("src", metavar="SRC", help="image folder (searched recursively) or one image")
    p.add_argument("dst", metavar="DST", help="output folder")
    p.add_argument("--detector", default="learned", metavar="{learned,lbp,FILE}", help=DETECTOR_HELP)
    p.add_argument("--min-score", type=float, default=DEFAULT_MIN_SCORE, help="learned detectors: keep faces with at least this confidence (0-1)")
    p.add_argument("--detect-size", type=int, help="learned detectors: long side images are resized to before detection (default: the detector's, 384); raise it for pages with small faces")
    p.add_argument("--margin", type=float, default=0.25, help="grow each face box by this fraction of its size on every side")
    p.add_argument("--min-size", type=int, default=32, help="ignore faces smaller than this many pixels")
    p.add_argument("--square", action="store_true", help="square crops (shifted, not cut, at image edges)")
    p.add_argument("--size", type=int, help="resize crops: N x N with --square, else longer side N (default: keep the crop's size)")
    p.add_argument("--detector-file", metavar="XML", help="an OpenCV cascade XML, the same as --detector XML (default: none, use --detector)")
    p.add_argument("--scale-factor", type=float, default=1.1, help="cascades: pyramid step; 1.05 finds more faces, twice as slow")
    p.add_argument("--min-neighbors", type=int, default=5,
                   help="cascades: overlapping detections needed per face; lower finds more, and more false ones")
    deprecated(p, "--no-progress", "-q/--quiet", sets=("quiet", True))
    p.set_defaults(func=run_crop)


def _register_train(sub: argparse._SubParsersAction) -> None:
    d = FaceTrainConfig()
    p = sub.add_parser(
        "train",
        help="train a face detector on your own face boxes (resumable)",
        description=(
            "Train the learned face detector (frozen EfficientNet-Lite0 features, trained neck and head) on "
            "BOXES/boxes.csv (image,x,y,w,h), BOXES/images.csv (image,split; optional: faceless images are "
            "negatives) and BOXES/images/. Rerun the same command to resume a killed run. Use the result with "
            "'faces crop --detector RUN' and 'faces evaluate RUN'."
        ),
    )
    p.add_argument("--boxes", required=True, metavar="DIR", help="face-box folder (boxes.csv, images.csv, images/)")
    add_shared(p, "--out", "the run folder", required=True, metavar="RUN")
    p.add_argument("--split", default=d.split, metavar="NAME", help="images.csv split to train on (all: every image)")
    add_shared(p, "--epochs", default=d.epochs)
    add_shared(p, "--batch-size", "(augmented views)", default=d.batch_size)
    p.add_argument("--views", type=int, default=d.views, help="augmented views per image (their backbone features are computed once)")
    p.add_argument("--lr", type=float, default=d.lr, help="AdamW learning rate (warmup + cosine)")
    add_shared(p, "--img-size", "(long side at detection)", default=d.img_size)
    p.add_argument("--canvas", type=int, default=d.canvas, help="side of a training view in pixels")
    p.add_argument("--weights", default=d.weights, help="backbone weights: efficientnet_lite0_imagenet (offline), none, or a file")
    add_shared(p, "--seed", default=d.seed)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.set_defaults(func=run_train)


def _register_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="AP50, AP50:95, precision and recall of a face detector on a face-box folder",
        description=(
            "Evaluate a trained detector RUN, or --detector learned|lbp|FILE, on the boxes of --boxes DIR: writes "
            "metrics.json, report.md, detections.csv, pr_curve.png and errors.png (missed and false boxes)."
        ),
    )
    p.add_argument("run", nargs="?", metavar="RUN", help="a detector run folder of 'faces train' (default: none, then --detector names the detector)")
    p.add_argument("--detector", metavar="{learned,lbp,FILE}", help=DETECTOR_HELP + " (default: none, give RUN instead)")
    p.add_argument("--boxes", metavar="DIR", help="face-box folder (default: the run's training folder)")
    p.add_argument("--split", default="val", metavar="NAME", help="images.csv split to evaluate (all: every image)")
    add_shared(p, "--out", "the evaluation", default_text="RUN/eval-SPLIT, or eval-DETECTOR-SPLIT here")
    p.add_argument("--greyscale", action="store_true", help="detect on greyscale copies of the images")
    p.add_argument("--min-score", type=float, default=DEFAULT_MIN_SCORE, help="also report precision and recall at this confidence (learned detectors)")
    p.add_argument("--detect-size", type=int, help="learned detectors: long side at detection (default: the detector's)")
    p.set_defaults(func=run_evaluate)


def run_crop(args: argparse.Namespace) -> int:
    """Crop the faces and print a summary line.

    Returns:
        0 (also when no face was found: that is reported, not an error).

    Raises:
        AnivisionError: missing SRC, missing or unloadable detector, bad option value.
    """
    name = args.detector_file or args.detector
    detector = load_detector(
        name, min_score=args.min_score, img_size=args.detect_size,
        scale_factor=args.scale_factor, min_neighbors=args.min_neighbors, min_size=args.min_size,
    )
    quiet = getattr(args, "quiet", False)
    s = crop_faces(args.src, args.dst, margin=args.margin, min_size=args.min_size, square=args.square, size=args.size,
                   detector=detector, progress=not quiet)
    readable = s["n_images"] - len(s["unreadable"])
    print(
        f"faces: {s['n_faces']} face(s) in {s['n_with_face']} of {readable} readable image(s) "
        f"({100 * s['hit_rate']:.2f}%) -> {s['dst']}; "
        f"{len(s['no_face'])} without a face (no_face.txt), {len(s['unreadable'])} unreadable (unreadable.txt)"
    )
    print(f"boxes: {s['boxes_csv']}")
    return 0


def run_train(args: argparse.Namespace) -> int:
    """Train (or resume, or reuse) a detector run and print where its weights are."""
    cfg = FaceTrainConfig(
        boxes=args.boxes, out=args.out, split=args.split, epochs=args.epochs, batch_size=args.batch_size, views=args.views,
        lr=args.lr, img_size=args.img_size, canvas=args.canvas, weights=args.weights, seed=args.seed, threads=args.threads,
        progress=not getattr(args, "quiet", False),
    )
    m = train_detector(cfg)
    print(f"trained on {m['n_images']} image(s), {m['n_faces']} face(s), {m['n_negatives']} without a face; final loss {m['final_loss']:.4f}")
    print(f"detector: {Path(args.out) / m['weights']} (use: anivision faces crop SRC DST --detector {args.out})")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    """Evaluate one detector and print its headline figures."""
    if bool(args.run) == bool(args.detector):
        raise AnivisionError("give a detector run folder RUN or --detector learned|lbp|FILE (one of them)")
    boxes = args.boxes
    if boxes is None:
        cfg_file = Path(args.run or "") / "config.json"
        if not args.run or not cfg_file.is_file():
            raise AnivisionError("--boxes DIR is needed (only a run folder of 'faces train' knows its own)")
        boxes = json.loads(cfg_file.read_text())["boxes"]
    name = args.run or args.detector
    detector = load_detector(name, min_score=0.01, img_size=args.detect_size, min_size=8)
    data = read_face_boxes(boxes, args.split)
    grey = "-grey" if args.greyscale else ""
    out = args.out or (Path(args.run) / f"eval-{args.split}{grey}" if args.run else Path(f"eval-{Path(str(name)).stem}-{args.split}{grey}"))
    is_learned = getattr(detector, "colour", False)
    m = evaluate_detector(detector, data, out, name=str(name), split=args.split, greyscale=args.greyscale,
                          min_score=args.min_score if is_learned else None, progress=not getattr(args, "quiet", False))
    b = m["best_f1"]
    print(
        f"{name} on {args.split} ({m['n_images']} images, {m['n_faces']} faces): AP50 {m['ap50']:.3f}, AP50:95 {m['ap50_95']:.3f}; "
        f"best F1 {b['f1']:.3f} at score >= {b['threshold']:.3f}: precision {b['precision']:.3f}, recall {b['recall']:.3f}; "
        f"recall at precision >= 0.9: {m['recall_at_p90']:.3f}; {1000 * m['seconds_per_image']:.0f} ms/image"
    )
    print(f"report: {Path(out) / 'report.md'}")
    return 0
