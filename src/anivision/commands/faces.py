"""``anivision faces crop``: cut anime faces out of illustrations with the LBP anime-face cascade."""

from __future__ import annotations

import argparse

from anivision.commands import deprecated, print_help_when_bare
from anivision.data.faces import CascadeDetector, crop_faces


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``faces`` command and its ``crop`` sub-command.

    Args:
        subparsers: the object returned by ``ArgumentParser.add_subparsers()``.
    """
    faces = subparsers.add_parser("faces", help="face tools: detect and crop anime faces")
    sub = faces.add_subparsers(dest="faces_command", metavar="FACES_COMMAND")
    print_help_when_bare(faces)

    p = sub.add_parser(
        "crop",
        help="detect anime faces and save crops, keeping the folder layout",
        description=(
            "Detect anime faces with OpenCV's cascade classifier and nagadomi's LBP anime-face "
            "cascade (MIT, shipped with anivision), and save each face as DST/<sub-folder>/"
            "<stem>_face<i>.jpg, best face first. Writes DST/boxes.csv (source,crop,x,y,w,h,score), "
            "DST/no_face.txt and DST/unreadable.txt."
        ),
    )
    p.add_argument("src", metavar="SRC", help="image folder (searched recursively) or one image")
    p.add_argument("dst", metavar="DST", help="output folder")
    p.add_argument("--margin", type=float, default=0.25, help="grow each face box by this fraction of its size on every side")
    p.add_argument("--min-size", type=int, default=32, help="ignore faces smaller than this many pixels")
    p.add_argument("--square", action="store_true", help="square crops (shifted, not cut, at image edges)")
    p.add_argument("--size", type=int, help="resize crops: N x N with --square, else longer side N (default: keep the crop's size)")
    p.add_argument("--detector-file", metavar="XML", help="OpenCV cascade XML (default: the packaged anime-face cascade)")
    p.add_argument("--scale-factor", type=float, default=1.1, help="detector pyramid step; 1.05 finds more faces, twice as slow")
    p.add_argument("--min-neighbors", type=int, default=5,
                   help="overlapping detections needed per face; lower finds more, and more false ones")
    deprecated(p, "--no-progress", "-q/--quiet", sets=("quiet", True))
    p.set_defaults(func=run_crop)


def run_crop(args: argparse.Namespace) -> int:
    """Crop the faces and print a summary line.

    Args:
        args: parsed ``faces crop`` arguments.

    Returns:
        0 (also when no face was found: that is reported, not an error).

    Raises:
        AnivisionError: missing SRC, missing or unloadable detector file, bad option value.
    """
    detector = CascadeDetector.from_file(
        args.detector_file,
        scale_factor=args.scale_factor,
        min_neighbors=args.min_neighbors,
        min_size=args.min_size,
    )
    quiet = getattr(args, "quiet", False)
    s = crop_faces(
        args.src,
        args.dst,
        margin=args.margin,
        min_size=args.min_size,
        square=args.square,
        size=args.size,
        detector=detector,
        progress=not quiet,
    )
    readable = s["n_images"] - len(s["unreadable"])
    print(
        f"faces: {s['n_faces']} face(s) in {s['n_with_face']} of {readable} readable image(s) "
        f"({100 * s['hit_rate']:.2f}%) -> {s['dst']}; "
        f"{len(s['no_face'])} without a face (no_face.txt), {len(s['unreadable'])} unreadable (unreadable.txt)"
    )
    print(f"boxes: {s['boxes_csv']}")
    return 0
