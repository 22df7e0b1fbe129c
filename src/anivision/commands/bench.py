"""``anivision bench``: the backbone x strategy x seed benchmark matrix on one shared split."""

from __future__ import annotations

import argparse
from typing import Any

from anivision.commands import add_shared
from anivision.commands.classify import add_train_args
from anivision.engine.distributed import init_distributed
from anivision.errors import AnivisionError
from anivision.reports.bench import write_bench_report
from anivision.strategies import STRATEGIES
from anivision.tasks.bench import run_bench

#: Dests of the bench parser that are not ``anivision train`` options passed to every cell.
_BENCH_ONLY = frozenset({
    "command", "func", "quiet", "data", "split", "out", "backbones", "strategies", "seeds", "weights",
    "weights_map", "single_backbone", "single_strategy", "single_seed",
})


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bench`` sub-command.

    Every ``anivision train`` option is accepted and passed to each cell, except those the grid
    sets itself (``--backbone``, ``--strategy``, ``--seed``, ``--out``).

    Args:
        subparsers: the object returned by ``ArgumentParser.add_subparsers()``.
    """
    p = subparsers.add_parser(
        "bench",
        help="benchmark matrix: backbones x strategies x seeds on one split, with Table-1 report",
        description=(
            "Train one classifier per backbone / strategy / seed on one shared split and write "
            "results.csv, table.md, heatmap.png, bars.png, per_class_f1.md, paired.md and bench.md "
            "into --out. Rerun the same command to resume: finished cells are reused, failed ones retried. "
            "Any 'anivision train' option (--recipe, --img-size, --epochs, --batch-size, --cache-dir, ...) "
            "applies to every cell."
        ),
        # The train options come first; the bench's own --data/--split/--weights/--out replace
        # theirs (same meaning, bench-specific help).
        conflict_handler="resolve",
    )
    add_train_args(p)
    p.add_argument("--data", help="class-per-folder dataset or CSV manifest (default: the images of --split)")
    p.add_argument("--split", metavar="SPLIT.csv",
                   help="frozen split CSV for every cell (default: a new split by --ratios with the first seed, saved as BENCH_DIR/split.csv)")
    p.add_argument("--backbones", required=True, help="comma-separated timm model names, e.g. resnet18,vit_small_patch16_224")
    p.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated fine-tuning strategies")
    p.add_argument("--seeds", default="42", help="comma-separated integer seeds, one cell each")
    p.add_argument("--weights", help="starting weights for every backbone (default: efficientnet_lite0_imagenet for "
                   "tf_efficientnet_lite0, none for vanilla_cnn, imagenet otherwise)")
    p.add_argument("--weights-map", help="per-backbone weights: backbone=W,backbone=W, overriding --weights (default: none)")
    add_shared(p, "--out", "the benchmark folder (rerun the same command to resume)", required=True, metavar="BENCH_DIR")
    # The grid owns these; a single-value train flag here is almost certainly a typo for the list form.
    p.add_argument("--backbone", dest="single_backbone", help=argparse.SUPPRESS)
    p.add_argument("--strategy", dest="single_strategy", help=argparse.SUPPRESS)
    p.add_argument("--seed", dest="single_seed", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_bench)


def parse_list(text: str | None, flag: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``.

    Raises:
        AnivisionError: the list is empty.
    """
    items = [t.strip() for t in (text or "").split(",") if t.strip()]
    if not items:
        raise AnivisionError(f"{flag} needs at least one name (comma-separated)")
    return items


def parse_seeds(text: str | None) -> list[int]:
    """``"42,43,44"`` -> ``[42, 43, 44]``.

    Raises:
        AnivisionError: empty, or a seed that is not an integer.
    """
    out = []
    for t in parse_list(text, "--seeds"):
        try:
            out.append(int(t))
        except ValueError:
            raise AnivisionError(f"--seeds: '{t}' is not an integer (expected e.g. 42,43,44)") from None
    return out


def parse_weights_map(text: str | None) -> dict[str, str]:
    """``"resnet18=imagenet,vit_small_patch16_224=w.safetensors"`` -> a dict.

    Raises:
        AnivisionError: an item without ``=`` or with an empty side.
    """
    if not text:
        return {}
    out: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        name, sep, weights = item.partition("=")
        if not sep or not name.strip() or not weights.strip():
            raise AnivisionError(f"--weights-map: '{item}' is not backbone=WEIGHTS")
        out[name.strip()] = weights.strip()
    return out


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the grid the flags describe, write the report and print where it is."""
    for flag, dest in (("--backbone", "single_backbone"), ("--strategy", "single_strategy"), ("--seed", "single_seed")):
        if getattr(args, dest, None) is not None:
            raise AnivisionError(f"bench takes {flag}s (a comma-separated list), not {flag}")
    backbones = parse_list(args.backbones, "--backbones")
    strategies = parse_list(args.strategies, "--strategies")
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise AnivisionError(f"--strategies: unknown strategy '{unknown[0]}' (choose from {', '.join(STRATEGIES)})")
    seeds = parse_seeds(args.seeds)
    if not args.data and not args.split:
        raise AnivisionError("bench needs --data DIR (or --split SPLIT.csv)")
    base_args: dict[str, Any] = {k: v for k, v in vars(args).items() if k not in _BENCH_ONLY and v is not None}
    if args.weights:
        base_args["weights"] = args.weights
    quiet = bool(getattr(args, "quiet", False))
    rows = run_bench(args.data, args.out, backbones, strategies, seeds, base_args, split=args.split,
                     progress=not quiet, weights_map=parse_weights_map(args.weights_map))
    if not init_distributed().is_main:
        return 0  # rank 0 writes the report
    report = write_bench_report(args.out, rows)
    n_failed = sum(r["status"] != "ok" for r in rows)
    print(f"bench: {len(rows) - n_failed}/{len(rows)} cells finished, {n_failed} failed -> {report}")
    # Failed cells are recorded, not fatal; a non-zero status still tells scripts to look.
    return 1 if n_failed else 0
