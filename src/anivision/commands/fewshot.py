"""``anivision fewshot train|evaluate``, ``anivision enroll`` and ``anivision identify``.

Few-shot character recognition with prototypical networks: meta-train a backbone on
class-disjoint episodes, measure N-way K-shot accuracy on unseen characters, enrol characters
from a folder per character (no retraining) and identify images against them, open-set.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from anivision.commands import add_shared, deprecated, print_help_when_bare
from anivision.errors import AnivisionError
from anivision.files import atomic_write_csv
from anivision.models.backbone import DEFAULT_BACKBONE, DEFAULT_WEIGHTS
from anivision.models.transfer import DEFAULT_PARTS
from anivision.models.tta import TTA_CHOICES
from anivision.reports.fewshot import class_list, class_set_words
from anivision.tasks.fewshot import (
    DEFAULT_REJECT_RATE,
    GRID_SHOTS,
    GRID_WAYS,
    BackboneSpec,
    FewShotTrainConfig,
    backbone_spec,
    default_class_set,
    enroll_gallery,
    evaluate_fewshot,
    evaluation_name,
    identify_paths,
    run_data,
    train_fewshot,
)

#: ``fewshot evaluate --class-set``: which classes episodes are drawn from.
CLASS_SETS = ("test", "val", "unseen", "train", "all")


def _add_embedding_args(p: argparse.ArgumentParser) -> None:
    """Options of the commands that embed with a run's or an untrained backbone."""
    add_shared(p, "--img-size", default_text="the run's, else 128")
    add_shared(p, "--distance", default_text="the run's, else euclidean")
    add_shared(p, "--device")
    add_shared(p, "--cache-dir")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``fewshot {train,evaluate}``, ``enroll`` and ``identify``."""
    fs = subparsers.add_parser("fewshot", help="few-shot character recognition: prototypical networks (train, evaluate)")
    sub = fs.add_subparsers(dest="fewshot_command", metavar="{train,evaluate}")
    print_help_when_bare(fs)

    p = sub.add_parser("train", help="meta-train a backbone on episodes of class-disjoint training classes")
    p.add_argument("--data", required=True, help="class-per-folder dataset (one folder per character)")
    p.add_argument("--backbone", default=DEFAULT_BACKBONE, help="any timm model name")
    p.add_argument("--weights", default=DEFAULT_WEIGHTS,
                   help="starting weights: imagenet (timm's hub, needs a network) | none | efficientnet_lite0_imagenet | FILE")
    add_shared(p, "--img-size", default=128)
    add_shared(p, "--epochs", "(0: fit the embedding only; AniWho: 100)", default=2)
    p.add_argument("--episodes-per-epoch", type=int, default=50, help="training episodes per epoch")
    p.add_argument("--n-way", type=int, default=5, help="classes per training episode")
    p.add_argument("--k-shot", type=int, default=5, help="support images per class in an episode")
    p.add_argument("--n-query", type=int, default=10, help="query images per class in an episode")
    p.add_argument("--val-episodes", type=int, default=300, help="validation episodes per epoch (on cached embeddings)")
    p.add_argument("--val-max-per-class", type=int, help="embed at most this many validation images per class each epoch (default: all)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--classes", help="train/val/test class counts, e.g. 10/3/3 (default: use --ratios)")
    g.add_argument("--ratios", help="train/val/test class shares (default: 60/20/20)")
    add_shared(p, "--seed", "of the class split, episodes and augmentation", default=0)
    add_shared(p, "--distance", default="cosine")
    p.add_argument("--embedding", choices=("transfer", "pooled"), default="transfer",
                   help="transfer: pooled features of several stages, the head and a colour histogram, each centred and "
                   "normalised (transfers to other sources); pooled: the backbone's pooled features (the older recipe)")
    p.add_argument("--parts", default=DEFAULT_PARTS, help=f"the transfer embedding's parts (default: {DEFAULT_PARTS})")
    p.add_argument("--fit-images", type=int, default=1000, help="training images the transfer embedding's means are fitted on")
    p.add_argument("--train-groups", type=int, default=2,
                   help="top backbone parameter groups (timm's coarse groups) that meta-training trains; 0: all")
    p.add_argument("--val-data", metavar="DIR",
                   help="validate on every class of another source's dataset (chooses the best epoch) instead of the val classes "
                   "(default: the val classes)")
    p.add_argument("--lr", type=float, default=0.01, help="peak learning rate")
    p.add_argument("--pretrain", choices=("none", "supervised"), default="none",
                   help="supervised: cross-entropy on the training classes first, then episodes")
    p.add_argument("--pretrain-epochs", type=int, default=3, help="epochs of --pretrain supervised")
    p.add_argument("--grad-clip", type=float, help="max gradient norm (default: no clipping)")
    add_shared(p, "--amp", "(changes the numerics)", default=False)
    p.add_argument("--min-crop-scale", type=float, default=0.08, help="RandomResizedCrop minimum area (torchvision's default)")
    p.add_argument("--skip-small-classes", action="store_true", help="leave out classes with fewer than K + Q images (else an error)")
    add_shared(p, "--workers", default=0)
    add_shared(p, "--device")
    add_shared(p, "--cache-dir")
    add_shared(p, "--out", "the run folder (rerun the same command to resume)", required=True, metavar="RUN")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="N-way K-shot accuracy ± 95%% CI on unseen classes (cached embeddings)",
                       description="N-way K-shot accuracy ± 95% CI of a few-shot run (RUN) or of an untrained "
                       "backbone (--backbone/--weights), on episodes of cached embeddings.")
    p.add_argument("run", nargs="?", metavar="RUN",
                   help="few-shot run folder from 'anivision fewshot train': its backbone, weights and classes "
                   "(default: none: the untrained --backbone)")
    p.add_argument("--data", help="class-per-folder dataset (default: the run's)")
    p.add_argument("--backbone", help="without RUN: any timm model name (default: tf_efficientnet_lite0)")
    p.add_argument("--weights", help="without RUN: imagenet | none | efficientnet_lite0_imagenet | FILE (default: efficientnet_lite0_imagenet)")
    _add_embedding_args(p)
    p.add_argument("--n-way", type=int, default=5, help="classes per episode")
    p.add_argument("--k-shot", type=int, default=5, help="support images per class")
    p.add_argument("--n-query", type=int, default=10, help="query images per class")
    p.add_argument("--episodes", type=int, default=1000, help="episodes to average over")
    add_shared(p, "--seed", "of the episodes", default=0)
    p.add_argument("--class-set", choices=CLASS_SETS,
                   help="which classes to draw episodes from; unseen = val + test (default: test with RUN on its own dataset; "
                   "all on another --data or without RUN)")
    p.add_argument("--class-split", metavar="CLASSES",
                   help="without RUN: classes.json (or a run folder) that defines the class split (default: none)")
    p.add_argument("--grid", action="store_true", help="{5,20}-way x {1,5}-shot (AniWho Table 8) in one table")
    p.add_argument("--skip-small-classes", action="store_true", help="leave out classes with fewer than K + Q images (else an error)")
    add_shared(p, "--out", "the folder of fewshot.json, fewshot.md and report.html",
               default_text="RUN/fewshot-<data>-<class set>-<N>way-<K>shot (-grid with --grid), else ./fewshot-<backbone>-<data>-<class set>-...",
               metavar="DIR")
    p.add_argument("--force", action="store_true",
                   help="overwrite a fewshot.json in the output folder that a different evaluation wrote "
                   "(default: refuse; the same evaluation again always overwrites)")
    deprecated(p, "--run", "RUN, the first argument", position=0)
    deprecated(p, "--split", "--class-set")
    p.set_defaults(func=cmd_evaluate)

    p = subparsers.add_parser(
        "enroll", help="one prototype per character folder, for 'anivision identify'",
        description="Enrol characters: one prototype per folder of CHARACTERS (adding a character = adding a folder), "
        "embedded with a few-shot run, a classification run's fine-tuned backbone or a plain timm backbone, "
        "e.g. 'anivision enroll runs/proto my_characters/ --out gallery/' "
        "or 'anivision enroll tf_efficientnet_lite0 my_characters/ --weights efficientnet_lite0_imagenet --out gallery/'.",
    )
    p.add_argument("source", metavar="SOURCE",
                   help="run folder from 'anivision fewshot train' or 'anivision train' (its fine-tuned backbone, head dropped), "
                   "or (not a folder) a timm backbone name used with --weights")
    p.add_argument("characters", metavar="CHARACTERS", help="folder of character folders, a few images each")
    p.add_argument("--weights", help="with a backbone SOURCE: imagenet | none | efficientnet_lite0_imagenet | FILE "
                   "(default: efficientnet_lite0_imagenet)")
    _add_embedding_args(p)
    p.add_argument("--k-shot", type=int, help="images per character, a seeded choice (default: all)")
    add_shared(p, "--seed", "of the --k-shot choice", default=0)
    p.add_argument("--reject-rate", type=float, default=DEFAULT_REJECT_RATE,
                   help="target share of genuine images of enrolled characters called 'unknown': the threshold is the "
                   "(1 - RATE) quantile of the enrolment images' leave-one-out distances to their own prototype; "
                   "higher rejects more unknown characters and more known images")
    add_shared(p, "--index", "of the prototypes, saved in GALLERY/index/", default="exact")
    p.add_argument("--tta", choices=TTA_CHOICES, default="none",
                   help="test-time augmentation: flip embeds every image, now and in 'identify', as the mean of it and its "
                   "mirror image (about twice the embedding time; rejected more unknown characters in RESULTS.md section 18) "
                   "(default: none)")
    add_shared(p, "--out", "the gallery folder (prototypes.safetensors + gallery.json)", required=True, metavar="GALLERY")
    deprecated(p, "--run", "SOURCE, the first argument", position=0, fallback=DEFAULT_BACKBONE)
    deprecated(p, "--backbone", "SOURCE, the first argument", position=0, fallback=DEFAULT_BACKBONE)
    deprecated(p, "--gallery", "CHARACTERS, the second argument", position=1)
    # Before 0.2 the threshold was a percentile P of the leave-one-out distances: --reject-rate 1-P/100.
    p.add_argument("--threshold-percentile", type=float, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_enroll)

    p = subparsers.add_parser("identify", help="nearest enrolled characters of images (open-set: 'unknown')")
    p.add_argument("gallery", metavar="GALLERY", help="gallery folder from 'anivision enroll'")
    p.add_argument("paths", nargs="+", metavar="IMAGES", help="image files, folders or glob patterns")
    add_shared(p, "--top-k", default=3)
    p.add_argument("--threshold", type=float,
                   help="'unknown' beyond this distance; inf: never unknown (default: the gallery's)")
    add_shared(p, "--device")
    add_shared(p, "--engine", default="torch")
    add_shared(p, "--index", default_text="the one the gallery was enrolled with")
    add_shared(p, "--out", "a CSV path,pred_1,dist_1,...,pred_K,dist_K", default_text="print them", metavar="CSV")
    p.set_defaults(func=cmd_identify)


def cmd_train(args: argparse.Namespace) -> int:
    cfg = FewShotTrainConfig(
        data=args.data, out=args.out, backbone=args.backbone or DEFAULT_BACKBONE, weights=args.weights or DEFAULT_WEIGHTS,
        img_size=args.img_size, classes=args.classes, ratios=args.ratios, seed=args.seed, epochs=args.epochs,
        episodes_per_epoch=args.episodes_per_epoch, n_way=args.n_way, k_shot=args.k_shot, n_query=args.n_query,
        val_episodes=args.val_episodes, val_max_per_class=args.val_max_per_class, distance=args.distance, lr=args.lr, min_crop_scale=args.min_crop_scale,
        embedding=args.embedding, parts=args.parts, fit_images=args.fit_images, val_data=args.val_data, train_groups=args.train_groups,
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
        if s["best_epoch"] == 0:
            print("meta-training did not beat the starting embedding on validation: model.safetensors holds the starting weights")
    print(f"held-out test classes: {', '.join(c['test']) or 'none'}")
    print(f"weights: {Path(cfg.out) / 'model.safetensors'}")
    print(_next_hint(cfg.out, cfg.n_way, cfg.k_shot, c))
    return 0


def _next_hint(run: str, n_way: int, k_shot: int, classes: dict[str, list[str]]) -> str:
    """The ``fewshot evaluate`` command to run next, with an N-way it accepts (2 to the classes there are)."""
    n_test, n_unseen = len(classes.get("test", [])), len(classes.get("val", [])) + len(classes.get("test", []))
    if n_test >= 2:
        return f"next: anivision fewshot evaluate {run} --n-way {min(max(2, n_way), n_test)} --k-shot {k_shot}"
    if n_unseen >= 2:
        return (f"next: anivision fewshot evaluate {run} --class-set unseen --n-way {min(max(2, n_way), n_unseen)} --k-shot {k_shot}"
                f" (fewer than 2 held-out test classes)")
    return (f"next: anivision fewshot evaluate {run} --data OTHER_CHARACTERS_DIR --n-way {max(2, n_way)} --k-shot {k_shot}"
            f" (fewer than 2 held-out classes to evaluate on here)")


def _percent(acc: float | None, ci95: float | None) -> str:
    """``87.44% ± 1.10`` (accuracy and 95% CI half-width in percent), or ``n/a``."""
    return "n/a" if acc is None else f"{100 * acc:.2f}% ± {100 * (ci95 or 0.0):.2f}"


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.run and (args.backbone or args.weights):
        raise AnivisionError("give either RUN (a few-shot run) or --backbone/--weights (an untrained backbone), not both")
    spec = backbone_spec(args.run, args.backbone, args.weights, args.img_size)
    if not args.data and not spec.run:
        raise AnivisionError("fewshot evaluate needs --data DIR (or RUN, a few-shot run, which remembers its data)")
    data = run_data(spec.run, args.data) if spec.run else args.data
    if not Path(data).exists():
        raise AnivisionError(f"{data}: no such dataset folder")
    # --grid chooses N-way and K-shot itself: only the options it uses are checked.
    for name, low in (("n_query", 1), ("episodes", 1)) + (() if args.grid else (("n_way", 2), ("k_shot", 1))):
        if getattr(args, name) < low:
            raise AnivisionError(f"--{name.replace('_', '-')} must be at least {low}")
    cells = [(n, k) for n in GRID_WAYS for k in GRID_SHOTS] if args.grid else [(args.n_way, args.k_shot)]
    if args.class_set and args.class_set != "all" and not spec.run and not args.class_split:
        raise AnivisionError(f"--class-set {args.class_set} needs RUN or --class-split classes.json (which classes are {args.class_set} classes)")
    class_set = args.class_set or default_class_set(spec, data)
    # Named after what is evaluated, so that another evaluation gets another folder.
    out = args.out or (Path(spec.run) / evaluation_name(data, class_set, cells) if spec.run
                       else Path(evaluation_name(data, class_set, cells, spec.backbone)))
    r = evaluate_fewshot(
        data, spec, cells, n_query=args.n_query, episodes=args.episodes, seed=args.seed, split=class_set,
        class_split=args.class_split, distance=args.distance, skip_small_classes=args.skip_small_classes,
        out=out, cache_dir=args.cache_dir, device=args.device, progress=not args.quiet, force=args.force,
    )
    cells_out = r["grid"] if args.grid else [r]
    for c in cells_out:
        line = f"{c['n_way']}-way {c['k_shot']}-shot ({c['n_query']} queries, {c['episodes']} episodes): {_percent(c.get('accuracy'), c.get('ci95'))}"
        print(line + (f" — {c['note']}" if c.get("note") else ""))
    why = " (not the run's dataset: every class)" if spec.run and not args.class_set and class_set == "all" else ""
    left_out = r.get("excluded_classes") if not args.grid else None
    print(f"{class_set_words(r['split'], r['n_classes'])} of {data}{why}: {class_list(r['classes'])}"
          + (f"; left out, too few images: {class_list(list(left_out))}" if left_out else ""))
    print(f"{r['n_images']} images ({r['n_skipped']} unreadable, skipped), {r['distance']} distance -> {r['out']}")
    return 0



def _reject_rate(args: argparse.Namespace) -> float:
    """--reject-rate, or the deprecated --threshold-percentile P as the rate 1 - P/100 (with a note)."""
    if args.threshold_percentile is None:
        return args.reject_rate
    if not 0 < args.threshold_percentile <= 100:
        raise AnivisionError(f"--threshold-percentile {args.threshold_percentile:g}: must be in (0, 100]")
    rate = round(1 - args.threshold_percentile / 100, 10)
    print(f"note: --threshold-percentile is deprecated; use --reject-rate {rate:g}", file=sys.stderr)
    return rate

def _enroll_spec(args: argparse.Namespace) -> BackboneSpec:
    """SOURCE: a few-shot or classification run folder, or (not a folder) a timm backbone name with ``--weights``."""
    source = Path(args.source)
    if source.is_dir():
        if args.weights:
            raise AnivisionError(f"{source}: a run brings its own weights; drop --weights (or give a backbone name as SOURCE)")
        return backbone_spec(str(source), None, None, args.img_size)
    if source.exists() or "/" in args.source or "\\" in args.source:
        raise AnivisionError(f"{source}: not a run folder (SOURCE is a run folder or a timm backbone name)")
    return backbone_spec(None, args.source, args.weights, args.img_size)


def cmd_enroll(args: argparse.Namespace) -> int:
    if args.k_shot is not None and args.k_shot < 1:
        raise AnivisionError("--k-shot must be at least 1")
    meta = enroll_gallery(
        args.characters, args.out, _enroll_spec(args), k_shot=args.k_shot, seed=args.seed, distance=args.distance,
        reject_rate=_reject_rate(args), cache_dir=args.cache_dir, device=args.device, progress=not args.quiet, index=args.index,
        tta=args.tta,
    )
    thr = "none" if meta["threshold"] is None else f"{meta['threshold']:.4g}"
    loo = "n/a" if meta["loo_accuracy"] is None else f"{100 * meta['loo_accuracy']:.2f}%"
    print(f"enrolled {len(meta['classes'])} character(s), {sum(meta['counts'])} image(s) ({len(meta['skipped'])} skipped); "
          f"{meta['distance']} distance on L2-normalised embeddings; leave-one-out accuracy {loo} -> {meta['out']}")
    if meta["threshold"] is not None:
        print(f"'unknown' threshold {thr} (--reject-rate {_reject_rate(args):g}): in leave-one-out it rejects "
              f"{100 * meta['loo_false_rejection']:.1f}% of enrolled characters' images and about "
              f"{100 * meta['est_unknown_rejection']:.1f}% of other characters' images")
        if meta["trained_on_enrolled"]:
            print(f"note: the backbone was trained on {len(meta['trained_on_enrolled'])} of these {len(meta['classes'])} characters, "
                  "so that estimate is optimistic for characters it never saw; measure rejection on a few of them")
    return 0


def cmd_identify(args: argparse.Namespace) -> int:
    thr = args.threshold
    if thr is not None and math.isnan(thr):
        raise AnivisionError("--threshold must be a number")
    rows, skipped = identify_paths(args.gallery, args.paths, top_k=args.top_k, threshold=thr, device=args.device, progress=not args.quiet, engine=args.engine, index=args.index)
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
