"""Classification with transfer learning: train, evaluate and predict.

``train_classifier`` runs the whole job for one :class:`~anivision.config.TrainConfig`:
split (or read a frozen split), decode images once into the cache, build backbone + head,
train with the chosen strategy and early stopping on validation, evaluate the test split
once with the best weights, and write ``metrics.json`` + ``report.md`` into the run folder.
A run folder can be resumed: the same command continues from the last finished epoch.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from anivision.config import RUNTIME_KEYS, TrainConfig, config_differences
from anivision.data.cache import DecodedImages, decode_images, default_cache_dir
from anivision.data.datasets import CachedImageDataset
from anivision.data.folder import LabeledImages, expand_inputs, load_labeled
from anivision.data.splits import parse_ratios, read_split, split_indices, stratified_split, write_split
from anivision.data.transforms import cache_size, eval_transform, train_transform
from anivision.embeddings import embed_paths, pick_device
from anivision.engine.distributed import barrier, device_for, init_distributed
from anivision.files import atomic_write_json, atomic_write_text
from anivision.engine.checkpoint import load_checkpoint, load_weights, save_checkpoint, save_weights
from anivision.engine.loop import evaluate_loss_acc, predict_logits, seed_everything, softmax_np, train_one_epoch, warmup_cosine
from anivision.errors import AnivisionError
from anivision.models.backbone import DataConfig, count_parameters, create_backbone, data_config
from anivision.models.classifier import Classifier
from anivision.models.split import split_frozen_prefix
from anivision.strategies import Strategy, backbone_groups, set_train_mode

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------- data


def prepare_split(cfg: TrainConfig, run_dir: Path) -> LabeledImages:
    """The labelled images with their train/val/test assignment.

    ``cfg.split`` (a frozen split CSV) wins; a CSV manifest with a ``split`` column is used as
    is; otherwise a stratified split with ``cfg.ratios`` and ``cfg.seed`` is made and saved as
    ``run_dir/split.csv`` (reused when the run resumes).
    """
    saved = run_dir / "split.csv"
    if cfg.split:
        return read_split(cfg.split)
    if saved.exists():
        return read_split(saved)
    images = load_labeled(cfg.data)
    if images.splits is None:
        images.splits = stratified_split(images.labels, images.classes, parse_ratios(cfg.ratios), cfg.seed)
        write_split(images, images.splits, saved)
    return images


# --------------------------------------------------------------------------------- models


def build_classifier(cfg: TrainConfig, n_classes: int, weights: str | None = None) -> tuple[Classifier, DataConfig]:
    """Backbone (``cfg.backbone`` with ``weights`` or ``cfg.weights``) + dropout/linear head."""
    backbone = create_backbone(cfg.backbone, cfg.weights if weights is None else weights, img_size=cfg.img_size)
    dcfg = data_config(backbone, cfg.img_size)
    dcfg = DataConfig(dcfg.img_size, dcfg.mean, dcfg.std, crop_pct=cfg.crop_pct)
    return Classifier(backbone, n_classes, dropout=cfg.dropout), dcfg


def make_optimizer(cfg: TrainConfig, head: nn.Module, backbone: nn.Module | None) -> torch.optim.Optimizer:
    """Optimizer over every parameter, with separate head and backbone groups (differential LRs).

    Biases and normalisation weights (1-D tensors) get no weight decay, as in timm.
    """
    groups = []
    for part, lr, module in (("head", cfg.lr_head, head), ("backbone", cfg.lr_backbone, backbone)):
        if module is None:
            continue
        decay = [p for p in module.parameters() if p.ndim > 1]
        no_decay = [p for p in module.parameters() if p.ndim <= 1]
        for params, wd in ((decay, cfg.weight_decay), (no_decay, 0.0)):
            if params:
                groups.append({"params": params, "lr": lr, "base_lr": lr, "weight_decay": wd, "part": part})
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, momentum=cfg.momentum, nesterov=False)
    raise AnivisionError(f"unknown optimizer '{cfg.optimizer}' (choose adamw or sgd)")


# ------------------------------------------------------------------------------- training


@dataclass
class _Data:
    images: LabeledImages
    decoded: DecodedImages
    parts: dict[str, np.ndarray]  # split name -> indices of valid images


def _load_data(cfg: TrainConfig, run_dir: Path, dcfg: DataConfig, images: LabeledImages, progress: bool) -> _Data:
    cache_dir = cfg.cache_dir or default_cache_dir()
    decoded = decode_images(images.paths, cache_size(dcfg), cache_dir=cache_dir, progress=progress)
    parts = {k: np.asarray([i for i in v if decoded.valid[i]], dtype=np.int64) for k, v in split_indices(images.splits or []).items()}
    if decoded.errors:
        atomic_write_text(run_dir / "skipped.txt", "\n".join(decoded.errors.values()) + "\n")
    if len(parts["train"]) == 0:
        raise AnivisionError(f"{cfg.data}: no readable training images")
    if len(parts["test"]) == 0:
        raise AnivisionError(f"{cfg.split or cfg.data}: the split has no test images")
    return _Data(images, decoded, parts)


def _lr_function(cfg: TrainConfig, steps_per_epoch: int, plateau_scale: list[float]):
    total = cfg.epochs * steps_per_epoch
    warm = int(round(cfg.warmup_epochs * steps_per_epoch))

    def lr_at(step: int, group: dict) -> float:
        base = group["base_lr"]
        if cfg.schedule == "cosine":
            return warmup_cosine(step, total, warm, base, min(cfg.min_lr, base))
        if cfg.schedule == "plateau":
            return max(base * plateau_scale[0], min(cfg.min_lr, base))
        if cfg.schedule == "constant":
            return base if warm == 0 or step >= warm else base * (step + 1) / warm
        raise AnivisionError(f"unknown schedule '{cfg.schedule}' (choose cosine, plateau or constant)")

    return lr_at


def memory_budget_bytes() -> int | None:
    """Half the machine's physical memory (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (AttributeError, ValueError, OSError):
        return None


