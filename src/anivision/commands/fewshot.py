"""``anivision fewshot train|evaluate``, ``anivision enroll`` and ``anivision identify``.

Few-shot character recognition with prototypical networks: meta-train a backbone on
class-disjoint episodes, measure N-way K-shot accuracy on unseen characters, enrol characters
from a folder per character (no retraining) and identify images against them, open-set.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from anivision.commands import print_help_when_bare
from anivision.errors import AnivisionError
from anivision.files import atomic_write_csv
from anivision.models.backbone import DEFAULT_BACKBONE, DEFAULT_WEIGHTS
from anivision.reports.fewshot import format_cell
from anivision.tasks.fewshot import (
    GRID_SHOTS,
    GRID_WAYS,
    BackboneSpec,
    FewShotTrainConfig,
    backbone_spec,
    enroll_gallery,
    evaluate_fewshot,
    identify_paths,
    train_fewshot,
)


def _add_backbone_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", help="few-shot run folder from 'anivision fewshot train' (its backbone, weights and classes)")
    p.add_argument("--backbone", help="timm model name when no --run (default tf_efficientnet_lite0)")
    p.add_argument("--weights", help="imagenet | none | efficientnet_lite0_imagenet (default) | FILE, with --backbone")
    p.add_argument("--img-size", type=int, help="input side in pixels (default: the run's, else 128)")
    p.add_argument("--distance", choices=("euclidean", "cosine"), help="squared euclidean (Snell et al.) or cosine (default: the run's, else euclidean)")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--cache-dir", help="decoded-image and feature caches (default $ANIVISION_CACHE or ~/.cache/anivision)")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``fewshot {train,evaluate}``, ``enroll`` and ``identify``."""
    fs = subparsers.add_parser("fewshot", help="few-shot character recognition: prototypical networks (train, evaluate)")
    sub = fs.add_subparsers(dest="fewshot_command", metavar="{train,evaluate}")
    print_help_when_bare(fs)

    p = sub.add_parser("train", help="meta-train a backbone on episodes of class-disjoint training classes")
    p.add_argument("--data", required=True, help="class-per-folder dataset (one folder per character)")
    p.add_argument("--backbone", default=None, help="any timm model name (default tf_efficientnet_lite0)")
    p.add_argument("--weights", default=None, help="imagenet | none | efficientnet_lite0_imagenet (default) | FILE")
    p.add_argument("--img-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=20, help="AniWho: 100")
    p.add_argument("--episodes-per-epoch", type=int, default=100)
    p.add_argument("--n-way", type=int, default=5)
    p.add_argument("--k-shot", type=int, default=5)
    p.add_argument("--n-query", type=int, default=10)
    p.add_argument("--val-episodes", type=int, default=300, help="validation episodes per epoch (on cached embeddings)")
    p.add_argument("--val-max-per-class", type=int, help="embed at most this many validation images per class each epoch (default all)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--classes", help="train/val/test class counts, e.g. 10/3/3")
    g.add_argument("--ratios", help="train/val/test class shares (default 60/20/20)")
    p.add_argument("--seed", type=int, default=0, help="class split, episodes and augmentation")
    p.add_argument("--distance", choices=("euclidean", "cosine"), default="euclidean")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--pretrain", choices=("none", "supervised"), default="none", help="supervised: cross-entropy on the training classes first, then episodes")
    p.add_argument("--pretrain-epochs", type=int, default=3)
    p.add_argument("--grad-clip", type=float, help="max gradient norm (default: no clipping)")
    p.add_argument("--amp", action="store_true", help="mixed precision (float16 autocast) on CUDA; changes the numerics")
    p.add_argument("--min-crop-scale", type=float, default=0.08, help="RandomResizedCrop minimum area (default 0.08, torchvision's)")
    p.add_argument("--skip-small-classes", action="store_true", help="leave out classes with fewer than K + Q images (else an error)")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device")
    p.add_argument("--cache-dir")
    p.add_argument("--out", required=True, help="run folder (rerun the same command to resume)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="N-way K-shot accuracy ± 95%% CI on unseen classes (cached embeddings)")
    p.add_argument("--data", help="class-per-folder dataset (default: the run's)")
    _add_backbone_args(p)
    p.add_argument("--n-way", type=int, default=5)
    p.add_argument("--k-shot", type=int, default=5)
    p.add_argument("--n-query", type=int, default=10)
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0, help="episode seed")
    p.add_argument("--split", choices=("test", "val", "unseen", "train", "all"),
                   help="which classes (default: test with --run, all with --backbone); unseen = val + test")
    p.add_argument("--class-split", help="classes.json (or a run folder) defining the split, with --backbone")
    p.add_argument("--grid", action="store_true", help="{5,20}-way x {1,5}-shot (AniWho Table 8); writes fewshot.md too")
    p.add_argument("--skip-small-classes", action="store_true")
    p.add_argument("--out", help="folder for fewshot.json (default RUN/fewshot-<split>, else fewshot-<backbone>-<split>)")
    p.set_defaults(func=cmd_evaluate)

    p = subparsers.add_parser("enroll", help="one prototype per character folder, for 'anivision identify'")
    _add_backbone_args(p)
    p.add_argument("--gallery", required=True, help="folder of character folders (adding a character = adding a folder)")
    p.add_argument("--k-shot", type=int, help="images per character (seeded choice; default all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threshold-percentile", type=float, default=95.0,
                   help="'unknown' beyond this percentile of leave-one-out own-prototype distances (default 95)")
    p.add_argument("--out", required=True, help="gallery folder to write (prototypes.safetensors + gallery.json)")
    p.set_defaults(func=cmd_enroll)

    p = subparsers.add_parser("identify", help="nearest enrolled characters of images (open-set: 'unknown')")
    p.add_argument("gallery", help="gallery folder from 'anivision enroll'")
    p.add_argument("paths", nargs="+", help="image files, folders or glob patterns")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--threshold", type=float, help="override the gallery's 'unknown' distance threshold (inf: never unknown)")
    p.add_argument("--device")
    p.add_argument("--out", help="CSV path,pred_1,dist_1,...,pred_K,dist_K (default: print)")
    p.set_defaults(func=cmd_identify)


def cmd_train(args: argparse.Namespace) -> int:
    cfg = FewShotTrainConfig(
        data=args.data, out=args.out, backbone=args.backbone or DEFAULT_BACKBONE, weights=args.weights or DEFAULT_WEIGHTS,
        img_size=args.img_size, classes=args.classes, ratios=args.ratios, seed=args.seed, epochs=args.epochs,
        episodes_per_epoch=args.episodes_per_epoch, n_way=args.n_way, k_shot=args.k_shot, n_query=args.n_query,
        val_episodes=args.val_episodes, val_max_per_class=args.val_max_per_class, distance=args.distance, lr=args.lr, min_crop_scale=args.min_crop_scale,
        pretrain=args.pretrain, pretrain_epochs=args.pretrain_epochs, skip_small_classes=args.skip_small_classes,
        grad_clip=args.grad_clip or None, amp=args.amp,
        workers=args.workers, device=args.device, cache_dir=args.cache_dir,
    )
    s = train_fewshot(cfg, progress=not args.quiet)
    c = s["classes"]
    if s["best_val_acc"] is not None:
        init = s["initial_val_acc"]
        print(f"best val {s['val_n_way']}-way {cfg.k_shot}-shot accuracy {100 * s['best_val_acc']:.2f}% at epoch {s['best_epoch']} "
              f"(before meta-training {100 * init:.2f}%)")
    print(f"held-out test classes: {', '.join(c['test']) or 'none'}")
    print(f"weights: {Path(cfg.out) / 'model.safetensors'}")
    if c["test"]:
        print(f"next: anivision fewshot evaluate --run {cfg.out} --n-way {min(cfg.n_way, len(c['test']))} --k-shot {cfg.k_shot}")
    return 0


def _spec(args: argparse.Namespace) -> BackboneSpec:
    return backbone_spec(args.run, args.backbone, args.weights, args.img_size)


def cmd_evaluate(args: argparse.Namespace) -> int:
    spec = _spec(args)
    data = args.data
    if not data:
        if not spec.run:
            raise AnivisionError("fewshot evaluate needs --data DIR (or --run RUN_DIR, which remembers its data)")
        data = json.loads((Path(spec.run) / "config.json").read_text())["data"]
    if not Path(data).exists():
        raise AnivisionError(f"{data}: no such dataset folder")
    for name in ("n_way", "k_shot", "n_query", "episodes"):
        if getattr(args, name) < 1:
            raise AnivisionError(f"--{name.replace('_', '-')} must be at least 1")
    cells = [(n, k) for n in GRID_WAYS for k in GRID_SHOTS] if args.grid else [(args.n_way, args.k_shot)]
    split = args.split or ("test" if spec.run else "all")
    out = args.out or (Path(spec.run) / f"fewshot-{split}" if spec.run else Path(f"fewshot-{spec.backbone}-{split}"))
    r = evaluate_fewshot(
        data, spec, cells, n_query=args.n_query, episodes=args.episodes, seed=args.seed, split=split,
        class_split=args.class_split, distance=args.distance, skip_small_classes=args.skip_small_classes,
        out=out, cache_dir=args.cache_dir, device=args.device, progress=not args.quiet,
    )
    cells_out = r["grid"] if args.grid else [r]
    for c in cells_out:
        acc = format_cell(c) + ("%" if c.get("accuracy") is not None else "")
        line = f"{c['n_way']}-way {c['k_shot']}-shot ({c['n_query']} queries, {c['episodes']} episodes): {acc}"
        print(line + (f"  ({c['note']})" if c.get("note") else ""))
    print(f"{r['n_classes']} {r['split']} classes, {r['n_images']} images ({r['n_skipped']} skipped), {r['distance']} distance -> {r['out']}")
    return 0


def cmd_enroll(args: argparse.Namespace) -> int:
    if args.k_shot is not None and args.k_shot < 1:
        raise AnivisionError("--k-shot must be at least 1")
    meta = enroll_gallery(
        args.gallery, args.out, _spec(args), k_shot=args.k_shot, seed=args.seed, distance=args.distance,
        percentile=args.threshold_percentile, cache_dir=args.cache_dir, device=args.device, progress=not args.quiet,
    )
    thr = "none" if meta["threshold"] is None else f"{meta['threshold']:.4g}"
    loo = "n/a" if meta["loo_accuracy"] is None else f"{100 * meta['loo_accuracy']:.1f}%"
    print(f"enrolled {len(meta['classes'])} character(s), {sum(meta['counts'])} image(s) ({len(meta['skipped'])} skipped); "
          f"{meta['distance']} distance, 'unknown' threshold {thr}; leave-one-out accuracy {loo} -> {meta['out']}")
    return 0


def cmd_identify(args: argparse.Namespace) -> int:
    thr = args.threshold
    if thr is not None and math.isnan(thr):
        raise AnivisionError("--threshold must be a number")
    rows, skipped = identify_paths(args.gallery, args.paths, top_k=args.top_k, threshold=thr, device=args.device, progress=not args.quiet)
    for reason in skipped.values():
        print(f"skipped: {reason}", file=sys.stderr)
    k = max((int(key.split("_")[1]) for r in rows for key in r if key.startswith("pred_")), default=1)
    if args.out:
        out = Path(args.out)
        fields = ["path"] + [f for i in range(1, k + 1) for f in (f"pred_{i}", f"dist_{i}")]
        atomic_write_csv(out, rows, fields, float_format="{:.6g}")
        print(f"{len(rows)} image(s) identified ({len(skipped)} skipped) -> {out}")
    else:
        for r in rows:
            preds = [f"{r[f'pred_{i}']} {r[f'dist_{i}']:.4g}" for i in range(1, k + 1) if f"pred_{i}" in r]
            print(r["path"] + "\t" + "\t".join(preds))
    return 0 if rows else 1
