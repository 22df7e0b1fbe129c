"""Scoring a classifier: the test split at the end of training, ``evaluate`` and ``predict``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from anivision.data.cache import DecodedImages, decode_images, default_cache_dir
from anivision.data.datasets import CachedImageDataset
from anivision.data.folder import expand_inputs, load_labeled
from anivision.data.splits import read_split, split_indices
from anivision.data.transforms import DataConfig, cache_size, eval_transform
from anivision.engine.checkpoint import load_weights
from anivision.engine.loop import predict, softmax_np
from anivision.engine.run import RunFolder, TrainState
from anivision.errors import AnivisionError
from anivision.files import atomic_write_json
from anivision.metrics.classification import classification_metrics
from anivision.models.backbone import count_parameters
from anivision.models.classifier import Classifier
from anivision.reports.classification import write_report
from anivision.strategies import Strategy
from anivision.tasks.classify.config import TrainConfig
from anivision.tasks.classify.data import RunData, TrainingSets
from anivision.tasks.classify.model import load_run


def logits_metrics(logits: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """:func:`classification_metrics` of (N, C) logits (softmax in float64)."""
    return classification_metrics(labels, softmax_np(logits.astype(np.float64)), classes)


def finish_run(
    cfg: TrainConfig, model: Classifier, dcfg: DataConfig, data: RunData, sets: TrainingSets, state: TrainState,
    strategy: Strategy, run: RunFolder, device: torch.device, progress: bool, wall_seconds: float,
) -> dict[str, Any]:
    """Score the test split once with the best weights; write metrics, logits and the report."""
    test_idx = data.parts["test"]
    labels = data.labels
    if sets.kind == "features":
        load_weights(model.head, run.path / "head.safetensors")
        run.save_weights(model, "model.safetensors")
        model.eval()
        with torch.inference_mode():
            logits = model.head(sets.features[test_idx]).numpy()  # type: ignore[index]
        y_test = labels[test_idx]
    else:
        load_weights(model, run.path / "model.safetensors")
        loader = DataLoader(CachedImageDataset(data.decoded, test_idx, labels, eval_transform(dcfg)), batch_size=64, shuffle=False, num_workers=cfg.workers)
        logits, y, _ = predict(model, loader, device, cfg.channels_last, desc="test", progress=progress)
        y_test = y if y is not None else labels[test_idx]
    history, best_epoch = state.history, state.tracker.best_epoch
    metrics = logits_metrics(logits, y_test, data.images.classes)
    epoch_secs = [h["epoch_seconds"] for h in history]
    metrics.update({
        "n_skipped": len(data.decoded.errors),
        "skipped": sorted(data.decoded.errors),
        "split": {k: int(len(v)) for k, v in data.parts.items()},
        "epochs_run": len(history),
        "best_epoch": best_epoch + 1,
        "best_val": {k: history[best_epoch][k] for k in ("val_loss", "val_acc") if best_epoch >= 0 and k in history[best_epoch]},
        "avg_epoch_seconds": float(np.mean(epoch_secs)) if epoch_secs else 0.0,
        "train_images_per_second": float(np.mean([h["train_images_per_second"] for h in history])) if history else 0.0,
        "params_total": count_parameters(model)[0],
        "trainable_fraction": strategy.max_trainable_fraction(model, cfg.epochs),
        "trainable_percent": 100.0 * strategy.max_trainable_fraction(model, cfg.epochs),
        "backbone": cfg.backbone, "weights": cfg.weights, "strategy": cfg.strategy, "recipe": cfg.recipe,
        "img_size": dcfg.img_size, "seed": cfg.seed,
        "feature_cache": sets.kind == "features", "prefix_cache": sets.kind == "prefix",
        "device": str(device), "world_size": run.dist.world_size if sets.kind != "features" else 1,
        # Wall time of this invocation (a resumed run counts only its last part), including
        # decoding, feature extraction and the test evaluation.
        "wall_seconds": wall_seconds,
        **measure_inference(model, data.decoded, test_idx, dcfg, device, cfg.channels_last),
    })
    np.save(run.path / "test_logits.npy", logits)
    np.save(run.path / "test_labels.npy", y_test)
    write_report(run.path, metrics, history, title=f"{cfg.backbone} / {cfg.strategy}", config=cfg.to_dict())
    atomic_write_json(run.path / "metrics.json", metrics)
    return metrics


@torch.inference_mode()
def measure_inference(
    model: nn.Module, decoded: DecodedImages, indices: np.ndarray, dcfg: DataConfig, device: torch.device,
    channels_last: bool = True, n_batch: int = 256, n_single: int = 16,
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
    return {"inference_images_per_second": len(xs) / batch_s if batch_s > 0 else 0.0, "latency_ms": 1000.0 * single_s / k, "inference_batch_size": 64}


def _evaluation_set(run_dir: Path, cfg: TrainConfig, classes: list[str], data: str | None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(paths, labels in the run's class order, indices to score) of an evaluation."""
    if data:
        images = load_labeled(data)
        unknown = [c for c in images.classes if c not in classes]
        if unknown:
            raise AnivisionError(f"{data}: class(es) {', '.join(unknown)} are not classes of the run {run_dir} ({', '.join(classes)})")
        labels = np.asarray([classes.index(images.classes[y]) for y in images.labels], dtype=np.int64)
        return images.paths, labels, np.arange(len(images.paths))
    split = read_split(cfg.split) if cfg.split else read_split(run_dir / "split.csv")
    if split.classes != classes:
        raise AnivisionError(f"{run_dir}: split classes differ from the run's classes")
    idx = np.asarray(split_indices(split.splits or [])["test"], dtype=np.int64)
    return split.paths, np.asarray(split.labels, dtype=np.int64), idx