def _check_prefix_memory(prefix: nn.Module, dcfg: DataConfig, n_images: int, device: torch.device) -> None:
    """Refuse a prefix cache that would not fit in memory, before computing any of it.

    The activations are held as float32 (N, ...) in RAM: tiny for a high cut of a small CNN
    (Lite0 at 128 px: 12 KB per image) but large for a low cut or a ViT at 224 px
    (197 x 768 floats = 0.6 MB per image for ViT-B/16).
    """
    budget = memory_budget_bytes()
    if budget is None:
        return
    was_training = prefix.training
    prefix.eval()
    with torch.inference_mode():
        shape = prefix(torch.zeros(1, 3, dcfg.img_size, dcfg.img_size, device=device)).shape[1:]
    prefix.train(was_training)
    need = n_images * math.prod(shape) * 4
    if need > budget:
        raise AnivisionError(
            f"--prefix-cache: the frozen prefix's activations {tuple(shape)} would take {need / 2**30:.1f} GiB for "
            f"{n_images} images, more than half this machine's memory; train without --prefix-cache, with fewer "
            "--partial-groups or at a smaller --img-size"
        )


def _improved(monitor: str, value: float, best: float | None) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value > best if monitor.endswith("acc") else value < best


def train_classifier(cfg: TrainConfig, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) one classification training job; return the test metrics.

    Writes into ``cfg.out``: ``config.json``, ``split.csv`` (when made here), ``classes.json``,
    ``metrics.jsonl`` (one line per epoch), ``checkpoint/`` (last epoch, for resume),
    ``model.safetensors`` (best weights), ``metrics.json``, ``report.md`` and PNG plots.

    Raises:
        AnivisionError: bad data, backbone, weights or config; or ``cfg.out`` holds a
            different run.
    """
    t_start = time.perf_counter()
    run_dir = Path(cfg.out)
    dinfo = init_distributed()
    if dinfo.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = run_dir / "config.json"
    if dinfo.is_main and cfg_path.exists():
        old = json.loads(cfg_path.read_text())
        diff = config_differences(old, cfg, RUNTIME_KEYS)
        if diff:
            raise AnivisionError(f"{run_dir}: holds a run with a different config ({', '.join(diff)}); choose a new --out")
    if cfg_path.exists() and (run_dir / "metrics.json").exists():
        log.info("%s: run already finished; reusing its metrics", run_dir)
        return json.loads((run_dir / "metrics.json").read_text())
    if dinfo.is_main:
        cfg.save(cfg_path)

    device = device_for(dinfo, cfg.device)
    seed_everything(cfg.seed)
    # Classes and split come first: the head's size depends on them. Under torchrun, rank 0
    # makes the split and fills the decoded-image cache; the others then read both.
    if dinfo.is_main:
        images = prepare_split(cfg, run_dir)
    barrier(dinfo)
    if not dinfo.is_main:
        images = prepare_split(cfg, run_dir)
    n_classes = len(images.classes)
    if n_classes < 2:
        raise AnivisionError(f"{cfg.data}: a classifier needs at least 2 classes, found {n_classes}")
    atomic_write_json(run_dir / "classes.json", images.classes)
    model, dcfg = build_classifier(cfg, n_classes)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    if dinfo.is_main:
        data = _load_data(cfg, run_dir, dcfg, images, progress)
    barrier(dinfo)
    if not dinfo.is_main:
        data = _load_data(cfg, run_dir, dcfg, images, False)
        progress = False
    strategy = Strategy(cfg.strategy, backbone_groups(model.backbone), cfg.partial_groups, cfg.unfreeze_every, cfg.progressive_groups)
    total_params, _ = count_parameters(model)
    trainable_frac = strategy.max_trainable_fraction(model, cfg.epochs)
    use_features = cfg.strategy == "linear_probe" and cfg.feature_cache
    use_prefix = cfg.strategy == "partial" and cfg.prefix_cache
    if use_features and dinfo.enabled and not dinfo.is_main:
        # A head on cached features trains in seconds: rank 0 does it alone.
        return {}
    has_val = len(data.parts["val"]) > 0
    monitor = cfg.monitor if has_val else "none"
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    labels = np.asarray(data.images.labels, dtype=np.int64)

    if use_features:
        # Linear probe on cached frozen features: the backbone runs once per image, ever.
        feats = embed_paths(model.backbone, data.images.paths, dcfg, batch_size=64, cache_dir=cfg.cache_dir or default_cache_dir(), device=device, progress=progress)
        feats_t = torch.from_numpy(feats.features)
        def feature_set(part: str) -> TensorDataset:
            idx = data.parts[part]
            return TensorDataset(feats_t[idx], torch.from_numpy(labels[idx]))
        train_set = feature_set("train")
        val_set = feature_set("val")
        trained: nn.Module = model.head
        optimizer = make_optimizer(cfg, model.head, None)
    elif use_prefix:
        # Partial fine-tuning without augmentation: the frozen bottom of the backbone gives every
        # image the same activation in every epoch, so it runs once (cached on disk like features)
        # and each epoch trains only the top. Rank 0 fills the cache; the other ranks read it.
        strategy.apply(model, 0)
        prefix, trained, n_prefix = split_frozen_prefix(model.backbone, model.head)
        # Only training and validation images need activations: the test split is scored once
        # by the whole network with the best weights.
        tv = np.concatenate([data.parts["train"], data.parts["val"]])
        _check_prefix_memory(prefix, dcfg, len(tv), device)
        cache = cfg.cache_dir or default_cache_dir()
        acts = None
        if dinfo.is_main:
            acts = embed_paths(prefix, data.images.paths, dcfg, batch_size=64, cache_dir=cache, device=device, progress=progress, desc="frozen prefix", indices=tv)
        barrier(dinfo)
        if acts is None:
            acts = embed_paths(prefix, data.images.paths, dcfg, batch_size=64, cache_dir=cache, device=device, progress=False, indices=tv)
        acts_t = torch.from_numpy(acts.features)
        log.info("partial: %d frozen stage(s) cached, activations %s per image", n_prefix, tuple(acts_t.shape[1:]))
        n_train = len(data.parts["train"])
        train_set = TensorDataset(acts_t[:n_train], torch.from_numpy(labels[data.parts["train"]]))
        val_set = TensorDataset(acts_t[n_train:], torch.from_numpy(labels[data.parts["val"]]))
        optimizer = make_optimizer(cfg, model.head, model.backbone)
    else:
        train_set = CachedImageDataset(data.decoded, data.parts["train"], labels, train_transform(dcfg, cfg.aug))
        val_set = CachedImageDataset(data.decoded, data.parts["val"], labels, eval_transform(dcfg))
        trained = model
        optimizer = make_optimizer(cfg, model.head, model.backbone)

    # A last batch of one image breaks BatchNorm in train mode; drop the remainder instead
    # (the shuffle differs every epoch, so every image is still seen).
    distributed = dinfo.enabled and not use_features
    world = dinfo.world_size if distributed else 1
    drop_last = len(train_set) > cfg.batch_size * world
    steps_per_epoch = len(train_set) // (cfg.batch_size * world) if drop_last else 1
    plateau_scale = [1.0]
    lr_at = _lr_function(cfg, steps_per_epoch, plateau_scale)
    ckpt_dir = run_dir / "checkpoint"
    state = load_checkpoint(ckpt_dir, trained, optimizer) or {}
    start_epoch = int(state.get("epoch", -1)) + 1
    best = state.get("best")
    best_epoch = int(state.get("best_epoch", -1))
    bad_epochs = int(state.get("bad_epochs", 0))
    plateau = state.get("plateau", {"best": None, "bad": 0})
    plateau_scale[0] = float(state.get("plateau_scale", 1.0))
    history: list[dict[str, Any]] = list(state.get("history", []))
    if start_epoch > 0:
        log.info("resuming %s at epoch %d", run_dir, start_epoch + 1)
    stopped = bool(state.get("stopped", False))
    # metrics.jsonl mirrors the checkpoint's history: lines from an epoch that did not finish are dropped.
    if dinfo.is_main:
        atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))

    for epoch in range(start_epoch, cfg.epochs):
        if stopped:
            break
        # Reseed from (seed, epoch): an epoch's shuffling, augmentation and dropout do not depend
        # on whether the run was resumed, so a resumed run ends exactly where an uninterrupted one does.
        gen = seed_everything(cfg.seed * 1000 + epoch)
        if distributed:
            sampler = DistributedSampler(train_set, num_replicas=world, rank=dinfo.rank, shuffle=True, seed=cfg.seed, drop_last=drop_last)
            sampler.set_epoch(epoch)
            loader = DataLoader(train_set, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.workers, drop_last=drop_last)
        else:
            loader = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, generator=gen, num_workers=cfg.workers, drop_last=drop_last, persistent_workers=False)
        if not use_features:
            strategy.apply(model, epoch)
        set_train_mode(trained)
        # DDP registers gradient hooks for the parameters that train when it is built, so it is
        # rebuilt each epoch: progressive unfreezing changes that set.
        step_model = DistributedDataParallel(trained, device_ids=[device.index] if device.type == "cuda" else None) if distributed else trained
        stats = train_one_epoch(
            step_model, loader, optimizer, loss_fn, device,
            lr_at_step=lr_at, start_step=epoch * steps_per_epoch, grad_clip=cfg.grad_clip,
            channels_last=cfg.channels_last, desc=f"epoch {epoch + 1}/{cfg.epochs}", progress=progress,
        )
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": stats.loss,
            "train_acc": stats.accuracy,
            "epoch_seconds": stats.seconds,
            "train_images_per_second": stats.images_per_second,
            "lr_head": optimizer.param_groups[0]["lr"],
            "trainable_groups": strategy.n_trainable_groups(epoch) if not use_features else 0,
        }
        if has_val:
            vloader = DataLoader(val_set, batch_size=max(64, cfg.batch_size), shuffle=False, num_workers=cfg.workers)
            vlogits, vy, _ = predict_logits(trained, vloader, device, cfg.channels_last, desc="val", progress=progress)
            row["val_loss"], row["val_acc"] = evaluate_loss_acc(vlogits, vy)
        value = row.get(monitor, float("nan")) if monitor != "none" else float(epoch)
        if monitor == "none" or _improved(monitor, value, best):
            best, best_epoch, bad_epochs = value, epoch, 0
            if dinfo.is_main:
                # The suffix shares its modules with ``model``: saving ``model`` keeps the whole net.
                save_weights(model if use_prefix else trained, run_dir / ("head.safetensors" if use_features else "model.safetensors"))
        else:
            bad_epochs += 1
        if cfg.schedule == "plateau" and has_val:
            pv = row["val_loss"] if cfg.monitor == "val_loss" else -row["val_acc"]
            if plateau["best"] is None or pv < plateau["best"]:
                plateau = {"best": pv, "bad": 0}
            else:
                plateau["bad"] += 1
                if plateau["bad"] > cfg.plateau_patience:
                    plateau_scale[0] *= cfg.plateau_factor
                    plateau["bad"] = 0
        history.append(row)
        stopped = monitor != "none" and bad_epochs >= cfg.patience
        if dinfo.is_main:
            with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
            save_checkpoint(
                ckpt_dir, trained, optimizer,
                {"epoch": epoch, "best": best, "best_epoch": best_epoch, "bad_epochs": bad_epochs,
                 "plateau": plateau, "plateau_scale": plateau_scale[0], "history": history, "stopped": stopped,
                 "world_size": world},
            )
        if distributed:
            # Rank 0 has written the checkpoint before any rank starts the next epoch. (A linear
            # probe on cached features trains on rank 0 alone: the others have already returned.)
            barrier(dinfo)
        msg = f"epoch {epoch + 1}/{cfg.epochs}: train loss {stats.loss:.4f} acc {stats.accuracy:.4f}"
        if has_val:
            msg += f" | val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f}"
        msg += f" | {stats.seconds:.1f}s, {stats.images_per_second:.0f} img/s"
        if dinfo.is_main:
            log.info(msg)
        if stopped and dinfo.is_main:
            log.info("early stop: no %s improvement for %d epoch(s)", monitor, cfg.patience)

    # The best weights, then the test split, once (by rank 0 alone under torchrun).
    if not dinfo.is_main:
        return {}
    if use_features:
        load_weights(model.head, run_dir / "head.safetensors")
        save_weights(model, run_dir / "model.safetensors")
        test_idx = data.parts["test"]
        model.eval()
        with torch.inference_mode():
            logits = model.head(feats_t[test_idx]).numpy()
        y_test = labels[test_idx]
    else:
        load_weights(model, run_dir / "model.safetensors")
        test_set = CachedImageDataset(data.decoded, data.parts["test"], labels, eval_transform(dcfg))
        tloader = DataLoader(test_set, batch_size=64, shuffle=False, num_workers=cfg.workers)
        logits, y_test, _ = predict_logits(model, tloader, device, cfg.channels_last, desc="test", progress=progress)
    speed = measure_inference(model, data.decoded, data.parts["test"], dcfg, device, cfg.channels_last)
    metrics = _metrics(logits, y_test, data.images.classes)
    n_skipped = len(data.decoded.errors)
    epoch_secs = [h["epoch_seconds"] for h in history]
    metrics.update(
        {
            "n_skipped": n_skipped,
            "skipped": sorted(data.decoded.errors),
            "split": {k: int(len(v)) for k, v in data.parts.items()},
            "epochs_run": len(history),
            "best_epoch": best_epoch + 1,
            "best_val": {k: history[best_epoch][k] for k in ("val_loss", "val_acc") if best_epoch >= 0 and k in history[best_epoch]},
            "avg_epoch_seconds": float(np.mean(epoch_secs)) if epoch_secs else 0.0,
            "train_images_per_second": float(np.mean([h["train_images_per_second"] for h in history])) if history else 0.0,
            "params_total": total_params,
            "trainable_fraction": trainable_frac,
            "trainable_percent": 100.0 * trainable_frac,
            "backbone": cfg.backbone,
            "weights": cfg.weights,
            "strategy": cfg.strategy,
            "recipe": cfg.recipe,
            "img_size": dcfg.img_size,
            "seed": cfg.seed,
            "feature_cache": use_features,
            "prefix_cache": use_prefix,
            "device": str(device),
            "world_size": world,
            # Wall time of this invocation (a resumed run counts only its last part), including
            # decoding, feature extraction and the test evaluation.
            "wall_seconds": time.perf_counter() - t_start,
            **speed,
        }
    )
    np.save(run_dir / "test_logits.npy", logits)
    np.save(run_dir / "test_labels.npy", y_test)
    from anivision.reports.classification import write_report

    write_report(run_dir, metrics, history, title=f"{cfg.backbone} / {cfg.strategy}", config=cfg.to_dict())
    atomic_write_json(run_dir / "metrics.json", metrics)
    return metrics


def _metrics(logits: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict[str, Any]:
    from anivision.metrics.classification import classification_metrics

    probs = softmax_np(logits.astype(np.float64))
    return classification_metrics(labels, probs, classes)


@torch.inference_mode()
def measure_inference(
    model: nn.Module,
    decoded: DecodedImages,
    indices: np.ndarray,
    dcfg: DataConfig,
    device: torch.device,
    channels_last: bool = True,
    n_batch: int = 256,
    n_single: int = 16,
) -> dict[str, float]:
    """Inference speed of the whole model on already-decoded images.

    Returns:
        ``inference_images_per_second`` (batch 64) and ``latency_ms`` (batch 1, per image), each
        after a warm-up pass; decoding is excluded (it is cached).
    """
    model.eval()
    ds = CachedImageDataset(decoded, indices[:n_batch], None, eval_transform(dcfg))
    if len(ds) == 0:
        return {"inference_images_per_second": 0.0, "latency_ms": 0.0}
    xs = torch.stack([ds[i][0] for i in range(len(ds))]).to(device)
    if channels_last:
        xs = xs.contiguous(memory_format=torch.channels_last)
    model(xs[:2])  # warm-up: allocator and kernel selection
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for i in range(0, len(xs), 64):
        model(xs[i : i + 64])
    sync()
    batch_s = time.perf_counter() - t0
    k = min(n_single, len(xs))
    t0 = time.perf_counter()
    for i in range(k):
        model(xs[i : i + 1])
    sync()
    single_s = time.perf_counter() - t0
    return {
        "inference_images_per_second": len(xs) / batch_s if batch_s > 0 else 0.0,
        "latency_ms": 1000.0 * single_s / k,
        "inference_batch_size": 64,
    }


# ---------------------------------------------------------------------- using a finished run


def load_run(run_dir: str | Path, device: str | None = None) -> tuple[Classifier, TrainConfig, list[str], DataConfig]:
    """Rebuild a trained classifier from its run folder (weights from ``model.safetensors``).

    Raises:
        AnivisionError: the folder is not a finished run.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise AnivisionError(f"{run_dir}: no such run folder")
    for f in ("config.json", "classes.json", "model.safetensors"):
        if not (run_dir / f).exists():
            raise AnivisionError(f"{run_dir}: not a trained run ({f} missing)")
    cfg = TrainConfig.load(run_dir / "config.json")
    classes = json.loads((run_dir / "classes.json").read_text())
    # The run's own weights replace whatever the backbone started from: no hub access needed.
    model, dcfg = build_classifier(cfg, len(classes), weights="none")
    load_weights(model, run_dir / "model.safetensors")
    dev = pick_device(device or cfg.device)
    model.to(dev).eval()
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    return model, cfg, classes, dcfg


