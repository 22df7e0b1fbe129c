"""Classification sub-commands: ``split``, ``train``, ``evaluate`` and ``predict`` (``demo`` lives in :mod:`anivision.commands.demo`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from anivision.commands import add_shared
from anivision.data.folder import load_labeled
from anivision.data.splits import parse_ratios, stratified_split, write_split
from anivision.errors import AnivisionError
from anivision.files import atomic_write_csv
from anivision.models.classifier import HEADS
from anivision.strategies import STRATEGIES
from anivision.tasks.classify import RECIPES, TrainConfig, evaluate_run, predict_paths, resolve_train_config, train_classifier


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``split``, ``train``, ``evaluate`` and ``predict``."""
    sub = subparsers
    p = sub.add_parser("split", help="stratified, frozen train/val/test split with content hashes")
    p.add_argument("data", metavar="DATA", help="class-per-folder dataset or CSV manifest")
    p.add_argument("--ratios", default="70/15/15",
                   help="train/val/test shares: 70/15/15 (emotion study), 72/18/10 (AniWho), 70/30 (no validation), or any a/b/c")
    add_shared(p, "--seed", "of the split", default=42)
    add_shared(p, "--out", "the split CSV (path,label,split,sha1)", required=True, metavar="SPLIT.csv")
    p.set_defaults(func=cmd_split)

    p = sub.add_parser("train", help="train a classifier with one of four fine-tuning strategies",
                       description="Train a classifier. Options left out come from --recipe (then --config); "
                       "rerun the same command to resume an interrupted run.")
    add_train_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a trained run on its test split or on a folder")
    p.add_argument("run_dir", metavar="RUN", help="run folder from 'anivision train'")
    p.add_argument("--data", help="evaluate on every image of this class-per-folder dataset (default: the run's test split)")
    p.add_argument("--data-root", metavar="DIR", help="where the run's images are now, if they moved since training "
                   "(default: the folder recorded in the run's split.csv)")
    add_shared(p, "--engine", default="torch")
    add_shared(p, "--out", "the evaluation folder", default_text="RUN/eval, or RUN/eval-<DATA name> with --data", metavar="DIR")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="top-k predictions for image files, folders or globs")
    p.add_argument("run_dir", metavar="RUN", help="run folder from 'anivision train'")
    p.add_argument("paths", nargs="+", metavar="IMAGES", help="image files, folders or glob patterns")
    add_shared(p, "--top-k", default=5)
    add_shared(p, "--batch-size", default=64)
    add_shared(p, "--engine", default="torch")
    add_shared(p, "--out", "a CSV path,pred_1,prob_1,...,pred_K,prob_K", default_text="print them", metavar="CSV")
    p.add_argument("--reject-rate", type=float, metavar="RATE",
                   help="say 'unknown' for images unlike every class: the threshold on the top logit is the RATE quantile "
                   "over the run's validation images, so about RATE of images of known classes are rejected (default: off)")
    p.set_defaults(func=cmd_predict)


