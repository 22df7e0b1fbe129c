"""``anivision data check``: report corrupt files, duplicates, label conflicts and split leakage."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from anivision.commands import add_shared, deprecated, print_help_when_bare
from anivision.data.checks import DEFAULT_MIN_SIZE, check_dataset, has_blocking_problems, write_check_report
from anivision.data.hashing import PHASH_THRESHOLD
from anivision.errors import AnivisionError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``data`` command and its ``check`` sub-command.

    Args:
        subparsers: the object returned by ``ArgumentParser.add_subparsers()``.
    """
    data = subparsers.add_parser("data", help="dataset tools: check a dataset before training on it")
    sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    print_help_when_bare(data)

    p = sub.add_parser(
        "check",
        help="counts, corrupt files, exact/near duplicates, label conflicts, split leakage",
        description=(
            "Read every image of a class-per-folder dataset (or CSV manifest) once and report "
            "counts per class and split, corrupt files, exact duplicates (sha1), near-duplicates "
            "(resized, re-compressed or lightly cropped copies, by perceptual hashes), copies filed "
            "under different classes (label conflicts), copies in different split parts (leakage), "
            "tiny and greyscale images. Writes check.md and check.json."
        ),
    )
    p.add_argument("dir", metavar="DIR", help="class-per-folder dataset DIR/<class>/<image>, or a CSV manifest")
    p.add_argument("--split", metavar="SPLIT.csv",
                   help="split CSV path,label,split,sha1 from 'anivision split': check leakage across its parts (default: none)")
    p.add_argument("--strict", action="store_true", help="exit with status 1 on leakage or label conflicts")
    add_shared(p, "--out", "the report folder (check.md, check.json)", default_text="./check-<DIR name>", metavar="DIR")
    p.add_argument("--min-size", type=int, default=DEFAULT_MIN_SIZE, help="list images whose shorter side is below this many pixels")
    p.add_argument("--near-threshold", type=int, default=PHASH_THRESHOLD,
                   help="largest pHash distance in bits (of 64) for near-duplicates")
    add_shared(p, "--workers", "(1: in this process; on 2 shared cores more did not pay)", default=1)
    deprecated(p, "--no-progress", "-q/--quiet", sets=("quiet", True))
    p.set_defaults(func=run_check)


def default_out_dir(data: str | Path) -> Path:
    """``./check-<name>``: the dataset folder's name, or the manifest's stem."""
    p = Path(data)
    name = p.stem if p.suffix.lower() == ".csv" else (p.resolve().name or "dataset")
    return Path(f"check-{name}")


def run_check(args: argparse.Namespace) -> int:
    """Check the dataset, write the report, print a summary.

    Args:
        args: parsed ``data check`` arguments.

    Returns:
        0, or 1 when ``--strict`` is given and leakage or label conflicts were found.

    Raises:
        AnivisionError: missing dataset or split file, malformed split file, bad option value.
    """
    if args.workers < 1:
        raise AnivisionError("--workers must be at least 1")
    if not Path(args.dir).exists():
        raise AnivisionError(f"{args.dir}: no such dataset folder or manifest")
    quiet = getattr(args, "quiet", False)
    try:
        result = check_dataset(
            args.dir,
            split_csv=args.split,
            min_size=args.min_size,
            near_threshold=args.near_threshold,
            workers=args.workers,
            progress=not quiet,
        )
    except KeyboardInterrupt:
        # A check keeps no partial state: nothing to resume, no report written.
        print("interrupted", file=sys.stderr)
        return 130
    out = Path(args.out) if args.out else default_out_dir(args.dir)
    md_path, _ = write_check_report(result, out)
    print(
        f"checked {result['n_images']} images in {len(result['classes'])} classes: "
        f"{len(result['corrupt'])} corrupt, {len(result['duplicates'])} exact-duplicate group(s), "
        f"{len(result['near_duplicates'])} near-duplicate group(s), "
        f"{len(result['label_conflicts'])} label conflict(s), {len(result['leakage'])} leakage group(s), "
        f"{len(result['tiny'])} tiny, {100 * result['grayscale_fraction']:.2f}% greyscale"
    )
    print(f"report: {md_path}")
    if args.strict and has_blocking_problems(result):
        print("strict: leakage or label conflicts found", file=sys.stderr)
        return 1
    return 0
