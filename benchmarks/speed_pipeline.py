"""Speed of anivision's pipeline against the straightforward one, on the same data and split.

Straightforward = torchvision ``ImageFolder`` (JPEG decoded by PIL every epoch, torchvision
transforms on PIL images) and a full forward pass of the backbone every epoch.

Measures (each printed as a Markdown table row and saved to --out as JSON):
  1. linear probe, N epochs: straightforward (frozen backbone forward every epoch, head trained
     with the same optimiser) vs anivision (features cached once, head on cached features);
     total wall time and test accuracy of both.
  2. training throughput of full fine-tuning for a few steps: ImageFolder + PIL transforms vs the
     decoded-image cache (uint8 memmap + tensor transforms), same model, same batch size.
  3. inference images/s at batch 1 and 64: eager NCHW fp32 vs channels_last + inference_mode.
  4. decoded-cache size on disk per 10k images.

Usage:
  python benchmarks/speed_pipeline.py --data ../shared/data/characters --out benchmarks/results/speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from torchvision import datasets
from torchvision import transforms as T

from anivision.data.cache import decode_images
from anivision.data.datasets import CachedImageDataset
from anivision.data.folder import scan_class_folders
from anivision.data.splits import parse_ratios, split_indices, stratified_split
from anivision.data.transforms import AugmentConfig, eval_transform, train_transform
from anivision.embeddings import embed_paths
from anivision.models.backbone import create_backbone, data_config


def straightforward_linear_probe(backbone, data, split, classes_n, img, mean, std, epochs, lr, bs, seed):
    """The usual notebook loop: decode + transform + frozen forward every epoch."""
    tf = T.Compose([T.Resize(img), T.CenterCrop(img), T.ToTensor(), T.Normalize(mean, std)])
    ds = datasets.ImageFolder(data, transform=tf)
    # Align ImageFolder's order with our split (both sort classes and files by name).
    index = {p: i for i, (p, _) in enumerate(ds.samples)}
    tr = Subset(ds, [index[p] for p in split["train"]])
    te = Subset(ds, [index[p] for p in split["test"]])
    torch.manual_seed(seed)
    head = nn.Linear(backbone.num_features, classes_n)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.02)
    backbone.eval()
    t0 = time.perf_counter()
    for _ in range(epochs):
        for x, y in DataLoader(tr, batch_size=bs, shuffle=True):
            with torch.no_grad():
                f = backbone(x)
            loss = nn.functional.cross_entropy(head(f), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    correct = n = 0
    with torch.no_grad():
        for x, y in DataLoader(te, batch_size=64):
            correct += int((head(backbone(x)).argmax(1) == y).sum())
            n += len(y)
    return time.perf_counter() - t0, correct / n


def cached_linear_probe(backbone, paths, labels, parts, cfg, classes_n, epochs, lr, bs, seed, cache_dir):
    t0 = time.perf_counter()
    emb = embed_paths(backbone, paths, cfg, cache_dir=cache_dir, progress=False)
    feats = torch.from_numpy(emb.features)
    y = torch.as_tensor(labels)
    torch.manual_seed(seed)
    head = nn.Linear(backbone.num_features, classes_n)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.02)
    tr = torch.as_tensor(parts["train"])
    for _ in range(epochs):
        for idx in torch.split(tr[torch.randperm(len(tr))], bs):
            loss = nn.functional.cross_entropy(head(feats[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    te = torch.as_tensor(parts["test"])
    with torch.no_grad():
        acc = float((head(feats[te]).argmax(1) == y[te]).float().mean())
    return time.perf_counter() - t0, acc


def train_throughput(model, loader, steps, channels_last):
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    it = iter(loader)
    x, y = next(it)  # warm-up batch, not timed
    n = 0
    t0 = time.perf_counter()
    for _ in range(steps):
        try:
            x, y = next(it)
        except StopIteration:
            it = iter(loader)
            x, y = next(it)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        n += len(y)
    return n / (time.perf_counter() - t0)


def inference_speed(model, x, bs, channels_last, reps=3):
    model.eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    ctx = torch.inference_mode if channels_last else torch.no_grad
    with ctx():
        model(x[:bs])
        best = 0.0
        for _ in range(reps):
            t0 = time.perf_counter()
            for i in range(0, len(x), bs):
                model(x[i : i + bs])
            best = max(best, len(x) / (time.perf_counter() - t0))
    if channels_last:
        model.to(memory_format=torch.contiguous_format)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data/characters")
    ap.add_argument("--backbone", default="tf_efficientnet_lite0")
    ap.add_argument("--weights", default="efficientnet_lite0_imagenet")
    ap.add_argument("--img-size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--train-steps", type=int, default=30)
    ap.add_argument("--cache-dir", default="/tmp/anivision-speed-cache")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: probe,train,infer")
    ap.add_argument("--max-per-class", type=int, default=0, help="use the first N images of each class (0: all)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: one per CPU)")
    ap.add_argument("--out", default="benchmarks/results/speed.json")
    a = ap.parse_args()
    skip = set(filter(None, a.skip.split(",")))
    torch.set_num_threads(a.threads or os.cpu_count() or 1)
    res: dict = {"threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "backbone": a.backbone, "img_size": a.img_size}
    images = scan_class_folders(a.data)
    if a.max_per_class:
        keep = [i for c in range(len(images.classes)) for i in [j for j, y in enumerate(images.labels) if y == c][: a.max_per_class]]
        images = images.subset(sorted(keep))
        # ImageFolder reads the whole folder; the straightforward loader is restricted to the same files below.
    res["n_images"] = len(images)
    splits = stratified_split(images.labels, images.classes, parse_ratios("70/15/15"), 42)
    parts = split_indices(splits)
    by_path = {k: [images.paths[i] for i in v] for k, v in parts.items()}
    bb = create_backbone(a.backbone, a.weights)
    cfg = data_config(bb, a.img_size)
    cfg = type(cfg)(cfg.img_size, cfg.mean, cfg.std, crop_pct=1.0)

    if "probe" not in skip:
        import shutil

        shutil.rmtree(a.cache_dir, ignore_errors=True)  # time the cold cache, including decoding
        t_fast, acc_fast = cached_linear_probe(bb, images.paths, images.labels, parts, cfg, len(images.classes), a.epochs, 3e-3, 32, 0, a.cache_dir)
        t_slow, acc_slow = straightforward_linear_probe(bb, a.data, by_path, len(images.classes), a.img_size, cfg.mean, cfg.std, a.epochs, 3e-3, 32, 0)
        res["linear_probe"] = {"epochs": a.epochs, "straightforward_s": t_slow, "straightforward_acc": acc_slow, "cached_s": t_fast, "cached_acc": acc_fast, "speedup": t_slow / t_fast}
        print(json.dumps(res["linear_probe"]))

    if "train" not in skip:
        n_classes = len(images.classes)
        from anivision.models.classifier import Classifier

        model = Classifier(create_backbone(a.backbone, a.weights), n_classes)
        aug = AugmentConfig(rotation=0.0, color_jitter=(0.1, 0.1, 0.1, 0.0), random_erasing=0.0)
        tf_pil = T.Compose([T.RandomResizedCrop(a.img_size, scale=(0.8, 1.0)), T.RandomHorizontalFlip(), T.ColorJitter(0.1, 0.1, 0.1), T.ToTensor(), T.Normalize(cfg.mean, cfg.std)])
        folder = datasets.ImageFolder(a.data, transform=tf_pil)
        pos = {p: i for i, (p, _) in enumerate(folder.samples)}
        ds_pil = Subset(folder, [pos[p] for p in by_path["train"]])
        decoded = decode_images(images.paths, cfg.img_size, cache_dir=a.cache_dir, progress=False)
        ds_fast = CachedImageDataset(decoded, parts["train"], images.labels, train_transform(cfg, aug))
        gen = torch.Generator().manual_seed(0)
        thr_slow = train_throughput(model, DataLoader(ds_pil, batch_size=32, shuffle=True, generator=gen), a.train_steps, False)
        thr_fast = train_throughput(model, DataLoader(ds_fast, batch_size=32, shuffle=True, generator=gen), a.train_steps, True)
        cache_bytes = decoded.pixels.nbytes
        res["train_throughput"] = {
            "steps": a.train_steps, "batch": 32, "straightforward_img_s": thr_slow, "cached_img_s": thr_fast,
            "speedup": thr_fast / thr_slow, "cache_mb_per_10k": cache_bytes / len(images.paths) * 10000 / 2**20,
        }
        # Loader alone: how much of an epoch is decoding?
        t0 = time.perf_counter()
        for _ in DataLoader(ds_pil, batch_size=32, shuffle=True):
            pass
        t_pil = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in DataLoader(ds_fast, batch_size=32, shuffle=True):
            pass
        t_fast_loader = time.perf_counter() - t0
        res["train_throughput"].update({"loader_only_straightforward_s": t_pil, "loader_only_cached_s": t_fast_loader, "n_train": len(ds_fast)})
        print(json.dumps(res["train_throughput"]))

    if "infer" not in skip:
        decoded = decode_images(images.paths[:256], cfg.img_size, cache_dir=None, progress=False)
        x = torch.stack([CachedImageDataset(decoded, [i], None, eval_transform(cfg))[0][0] for i in range(256)])
        m = create_backbone(a.backbone, a.weights)
        out = {}
        for bs in (1, 64):
            xs = x[:64] if bs == 1 else x
            out[f"eager_b{bs}"] = inference_speed(m, xs, bs, channels_last=False)
            out[f"fast_b{bs}"] = inference_speed(m, xs, bs, channels_last=True)
        res["inference"] = out
        print(json.dumps(out))
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
