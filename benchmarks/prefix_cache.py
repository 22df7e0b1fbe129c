"""Partial fine-tuning: live network vs cached frozen-prefix activations (``--prefix-cache``).

Both runs train the same cells with augmentation off (the prefix cache requires it), the same
seed and split, so they should reach the same numbers up to float rounding; what differs is time.
The decoded-image cache is shared and warm; the activation cache starts cold, so the cached
run's wall time includes computing the activations once.

Usage:
  OMP_NUM_THREADS=1 python benchmarks/prefix_cache.py --split runs/characters-split.csv \
      --backbones tf_efficientnet_lite0,resnet18=none,vit_tiny_patch16_224=none --epochs 3 \
      --out benchmarks/results/prefix_cache.md
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

from anivision.config import NO_AUGMENT, resolve_train_config, train_option_defaults
from anivision.data.cache import default_cache_dir
from anivision.tasks.classify import train_classifier


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", required=True, help="frozen split CSV")
    ap.add_argument("--backbones", required=True, help="name or name=weights, comma-separated")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--img-size", type=int, default=128)
    ap.add_argument("--partial-groups", type=int, default=1)
    ap.add_argument("--out", required=True, help="Markdown table to write (a .json beside it)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="prefix-bench-"))
    # Warm decoded images, cold activation cache: link the shared image cache into a fresh folder.
    (work / "cache").mkdir()
    os.symlink(Path(default_cache_dir()) / "images", work / "cache" / "images")
    rows = []
    for item in args.backbones.split(","):
        name, _, weights = item.partition("=")
        for cached in (False, True):
            opts = train_option_defaults() | dict(
                split=args.split, out=str(work / f"{name}-{'cached' if cached else 'live'}"), backbone=name,
                strategy="partial", epochs=args.epochs, img_size=args.img_size, partial_groups=args.partial_groups,
                cache_dir=str(work / "cache"), prefix_cache=cached,
            )
            if weights:
                opts["weights"] = weights
            cfg = resolve_train_config(opts)
            cfg.aug = NO_AUGMENT  # the live run without augmentation too: same training problem
            m = train_classifier(cfg, progress=False)
            row = {
                "backbone": name, "weights": cfg.weights, "prefix_cache": cached, "accuracy": m["accuracy"],
                "nll": m["nll"], "avg_epoch_seconds": m["avg_epoch_seconds"], "wall_seconds": m["wall_seconds"],
                "trainable_percent": m["trainable_percent"],
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    shutil.rmtree(work, ignore_errors=True)

    lines = [
        f"Partial fine-tuning ({args.partial_groups} top group(s)), {args.epochs} epochs, {args.img_size} px, "
        f"augmentation off, threads={os.environ.get('OMP_NUM_THREADS', 'default')}.",
        "",
        "| backbone (weights) | trainable % | live: s/epoch | cached: s/epoch | epoch speed-up | live: wall s | cached: wall s (incl. prefix pass) | wall speed-up | test acc live / cached |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for live, cached in zip(rows[::2], rows[1::2]):
        lines.append(
            f"| {live['backbone']} ({live['weights']}) | {live['trainable_percent']:.1f} | {live['avg_epoch_seconds']:.1f} | "
            f"{cached['avg_epoch_seconds']:.1f} | {live['avg_epoch_seconds'] / cached['avg_epoch_seconds']:.1f}x | "
            f"{live['wall_seconds']:.0f} | {cached['wall_seconds']:.0f} | {live['wall_seconds'] / cached['wall_seconds']:.1f}x | "
            f"{100 * live['accuracy']:.2f} / {100 * cached['accuracy']:.2f} |"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
