"""``anivision synth``: write a deterministic synthetic data set of cartoon faces."""

from __future__ import annotations

import argparse
from pathlib import Path

from anivision.commands import add_shared, deprecated
from anivision.data.synth import TASKS, generate


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``synth`` sub-command.

    Args:
        subparsers: the object returned by ``ArgumentParser.add_subparsers()``.
    """
    parser = subparsers.add_parser(
        "synth",
        help="generate procedural cartoon faces (emotion, character or style data sets)",
        description=(
            "Draw a deterministic synthetic data set of cartoon faces: the same seed gives "
            "byte-identical files. Layouts: emotion -> OUT/<Emotion>/, character -> OUT/role_NN/, "
            "style -> OUT/work_NN/role_NN/."
        ),
    )
    parser.add_argument("--task", required=True, choices=TASKS, help="which data set to draw")
    add_shared(parser, "--out", "the data set folder", required=True, type=Path, metavar="DIR")
    parser.add_argument("--n-per-class", type=int, default=60, help="images per class; per role for style")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    add_shared(parser, "--seed", "of the whole data set", default=0)
    parser.add_argument("--n-classes", type=int, default=None, help="number of roles, character task only (default: 8)")
    parser.add_argument("--n-works", type=int, default=8, help="number of works (rendering styles), style task only")
    parser.add_argument("--roles-per-work", type=int, default=4, help="identities drawn in each work, style task only")
    deprecated(parser, "--no-progress", "-q/--quiet", sets=("quiet", True))
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Generate the data set the parsed arguments describe and print a one-line summary.

    Args:
        args: parsed ``synth`` arguments.

    Returns:
        0 on success (errors are raised as :class:`anivision.errors.AnivisionError`).
    """
    summary = generate(
        args.task,
        args.out,
        n_per_class=args.n_per_class,
        size=args.size,
        seed=args.seed,
        n_classes=args.n_classes,
        n_works=args.n_works,
        roles_per_work=args.roles_per_work,
        progress=not getattr(args, "quiet", False),
    )
    print(
        f"synth {summary['task']}: wrote {summary['n_images']} images in {len(summary['counts'])} "
        f"classes ({summary['size']} px, seed {summary['seed']}) to {summary['out']}"
    )
    return 0
