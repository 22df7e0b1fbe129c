"""Benchmark: few-shot recognition of unseen characters, ImageNet features vs meta-trained.

The 16 characters of ``shared/data/characters`` are split class-disjointly 10/3/3 (seed 0):
10 classes for meta-training episodes, 3 validation classes that pick the best epoch, 3 test
classes never touched. Few-shot accuracy ± 95% CI (1.96 std / sqrt(T), T = 1,000 episodes,
10 queries per class) is measured on cached embeddings for

- ``tf_efficientnet_lite0`` with its ImageNet weights (``efficientnet_lite0_imagenet``), no
  meta-training, and
- the same backbone after prototypical-network meta-training (AniWho recipe, short CPU run).

Three test classes only allow 3-way episodes, so two evaluations are reported:

- 5-way on the 6 *unseen* classes (val + test): never trained on, but the val classes chose
  the checkpoint (one number out of a handful of epochs: a mild selection bias);
- 3-way on the 3 *test* classes only: strictly held out, but easier (3-way) and noisier.

Run from the repository root (about 15 minutes on 2 CPU cores; resumable)::

    python benchmarks/fewshot_characters.py

It writes ``benchmarks/results/fewshot.md`` with the figures and the exact command.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from anivision.data.cache import default_cache_dir
from anivision.data.folder import load_labeled
from anivision.embeddings import embed_paths
from anivision.reports.fewshot import format_cell
from anivision.tasks.fewshot import (
    BackboneSpec,
    ClassSplit,
    FewShotTrainConfig,
    backbone_spec,
    build_backbone,
    episode_accuracy,
    select_classes,
    train_fewshot,
)

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "characters"))
    ap.add_argument("--run", default=str(ROOT / "runs" / "fewshot-characters"), help="meta-training run folder (resumable)")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--episodes-per-epoch", type=int, default=25)
    ap.add_argument("--val-max-per-class", type=int, default=100)
    ap.add_argument("--episodes", type=int, default=1000, help="evaluation episodes per cell")
    ap.add_argument("--cache-dir", default=str(default_cache_dir()))
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "fewshot.md"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for noisy in ("timm", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    t0, cpu0 = time.perf_counter(), time.process_time()
    cfg = FewShotTrainConfig(
        data=args.data, out=args.run, classes="10/3/3", seed=0, epochs=args.epochs,
        episodes_per_epoch=args.episodes_per_epoch, n_way=5, k_shot=5, n_query=10,
        val_episodes=300, val_max_per_class=args.val_max_per_class, cache_dir=args.cache_dir,
        # The recipe of sections 5 and 9 (before the transfer embedding of section 17).
        embedding="pooled", distance="euclidean", train_groups=0,
    )
    summary = train_fewshot(cfg, progress=True)
    t_train = time.perf_counter() - t0

    specs = {
        "ImageNet features (no meta-training)": BackboneSpec("tf_efficientnet_lite0", "efficientnet_lite0_imagenet", 128),
        "meta-trained (prototypical, episodes)": backbone_spec(args.run, None, None, None),
    }
    images = load_labeled(args.data)
    split = ClassSplit.load(args.run)
    # The unseen classes are embedded once per backbone; the 3-way test cells reuse the rows of
    # the test classes (the same features an evaluation of the test split alone would compute).
    idx, labels, names = select_classes(images, split.part("unseen"), args.data)
    test_ids = [names.index(c) for c in split.test]
    evals = (("unseen", 5), ("test", 3))
    results: dict[str, dict[tuple[str, int, int], dict]] = {}
    t1 = time.perf_counter()
    for name, spec in specs.items():
        model, dcfg = build_backbone(spec)
        emb = embed_paths(model, [images.paths[i] for i in idx], dcfg, cache_dir=args.cache_dir, progress=True)
        feats, labs = emb.features[emb.valid], labels[emb.valid]
        on_test = np.isin(labs, test_ids)
        subsets = {"unseen": (feats, labs), "test": (feats[on_test], labs[on_test])}
        results[name] = {}
        for part, n_way in evals:
            f, y = subsets[part]
            for k in (1, 5):
                results[name][(part, n_way, k)] = episode_accuracy(f, y, n_way, k, 10, args.episodes, seed=0, class_names=names)
    t_eval = time.perf_counter() - t1

    cols = [(s, n, k) for s, n in evals for k in (1, 5)]
    classes = summary["classes"]
    head = [f"{n}-way {k}-shot ({'val+test, 6 classes' if s == 'unseen' else 'test, 3 classes'})" for s, n, k in cols]
    lines = [
        "# Few-shot character recognition (prototypical networks)",
        "",
        f"Data: `shared/data/characters` (16 characters, 128 px face crops), class-disjoint split 10/3/3, seed 0: "
        f"train {', '.join(classes['train'])}; val {', '.join(classes['val'])}; test {', '.join(classes['test'])}.",
        f"Backbone `tf_efficientnet_lite0` at 128 px, squared euclidean distance; accuracy (%) ± 95% CI "
        f"(1.96·std/√T) over T = {args.episodes} episodes, 10 queries per class, same episodes for both rows.",
        "",
        "| features | " + " | ".join(head) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for name in specs:
        lines.append(f"| {name} | " + " | ".join(format_cell(results[name][c]) for c in cols) + " |")
    base, meta = (results[n] for n in specs)
    lines.append("| gain (points) | " + " | ".join(f"{100 * (meta[c]['accuracy'] - base[c]['accuracy']):+.2f}" for c in cols) + " |")
    init = summary.get("initial_val_acc")
    lines += [
        "",
        f"Meta-training: {args.epochs} epochs x {args.episodes_per_epoch} episodes of 5-way 5-shot 10-query "
        f"({args.epochs * args.episodes_per_epoch} episodes, {args.epochs * args.episodes_per_epoch * 75} images seen), "
        "SGD lr 0.01 momentum 0.9 wd 5e-4 (every parameter, as easyfsl), x0.1 at 50% and 80% of the epochs, random-resized-crop (0.08-1) + colour jitter 0.4 "
        f"+ h-flip; best epoch {summary['best_epoch']} by {summary['val_n_way']}-way 5-shot accuracy on 300 fixed validation episodes "
        f"({100 * init:.2f}% before, {100 * summary['best_val_acc']:.2f}% at the best epoch). AniWho trained 100 epochs x 100 episodes.",
        f"Wall time on this machine (2 shared CPU cores, torch {torch.__version__}): meta-training {t_train / 60:.1f} min, "
        f"evaluation (embedding {len(feats)} images per backbone + {len(cols) * len(specs)} x {args.episodes} episodes) {t_eval / 60:.1f} min; "
        f"CPU time of the whole script {(time.process_time() - cpu0) / 60:.1f} min (a resumed run counts only its last part).",
        "",
        "Why two evaluations: 3 test classes only allow 3-way episodes. The 5-way columns use the 6 classes never "
        "trained on (val + test); the val classes chose the best epoch, a mild selection bias. The 3-way columns use "
        "only the 3 strictly held-out test classes.",
        "",
        "Command (from the repository root):",
        "",
        "```",
        " ".join(["python benchmarks/fewshot_characters.py", *(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))]),
        "```",
        "",
        f"Equivalent CLI: `anivision fewshot train --data ../shared/data/characters --classes 10/3/3 --seed 0 --epochs {args.epochs} "
        f"--episodes-per-epoch {args.episodes_per_epoch} --val-max-per-class {args.val_max_per_class} --embedding pooled --distance euclidean --train-groups 0 --out RUN`, then "
        "`anivision fewshot evaluate RUN --class-set unseen --n-way 5 --k-shot 5` (and `--backbone tf_efficientnet_lite0 "
        "--weights efficientnet_lite0_imagenet --class-split RUN --class-set unseen` for the ImageNet row; "
        "`--class-set test --n-way 3` for the test-only columns).",
    ]
    text = "\n".join(lines) + "\n"
    out = Path(args.results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    (Path(args.run) / "benchmark.json").write_text(json.dumps(
        {name: {f"{s}/{n}-way/{k}-shot": v for (s, n, k), v in res.items()} for name, res in results.items()}, indent=2))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
