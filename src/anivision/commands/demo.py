"""``anivision demo``: the offline demo on the embedded synthetic character set.

The demo draws a small synthetic character-recognition set (``anivision synth --task
character``: each class is one cartoon character, drawn with random expressions, poses,
styles and JPEG noise), trains a classifier on it with the offline ImageNet EfficientNet-Lite0
and writes the run's report. Characters are what the tool is for, and a task the default
backbone can learn in a minute on a laptop CPU: the demo's last lines say what to expect and
where the report is.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from anivision.commands import add_shared
from anivision.commands.classify import print_summary
from anivision.data.cache import default_cache_dir
from anivision.data.synth import generate
from anivision.errors import AnivisionError
from anivision.strategies import STRATEGIES
from anivision.tasks.classify import resolve_train_config, train_classifier, train_option_defaults

#: The demo's 70/15/15 split puts at least one image of each character in train, val and test.
DEMO_MIN_PER_CLASS = 3
#: Epochs of each strategy when --epochs is not given. The linear probe (the default) is the
#: measured demo (benchmarks/RESULTS.md, "Demo"); the fine-tuning strategies train through the
#: backbone with augmentation and take several times longer on a CPU.
DEMO_EPOCHS = {"linear_probe": 20, "partial": 5, "full": 3, "progressive": 4}
#: What the default demo reaches (RESULTS.md, "Demo": 95.8% on its 48 test images, cold cache).
EXPECTED = "about 95-100% test accuracy (chance is {chance:.1f}%)"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` sub-command."""
    p = subparsers.add_parser(
        "demo", help="offline demo: recognise synthetic cartoon characters with the offline ImageNet EfficientNet-Lite0",
        description="Draw a synthetic character set (DIR/data), train a classifier on it (DIR/run) and print where the "
        "report is. Offline, about a minute on a laptop CPU.",
    )
    add_shared(p, "--out", "the demo folder (synthetic data in DIR/data, the run in DIR/run)", default="anivision-demo", metavar="DIR")
    p.add_argument("--strategy", default="linear_probe", choices=STRATEGIES,
                   help="fine-tuning strategy (linear_probe: a head on cached frozen features, the fastest)")
    add_shared(p, "--epochs", default_text=", ".join(f"{k} {v}" for k, v in DEMO_EPOCHS.items()))
    p.add_argument("--n-per-class", type=int, default=40, help="synthetic images per character")
    p.add_argument("--n-classes", type=int, default=8, help="number of synthetic characters")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    epochs = DEMO_EPOCHS[args.strategy] if args.epochs is None else args.epochs
    if epochs < 1:
        raise AnivisionError(f"--epochs must be at least 1, got {epochs}")
    if args.n_per_class < DEMO_MIN_PER_CLASS:
        raise AnivisionError(
            f"--n-per-class must be at least {DEMO_MIN_PER_CLASS} (one image per character in each of train, val and test), "
            f"got {args.n_per_class}"
        )
    if args.n_classes < 2:
        raise AnivisionError(f"--n-classes must be at least 2, got {args.n_classes}")
    out = Path(args.out)
    data = out / "data"
    if not (data / "synth.json").exists():
        print(f"drawing {args.n_classes} synthetic characters x {args.n_per_class} images in {data} ...")
        generate("character", data, n_per_class=args.n_per_class, n_classes=args.n_classes, size=128, seed=0, progress=not args.quiet)
    cfg = resolve_train_config(train_option_defaults() | {
        "data": str(data), "out": str(out / "run"), "strategy": args.strategy, "epochs": epochs, "cache_dir": str(default_cache_dir()),
    })
    print(f"training {cfg.backbone} ({cfg.weights}, offline ImageNet weights) with strategy {cfg.strategy} for {epochs} epoch(s) "
          f"to recognise {args.n_classes} synthetic characters ...")
    m = train_classifier(cfg, progress=not args.quiet)
    if m:  # under torchrun, only rank 0 returns the metrics
        print_summary(m, Path(cfg.out))
        print("expected: " + EXPECTED.format(chance=100.0 / args.n_classes)
              + " with the default linear probe; the report shows the confusion matrix, per-character scores and training curves")
    return 0
