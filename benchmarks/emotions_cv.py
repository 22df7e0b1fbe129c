"""5-fold cross-validation of classification configs on a small class-per-folder set.

Built for ``../shared/data/emotions-manga`` (266 manga faces, 7 expressions): one split is
far too noisy to choose defaults by (a 39-image test split moves 2.6 points per image), so
every config is trained five times, once per fold, and scored on that fold's held-out fifth.

Folds: each class is shuffled (``--seed``) and dealt round-robin into 5 folds, so every fold
holds ~1/5 of every class. For fold k the test part is fold k; the other four folds are split
train/val (stratified, val = 15% of the whole set, as the default ``--ratios 70/15/15`` gives;
``--val 0``: no val part, the runs keep their last epoch), and the three parts are written to a
manifest ``folds/foldK.csv`` (``path,label,split``).
Each cell is a real ``anivision train --data folds/foldK.csv --out runs/CONFIG/foldK
[flags]``, run through the library (the same function the CLI calls); the command is printed.

Every image-trained run is also scored with flip test-time augmentation (mean of the softmax of
the image and its mirror), computed here from the saved model, to show what TTA would add.

Configs (``--configs``, comma-separated):
  probe    linear probe on cached frozen features (``--strategy linear_probe``)
  today    the defaults as of issue 15 (full fine-tune, 10 epochs, 128 px, light augmentation),
           pinned in a YAML file so the row stays comparable if the defaults change
  default  no flag at all: whatever ``anivision train --data D --out R`` does now
  others   named YAML presets in :data:`PRESETS` (candidates; RESULTS.md says which were run
           on how many folds)

``synpre*`` configs start from ``--pretrained FILE`` (a run's ``model.safetensors``, e.g. one
fine-tuned on ``anivision synth --task emotion``). ``--ensemble A,B,C`` trains nothing: it scores
finished runs of those configs together, fold by fold (mean softmax, and one model with their
mean weights).

Usage (the study in RESULTS.md section 13):
  OMP_NUM_THREADS=1 python benchmarks/emotions_cv.py --data ../shared/data/emotions-manga \
      --configs probe,today,manga15 --threads 1 --work /tmp/emocv --out benchmarks/results/emotions_cv.md
  OMP_NUM_THREADS=1 python benchmarks/emotions_cv.py --data ../shared/data/emotions-manga --val 0 \
      --configs synpre,synpre_s1,synpre_s2 --pretrained /tmp/emo/synpre/model.safetensors --work /tmp/emocv9-noval
  python benchmarks/emotions_cv.py --data ../shared/data/emotions-manga --val 0 --work /tmp/emocv9-noval \
      --ensemble synpre,synpre_s1,synpre_s2
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from anivision.data.cache import decode_images, default_cache_dir
from anivision.data.datasets import CachedImageDataset
from anivision.data.folder import load_labeled
from anivision.data.splits import split_indices, stratified_split
from anivision.data.transforms import cache_size, eval_transform
from anivision.engine.loop import softmax_np
from anivision.metrics.stats import mean_ci95
from anivision.tasks.classify import resolve_train_config, train_classifier, train_option_defaults
from anivision.tasks.classify.data import run_split
from anivision.tasks.classify.model import load_run

#: The defaults as of issue 15, pinned (TrainConfig keys).
TODAY = {
    "strategy": "full", "epochs": 10, "img_size": 128, "lr_head": 3e-3, "lr_backbone": 5e-4, "weight_decay": 0.02,
    "label_smoothing": 0.1, "dropout": 0.2, "warmup_epochs": 1.0, "patience": 5, "schedule": "cosine",
    "aug": {"crop_scale": [0.8, 1.0], "hflip": 0.5, "vflip": 0.0, "rotation": 0.0, "translate": 0.0, "zoom": 0.0,
            "color_jitter": [0.1, 0.1, 0.1, 0.0], "random_erasing": 0.0, "grayscale": 0.0, "screentone": 0.0},
}

#: Candidate configs (TrainConfig keys, written to a YAML file given as ``--config``).
PRESETS: dict[str, dict[str, Any]] = {
    "probe": {"strategy": "linear_probe"},
    "today": TODAY,
    "default": {},
    # Full fine-tuning, longer, with small batches and manga-suited augmentation.
    "manga128": {
        "strategy": "full", "epochs": 25, "batch_size": 16, "img_size": 128, "lr_head": 3e-3, "lr_backbone": 5e-4,
        "weight_decay": 0.02, "label_smoothing": 0.1, "dropout": 0.2, "warmup_epochs": 1.0, "patience": 8,
        "aug": {"crop_scale": [0.6, 1.0], "hflip": 0.5, "vflip": 0.0, "rotation": 10.0, "translate": 0.0, "zoom": 0.0,
                "color_jitter": [0.2, 0.2, 0.1, 0.0], "random_erasing": 0.1, "grayscale": 0.5, "screentone": 0.2},
    },
}
# Partial fine-tuning of the top 3 groups (blocks 4-6 + head conv) on cached frozen-prefix activations:
# no augmentation, but each epoch costs a small fraction of a full pass.
PRESETS["partial3"] = {"strategy": "partial", "partial_groups": 3, "prefix_cache": True, "epochs": 30, "batch_size": 16,
                       "lr_head": 3e-3, "lr_backbone": 5e-4, "label_smoothing": 0.1, "warmup_epochs": 1.0, "patience": 10}
PRESETS["partial3_192"] = {**PRESETS["partial3"], "img_size": 192}
# What fits the compute of "today" (12 epochs): smaller batches (twice the steps), manga augmentation.
PRESETS["manga12"] = {
    "strategy": "full", "epochs": 12, "batch_size": 16, "img_size": 128, "lr_head": 3e-3, "lr_backbone": 5e-4,
    "weight_decay": 0.02, "label_smoothing": 0.1, "dropout": 0.2, "warmup_epochs": 1.0, "patience": 6,
    "aug": {"crop_scale": [0.7, 1.0], "hflip": 0.5, "vflip": 0.0, "rotation": 10.0, "translate": 0.0, "zoom": 0.0,
            "color_jitter": [0.2, 0.2, 0.1, 0.0], "random_erasing": 0.0, "grayscale": 0.5, "screentone": 0.2},
}
# Frozen features at 224 px (the 128 px faces upscaled to the backbone's native input size).
PRESETS["probe224"] = {"strategy": "linear_probe", "img_size": 224}
# The top 1 or 2 groups fine-tuned on cached prefix activations at 224 px.
PRESETS["partial1_224"] = {**PRESETS["partial3"], "partial_groups": 1, "img_size": 224}
PRESETS["partial2_224"] = {**PRESETS["partial3"], "partial_groups": 2, "img_size": 224}
# "today" made longer (15 epochs, batches of 16: 3x the steps) with manga augmentation.
PRESETS["manga15"] = {**PRESETS["manga12"], "epochs": 15}
# The same at 192 px (the 128 px images upscaled: ImageNet features see faces nearer their scale).
PRESETS["manga192"] = {**PRESETS["manga128"], "img_size": 192}

# Session 6 candidates: one change each against "today" (10 epochs, batch 32, 128 px).
PRESETS["e20"] = {**TODAY, "epochs": 20, "patience": 8}
PRESETS["e20b16"] = {**TODAY, "epochs": 20, "batch_size": 16, "patience": 8}
PRESETS["lrbb2e3"] = {**TODAY, "lr_backbone": 2e-3}
PRESETS["s224"] = {**TODAY, "img_size": 224}

# Session 9: "today" started from a backbone fine-tuned on the synthetic emotion generator
# (``--pretrained FILE``: that run's model.safetensors; its head is dropped).
PRESETS["synpre"] = {**TODAY, "weights": None}
# The same configs with other training seeds: members of an ensemble (``--ensemble``).
for _k in range(1, 5):
    PRESETS[f"today_s{_k}"] = {**TODAY, "seed": 42 + _k}
    PRESETS[f"synpre_s{_k}"] = {**PRESETS["synpre"], "seed": 42 + _k}


def make_folds(labels: list[int], n_folds: int, seed: int) -> np.ndarray:
    """(N,) fold index: each class shuffled and dealt round-robin (offset per class for balance)."""
    rng = np.random.default_rng(seed)
    labels_arr = np.asarray(labels)
    fold = np.zeros(len(labels), dtype=np.int64)
    start = 0
    for c in np.unique(labels_arr):
        idx = np.flatnonzero(labels_arr == c)
        idx = idx[rng.permutation(len(idx))]
        fold[idx] = (start + np.arange(len(idx))) % n_folds
        start = (start + len(idx)) % n_folds
    return fold


def write_fold_manifests(data: str, work: Path, n_folds: int, seed: int, val: float = 0.15) -> list[Path]:
    """One ``path,label,split`` manifest per fold (test = the fold; val = ``val`` of the whole set,
    none when 0: training then keeps its last epoch)."""
    images = load_labeled(data)
    fold = make_folds(images.labels, n_folds, seed)
    out = []
    (work / "folds").mkdir(parents=True, exist_ok=True)
    for k in range(n_folds):
        rest = np.flatnonzero(fold != k)
        val_share = val / (1 - 1 / n_folds)
        parts = stratified_split([images.labels[i] for i in rest], images.classes, (1 - val_share, val_share, 0.0), seed + k)
        split = ["test"] * len(images)
        for i, p in zip(rest, parts):
            split[int(i)] = p
        path = work / "folds" / f"fold{k}.csv"
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["path", "label", "split"])
            for p, y, s in zip(images.paths, images.labels, split):
                w.writerow([os.path.abspath(p), images.classes[y], s])
        out.append(path)
    return out


def config_options(name: str, work: Path) -> tuple[dict[str, Any], list[str]]:
    """Train options of a config and the flags that say them on the command line."""
    preset = PRESETS[name]
    if not preset:
        return {}, []
    if set(preset) == {"strategy"}:
        return dict(preset), [f"--strategy {preset['strategy']}"]
    yml = work / "configs" / f"{name}.yaml"
    yml.parent.mkdir(parents=True, exist_ok=True)
    yml.write_text(yaml.safe_dump(preset, sort_keys=False))
    return {"config": str(yml)}, [f"--config {yml}"]


@torch.inference_mode()
def flip_tta_accuracy(run_dir: Path, cache_dir: str | None = None) -> float | None:
    """Test accuracy of the run's best model with flip TTA (mean softmax of image and mirror)."""
    model, cfg, classes, dcfg = load_run(run_dir, device="cpu")
    x, y = test_images(run_dir, cfg, classes, dcfg, cache_dir)
    if not len(y):
        return None
    p = softmax_np(model(x).numpy().astype(np.float64)) + softmax_np(model(torch.flip(x, dims=[3])).numpy().astype(np.float64))
    return float((p.argmax(1) == y).mean())


