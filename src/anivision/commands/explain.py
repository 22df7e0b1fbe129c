"""``anivision explain``: Grad-CAM / Grad-CAM++ heat maps of a classification run for image files."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from anivision.api import load, run_kind
from anivision.commands import add_shared
from anivision.errors import AnivisionError
from anivision.explain import METHODS, save_png, side_by_side
from anivision.files import atomic_write_csv

CSV_FIELDS = ["source", "png", "label", "prob", "predicted", "method"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``explain`` command."""
    p = subparsers.add_parser(
        "explain",
        help="Grad-CAM++ heat maps: which pixels drove a classification run's answer",
        description=(
            "For each image, a PNG with the model-input view and the heat map over it (jet colours: "
            "red drove the class), titled with the class and its probability; and OUT/explanations.csv "
            "(source,png,label,prob,predicted,method). Needs the [explain] extra (pytorch-grad-cam)."
        ),
    )
    p.add_argument("run_dir", metavar="RUN", help="classification run folder from 'anivision train'")
    p.add_argument("paths", nargs="+", metavar="IMAGES", help="image files, folders or glob patterns")
    p.add_argument("--method", choices=tuple(METHODS), default="gradcam++", help="class-activation map method")
    p.add_argument("--class", dest="class_name", metavar="NAME", help="explain this class (default: each image's predicted class)")
    add_shared(p, "--out", "the overlay PNGs and explanations.csv", required=True, metavar="DIR")
    add_shared(p, "--batch-size", default=16)
    p.set_defaults(func=cmd_explain)


def _png_name(source: str, index: int, taken: set[str]) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(source).stem if not source.startswith("<") else f"image{index}") or f"image{index}"
    name = f"{stem}_explain.png"
    n = 1
    while name in taken:
        n += 1
        name = f"{stem}_{n}_explain.png"
    taken.add(name)
    return name


def cmd_explain(args: argparse.Namespace) -> int:
    """Explain every readable image; unreadable ones are reported on stderr and skipped.

    Returns:
        0 when at least one image was explained, else 1.

    Raises:
        AnivisionError: RUN is not a classification run, unknown --class, a path matching nothing.
    """
    if run_kind(args.run_dir) != "classifier":
        raise AnivisionError(f"{args.run_dir}: explain needs a classification run (from 'anivision train')")
    if args.batch_size < 1:
        raise AnivisionError("--batch-size must be at least 1")
    clf = load(args.run_dir)
    found = clf.explain(args.paths, method=args.method, class_name=args.class_name, batch_size=args.batch_size, skip_unreadable=True)
    out = Path(args.out)
    rows, taken = [], set()
    for i, e in enumerate(found):
        name = _png_name(e.source, i, taken)
        title = f"{e.label} {100 * e.prob:.1f}%" + ("" if e.label == e.predicted else f" (predicted {e.predicted})") + f" - {args.method}"
        save_png(side_by_side(e.image, e.overlay, title), out / name)
        rows.append({"source": e.source, "png": name, "label": e.label, "prob": e.prob, "predicted": e.predicted, "method": args.method})
    n_given = len(rows)
    if rows:
        atomic_write_csv(out / "explanations.csv", rows, CSV_FIELDS)
    if not getattr(args, "quiet", False) or not rows:
        print(f"{n_given} explanation(s) ({args.method}) -> {out}", file=sys.stdout if rows else sys.stderr)
    return 0 if rows else 1