def evaluate_run(run_dir: str | Path, data: str | None = None, out: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Evaluate a finished run on its test split, or on every image of ``data``.

    With ``data``, the folder's class names must all be classes of the run.
    Writes ``metrics.json`` and ``report.md`` into ``out`` (default: ``RUN_DIR/eval`` or
    ``RUN_DIR/eval-<data name>``).
    """
    run_dir = Path(run_dir)
    model, cfg, classes, dcfg = load_run(run_dir)
    device = next(model.parameters()).device
    paths, labels, idx = _evaluation_set(run_dir, cfg, classes, data)
    out_dir = Path(out) if out else run_dir / (f"eval-{Path(data).stem}" if data else "eval")
    decoded = decode_images(paths, cache_size(dcfg), cache_dir=cfg.cache_dir or default_cache_dir(), progress=progress)
    ds = CachedImageDataset(decoded, idx, labels, eval_transform(dcfg))
    if len(ds) == 0:
        raise AnivisionError(f"{data or run_dir}: no readable images to evaluate")
    logits, y, _ = predict(model, DataLoader(ds, batch_size=64, shuffle=False), device, cfg.channels_last, progress=progress)
    metrics = logits_metrics(logits, y if y is not None else ds.targets, classes)
    metrics.update({"n_skipped": len(decoded.errors), "skipped": sorted(decoded.errors), "run": str(run_dir), "data": str(data or "test split")})
    metrics.update(measure_inference(model, decoded, ds.indices, dcfg, device, cfg.channels_last))
    out_dir.mkdir(parents=True, exist_ok=True)
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
    paths = expand_inputs(inputs)
    k = max(1, min(top_k, len(classes)))
    decoded = decode_images(paths, cache_size(dcfg), cache_dir=None, progress=progress)
    ds = CachedImageDataset(decoded, np.arange(len(paths)), None, eval_transform(dcfg))
    logits, _, _ = predict(model, DataLoader(ds, batch_size=batch_size, shuffle=False), None, cfg.channels_last, desc="predict", progress=progress)
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