def evaluate_run(run_dir: str | Path, data: str | None = None, out: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Evaluate a finished run on its test split, or on every image of ``data``.

    With ``data``, the folder's class names must all be classes of the run.
    Writes ``metrics.json`` and ``report.md`` into ``out`` (default: ``RUN_DIR/eval`` or
    ``RUN_DIR/eval-<data name>``).
    """
    run_dir = Path(run_dir)
    model, cfg, classes, dcfg = load_run(run_dir)
    device = next(model.parameters()).device
    if data:
        images = load_labeled(data)
        unknown = [c for c in images.classes if c not in classes]
        if unknown:
            raise AnivisionError(f"{data}: class(es) {', '.join(unknown)} are not classes of the run {run_dir} ({', '.join(classes)})")
        paths = images.paths
        labels = np.asarray([classes.index(images.classes[y]) for y in images.labels], dtype=np.int64)
        idx = np.arange(len(paths))
        out_dir = Path(out) if out else run_dir / f"eval-{Path(data).stem}"
    else:
        split = read_split(cfg.split) if cfg.split else read_split(run_dir / "split.csv")
        if split.classes != classes:
            raise AnivisionError(f"{run_dir}: split classes differ from the run's classes")
        paths = split.paths
        labels = np.asarray(split.labels, dtype=np.int64)
        idx = np.asarray(split_indices(split.splits or [])["test"], dtype=np.int64)
        out_dir = Path(out) if out else run_dir / "eval"
    decoded = decode_images(paths, cache_size(dcfg), cache_dir=cfg.cache_dir or default_cache_dir(), progress=progress)
    ds = CachedImageDataset(decoded, idx, labels, eval_transform(dcfg))
    if len(ds) == 0:
        raise AnivisionError(f"{data or run_dir}: no readable images to evaluate")
    loader = DataLoader(ds, batch_size=64, shuffle=False)
    logits, y, _ = predict_logits(model, loader, device, cfg.channels_last, progress=progress)
    metrics = _metrics(logits, y, classes)
    metrics.update(
        {"n_skipped": len(decoded.errors), "skipped": sorted(decoded.errors), "run": str(run_dir), "data": str(data or "test split")}
    )
    metrics.update(measure_inference(model, decoded, ds.indices, dcfg, device, cfg.channels_last))
    out_dir.mkdir(parents=True, exist_ok=True)
    from anivision.reports.classification import write_report

    write_report(out_dir, metrics, [], title=f"evaluation of {run_dir.name}", config=None)
    atomic_write_json(out_dir / "metrics.json", metrics)
    return metrics | {"out": str(out_dir)}


def predict_paths(run_dir: str | Path, inputs: list[str], top_k: int = 5, batch_size: int = 64, progress: bool = True) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Top-k predictions of a run for images.

    Returns:
        (rows, skipped): one row per readable image with ``path``, ``pred_i``, ``prob_i``;
        ``skipped`` maps unreadable paths to their reason.
    """
    model, cfg, classes, dcfg = load_run(run_dir)
    device = next(model.parameters()).device
    paths = expand_inputs(inputs)
    k = max(1, min(top_k, len(classes)))
    decoded = decode_images(paths, cache_size(dcfg), cache_dir=None, progress=progress)
    ds = CachedImageDataset(decoded, np.arange(len(paths)), None, eval_transform(dcfg))
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False)
    logits, _, _ = predict_logits(model, loader, device, cfg.channels_last, desc="predict", progress=progress)
    probs = softmax_np(logits.astype(np.float64)) if len(logits) else np.zeros((0, len(classes)))
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    rows = []
    for j, i in enumerate(ds.indices):
        row: dict[str, Any] = {"path": paths[int(i)]}
        for r in range(k):
            row[f"pred_{r + 1}"] = classes[int(order[j, r])]
            row[f"prob_{r + 1}"] = float(probs[j, order[j, r]])
        rows.append(row)
    return rows, dict(decoded.errors)