def add_train_args(p: argparse.ArgumentParser) -> None:
    """Every ``anivision train`` option (also accepted by ``anivision bench`` for every cell)."""
    # Defaults are None so that only flags the user gave override the recipe and the YAML file;
    # the help says the value a run gets without the flag.
    p.add_argument("--data", help="class-per-folder dataset, or a CSV manifest path,label[,split] (default: the images of --split)")
    p.add_argument("--split", metavar="SPLIT.csv",
                   help="frozen split CSV from 'anivision split' (default: a new split by --ratios, saved in the run folder)")
    p.add_argument("--ratios", help="train/val/test shares of the new split when no --split is given (default: 70/15/15)")
    p.add_argument("--backbone", help="any timm model name, or vanilla_cnn (default: tf_efficientnet_lite0)")
    p.add_argument("--weights", help="starting weights: imagenet (timm's hub, needs a network) | none | efficientnet_lite0_imagenet "
                   "(offline, for tf_efficientnet_lite0) | FILE.safetensors/.pth (default: efficientnet_lite0_imagenet)")
    p.add_argument("--strategy", choices=STRATEGIES, help="fine-tuning strategy (default: full)")
    p.add_argument("--recipe", choices=RECIPES,
                   help="named hyper-parameter preset; flags override it (default: 'default': 128 px, AdamW, a short cosine schedule; "
                   "'openset': the defaults with --head cosine, --label-smoothing 0 and greyscale copies of 30%% of the "
                   "training images, for a run to enrol characters into or to use with predict --reject-rate)")
    p.add_argument("--config", metavar="YAML", help="YAML file of TrainConfig keys; flags override it (default: none)")
    add_shared(p, "--img-size", default_text="the recipe's: 128; fer 224, aniwho 96")
    add_shared(p, "--epochs", default_text="the recipe's: 10, 20 for linear_probe; fer 20-40, aniwho 100")
    add_shared(p, "--batch-size", default_text="32")
    add_shared(p, "--seed", "of the split, initialisation, augmentation and data order", default_text="42")
    p.add_argument("--lr-head", type=float, help="learning rate of the new classifier head (default: the recipe's: 3e-3; fer 1e-3, aniwho 5e-3)")
    p.add_argument("--lr-backbone", type=float,
                   help="learning rate of the backbone (default: the recipe's: 5e-4; fer 1e-5 full, 1e-4 partial/progressive; aniwho 5e-3)")
    p.add_argument("--weight-decay", type=float,
                   help="weight decay, none on biases and norm layers (default: the recipe's: 0.02; fer 1e-4, aniwho 0)")
    p.add_argument("--optimizer", choices=("adamw", "sgd"), help="optimizer (default: the recipe's: adamw; aniwho sgd with momentum 0.9)")
    p.add_argument("--schedule", choices=("cosine", "plateau", "constant"),
                   help="learning-rate schedule: warmup then cosine, divide on a stalled --monitor, or constant "
                   "(default: the recipe's: cosine; aniwho plateau, fer constant for linear_probe and partial)")
    p.add_argument("--warmup-epochs", type=float,
                   help="epochs of linear learning-rate warmup, fractions allowed (default: the recipe's: 1, 0 for linear_probe; fer 0 or 3)")
    p.add_argument("--patience", type=int, help="early-stopping patience in epochs (default: the recipe's: 5; fer 5-10, aniwho 6)")
    p.add_argument("--monitor", choices=("val_acc", "val_loss"),
                   help="validation value that picks the best epoch and stops early (default: the recipe's: val_acc; aniwho val_loss)")
    p.add_argument("--grad-clip", type=float,
                   help="max gradient norm, 0 disables (default: the recipe's: 1.0; none in aniwho and fer linear_probe/partial)")
    p.add_argument("--dropout", type=float, help="dropout before the classifier head (default: 0.2)")
    p.add_argument("--label-smoothing", type=float,
                   help="label smoothing of the cross-entropy loss (default: the recipe's: 0.1, 0 for linear_probe; openset, fer and aniwho 0)")
    p.add_argument("--head", choices=HEADS,
                   help="last layer: linear, or cosine (CosFace loss; tighter clusters per class, better at calling "
                   "characters it never saw unknown with enroll or predict --reject-rate) (default: linear; openset recipe: cosine)")
    p.add_argument("--margin", type=float, help="cosine head: the CosFace cosine margin (default: 0.25)")
    p.add_argument("--partial-groups", type=int, help="partial: number of top backbone groups to train (default: 1)")
    p.add_argument("--unfreeze-every", type=int, help="progressive: epochs between unfreezing one more group (default: the recipe's: 2; fer 3)")
    p.add_argument("--progressive-groups", type=int, help="progressive: most top groups to unfreeze (default: all)")
    p.add_argument("--no-feature-cache", action="store_true",
                   help="linear probe: train through the frozen backbone with augmentation instead of on cached features")
    p.add_argument(
        "--prefix-cache", action="store_true",
        help="partial: run the frozen bottom of the backbone once per image and train the top on its cached "
        "activations (switches training augmentation off; other strategies ignore it)",
    )
    add_shared(p, "--amp", default=False)
    add_shared(p, "--workers", default_text="0: best on a 2-core CPU")
    add_shared(p, "--device")
    add_shared(p, "--cache-dir")
    add_shared(p, "--out", "the run folder (rerun the same command to resume)", required=True, metavar="RUN")


def build_train_config(args: argparse.Namespace) -> TrainConfig:
    """Merge defaults < recipe < YAML < flags into a :class:`TrainConfig`."""
    return resolve_train_config(vars(args))


def cmd_train(args: argparse.Namespace) -> int:
    cfg = build_train_config(args)
    m = train_classifier(cfg, progress=not args.quiet)
    if m:  # under torchrun, only rank 0 returns the metrics
        print_summary(m, Path(cfg.out))
    return 0


def print_summary(m: dict[str, Any], out: Path) -> None:
    parts = [f"accuracy {100 * m['accuracy']:.2f}%", f"macro F1 {100 * m['f1_macro']:.2f}%", f"NLL {m['nll']:.4f}", f"ECE {100 * m['ece']:.2f}%"]
    if "top5_accuracy" in m:
        parts.insert(1, f"top-5 {100 * m['top5_accuracy']:.2f}%")
    # An evaluation on another folder names it; a run's own test split is "test".
    where = m["data"] if m.get("data") and m.get("data") != "test split" else "test"
    print(f"{where}: {', '.join(parts)} on {m['n_images']} images ({m.get('n_skipped', 0)} skipped)")
    print(f"report: {out / 'report.md'}")


def cmd_split(args: argparse.Namespace) -> int:
    images = load_labeled(args.data)
    splits = stratified_split(images.labels, images.classes, parse_ratios(args.ratios), args.seed)
    out = write_split(images, splits, args.out)
    counts = {s: splits.count(s) for s in ("train", "val", "test")}
    print(f"split {len(images)} images of {len(images.classes)} classes: train {counts['train']}, val {counts['val']}, test {counts['test']} -> {out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    m = evaluate_run(args.run_dir, data=args.data, out=args.out, progress=not args.quiet, data_root=args.data_root, engine=args.engine)
    print_summary(m, Path(m["out"]))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    if args.top_k < 1:
        raise AnivisionError("--top-k must be at least 1")
    if args.batch_size < 1:
        raise AnivisionError(f"--batch-size must be at least 1, got {args.batch_size}")
    rows, skipped = predict_paths(args.run_dir, args.paths, top_k=args.top_k, batch_size=args.batch_size, progress=not args.quiet,
                                  engine=args.engine, reject_rate=args.reject_rate)
    for path, reason in skipped.items():
        print(f"skipped: {reason}", file=sys.stderr)
    if args.out:
        out = Path(args.out)
        atomic_write_csv(out, rows, list(rows[0].keys()) if rows else ["path"])
        print(f"{len(rows)} prediction(s) ({len(skipped)} skipped) -> {out}")
    else:
        for r in rows:
            print(r["path"] + "\t" + "\t".join(f"{r[f'pred_{i}']} {r[f'prob_{i}']:.3f}" for i in range(1, args.top_k + 1) if f"pred_{i}" in r))
    return 0 if rows else 1