def test_images(run_dir: Path, cfg: Any, classes: list[str], dcfg: Any, cache_dir: str | None) -> tuple[torch.Tensor, np.ndarray]:
    """The run's test images (eval transform, one batch) and their labels (indices into ``classes``)."""
    split = run_split(run_dir, cfg, None)
    test = split_indices(split.splits or []).get("test", [])
    if not test:
        return torch.empty(0), np.zeros(0, dtype=np.int64)
    paths = [split.paths[i] for i in test]
    decoded = decode_images(paths, cache_size(dcfg), cache_dir=cache_dir or default_cache_dir(), progress=False)
    ds = CachedImageDataset(decoded, np.arange(len(paths)), None, eval_transform(dcfg))
    y = [classes.index(split.classes[split.labels[i]]) for i in test]
    return torch.stack([ds[i][0] for i in range(len(ds))]), np.asarray(y)


@torch.inference_mode()
def ensemble_cell(members: list[str], fold: int, work: Path, cache_dir: str | None) -> dict[str, Any]:
    """Score an ensemble of finished runs on their (shared) test fold, two ways: the mean of their
    softmax outputs (from each run's ``test_logits.npy``), and one model whose weights are the mean
    of theirs (a "uniform soup": the members start from the same weights, so they stay close)."""
    runs = [work / "runs" / m / f"fold{fold}" for m in members]
    labels = [np.load(r / "test_labels.npy") for r in runs]
    if any(not np.array_equal(labels[0], y) for y in labels[1:]):
        raise SystemExit(f"fold {fold}: the members' test parts differ")
    y = labels[0]
    logits = [np.load(r / "test_logits.npy").astype(np.float64) for r in runs]
    probs = sum(softmax_np(z) for z in logits)
    loaded = [load_run(r, device="cpu") for r in runs]
    model, cfg, classes, dcfg = loaded[0]
    states = [m.state_dict() for m, *_ in loaded]
    soup = {k: (sum(s[k].double() for s in states) / len(states)).to(v.dtype) if v.is_floating_point() else v
            for k, v in states[0].items()}
    model.load_state_dict(soup)
    x, y_soup = test_images(runs[0], cfg, classes, dcfg, cache_dir)
    soup_pred = model(x).argmax(1).numpy()
    return {"config": "+".join(members), "fold": fold, "accuracy": float((probs.argmax(1) == y).mean()),
            "soup_accuracy": float((soup_pred == y_soup).mean()),
            "member_accuracy": [float((z.argmax(1) == y).mean()) for z in logits]}


def run_cell(name: str, fold: int, manifest: Path, work: Path, cache_dir: str | None) -> dict[str, Any]:
    out = work / "runs" / name / f"fold{fold}"
    opts, flags = config_options(name, work)
    print(f"$ anivision train --data {manifest} --out {out} {' '.join(flags)}".rstrip(), flush=True)
    t0 = time.perf_counter()
    cfg = resolve_train_config(train_option_defaults() | {"data": str(manifest), "out": str(out), "cache_dir": cache_dir} | opts)
    m = train_classifier(cfg, progress=False)
    row = {"config": name, "fold": fold, "accuracy": m["accuracy"], "f1_macro": m["f1_macro"],
           "epochs_run": m["epochs_run"], "best_epoch": m["best_epoch"], "wall_seconds": time.perf_counter() - t0,
           "strategy": cfg.strategy, "img_size": cfg.img_size, "epochs": cfg.epochs}
    row["tta_accuracy"] = flip_tta_accuracy(out, cache_dir) if cfg.strategy != "linear_probe" else None
    print(f"  {name} fold {fold}: acc {m['accuracy']:.3f} tta {row['tta_accuracy']} ({row['wall_seconds']:.0f}s)", flush=True)
    return row


def summarise(rows: list[dict[str, Any]], configs: list[str]) -> str:
    lines = ["| config | mean accuracy ± 95% CI | flip TTA | macro F1 | per fold | s per fold |", "|---|---|---|---|---|---|"]
    for name in configs:
        rs = sorted((r for r in rows if r["config"] == name), key=lambda r: r["fold"])
        if not rs:
            continue
        m, h = mean_ci95([r["accuracy"] for r in rs])
        tta = [r["tta_accuracy"] for r in rs if r.get("tta_accuracy") is not None]
        tta_s = "-" if len(tta) != len(rs) else "{:.1f} ± {:.1f}".format(*(100 * v for v in mean_ci95(tta)))
        f1 = np.mean([r["f1_macro"] for r in rs])
        folds = " ".join(f"{100 * r['accuracy']:.0f}" for r in rs)
        secs = np.mean([r["wall_seconds"] for r in rs])
        lines.append(f"| {name} | {100 * m:.1f} ± {100 * h:.1f} | {tta_s} | {100 * f1:.1f} | {folds} | {secs:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="class-per-folder dataset")
    ap.add_argument("--configs", default="probe,today,default", help=f"comma-separated, from {', '.join(PRESETS)}")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--only-folds", help="comma-separated fold numbers to run (default: all)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the folds")
    ap.add_argument("--work", default="/tmp/emotions-cv", help="folds, configs and run folders (a rerun reuses finished runs)")
    ap.add_argument("--cache-dir", help="anivision cache (default: the user cache)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--val", type=float, default=0.15, help="validation share of the whole set (0: train on all but the test fold)")
    ap.add_argument("--ensemble", help="instead of training: score the ensemble of these finished configs "
                    "(comma-separated) per fold, as mean softmax and as a weight average")
    ap.add_argument("--pretrained", help="starting weights of the synpre config (a run's model.safetensors)")
    ap.add_argument("--out", help="Markdown table to write (rows as .jsonl beside it)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    manifests = write_fold_manifests(args.data, work, args.folds, args.seed, args.val)
    configs = [c for c in args.configs.split(",") if c]
    for name in configs:
        if "weights" in PRESETS[name] and PRESETS[name]["weights"] is None:
            if not args.pretrained:
                raise SystemExit(f"the {name} config needs --pretrained FILE")
            PRESETS[name]["weights"] = os.path.abspath(args.pretrained)
    unknown = [c for c in configs if c not in PRESETS]
    if unknown:
        raise SystemExit(f"unknown config(s) {unknown}; choose from {', '.join(PRESETS)}")
    folds = [int(k) for k in args.only_folds.split(",")] if args.only_folds else list(range(args.folds))
    if args.ensemble:
        members = args.ensemble.split(",")
        rows = [ensemble_cell(members, k, work, args.cache_dir) for k in folds]
        for key in ("accuracy", "soup_accuracy"):
            m, h = mean_ci95([r[key] for r in rows])
            print(f"{key}: {100 * m:.1f} ± {100 * h:.1f} per fold " + " ".join(f"{100 * r[key]:.1f}" for r in rows))
        singles = np.mean([r["member_accuracy"] for r in rows], axis=0)
        print("members (mean over folds): " + ", ".join(f"{m} {100 * a:.1f}" for m, a in zip(members, singles)))
        if args.out:
            Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in rows))
        return
    rows = [run_cell(name, k, manifests[k], work, args.cache_dir) for name in configs for k in folds]
    table = summarise(rows, configs)
    print(table)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(table)
        out.with_suffix(".jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    main()
