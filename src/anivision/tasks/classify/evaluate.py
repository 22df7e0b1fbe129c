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
from anivision.data.folder import load_labeled
from anivision.data.splits import split_indices
from anivision.data.transforms import DataConfig, cache_size, eval_transform
from anivision.deploy import EngineRunner
from anivision.engine.checkpoint import load_weights
from anivision.engine.loop import predict, softmax_np
from anivision.engine.run import RunFolder, TrainState
from anivision.errors import AnivisionError
from anivision.files import atomic_write_json
from anivision.metrics.classification import classification_metrics
from anivision.models.backbone import count_parameters
from anivision.models.classifier import Classifier
from anivision.reports.classification import write_report
from anivision.reports.mistakes import mistakes_section
from anivision.strategies import Strategy
from anivision.tasks.classify.config import TrainConfig
from anivision.tasks.classify.data import RunData, TrainingSets, run_split
from anivision.tasks.classify.model import load_run
from anivision.tasks.classify.predictor import classifier_spec


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
    trainable = strategy.max_trainable_fraction(model, cfg.epochs)
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
        "trainable_fraction": trainable,
        "trainable_percent": 100.0 * trainable,
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
    mistakes = mistakes_section(run.path, model, dcfg, data.decoded, test_idx, y_test, softmax_np(logits.astype(np.float64)), data.images.classes)
    write_report(run.path, metrics, history, title=f"{cfg.backbone} / {cfg.strategy}", config=cfg.to_dict(), sections=mistakes)
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


def _evaluation_set(run_dir: Path, cfg: TrainConfig, classes: list[str], data: str | None, data_root: str | Path | None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(paths, labels in the run's class order, indices to score) of an evaluation."""
    if data:
        images = load_labeled(data)
        unknown = [c for c in images.classes if c not in classes]
        if unknown:
            raise AnivisionError(f"{data}: class(es) {', '.join(unknown)} are not classes of the run {run_dir} ({', '.join(classes)})")
        labels = np.asarray([classes.index(images.classes[y]) for y in images.labels], dtype=np.int64)
        return images.paths, labels, np.arange(len(images.paths))
    split = run_split(run_dir, cfg, data_root)
    if split.classes != classes:
        raise AnivisionError(f"{run_dir}: split classes differ from the run's classes")
    idx = np.asarray(split_indices(split.splits or [])["test"], dtype=np.int64)
    return split.paths, np.asarray(split.labels, dtype=np.int64), idx


def evaluate_run(
    run_dir: str | Path, data: str | None = None, out: str | Path | None = None, progress: bool = True,
    data_root: str | Path | None = None, engine: str = "torch",
) -> dict[str, Any]:
    """Evaluate a finished run on its test split, or on every image of ``data``.

    ``engine``: ``torch``, or ``onnx`` (the run exported once to ``RUN/onnx/`` and run with ONNX Runtime).

    The test split is the run's own ``split.csv``; its images are found under the data root
    recorded there, or under ``data_root`` when given (the data moved: each image is looked for
    at the same place relative to the new root, and its sha1 must match). Works from any
    working directory and after the run folder moved.

    With ``data``, the folder's class names must all be classes of the run (``data_root`` is
    then not used). Writes ``metrics.json`` and ``report.md`` into ``out`` (default:
    ``RUN_DIR/eval`` or ``RUN_DIR/eval-<data name>``).

    Raises:
        AnivisionError: not a trained run; ``out`` is the run folder itself; both ``data`` and ``data_root``; the recorded data
            root or an image is missing (the message says to pass ``data_root``), or changed.
    """
    if data and data_root:
        raise AnivisionError("give --data (evaluate on every image of a folder) or --data-root (the test split's images moved there), not both")
    run_dir = Path(run_dir)
    if out and Path(out).resolve() == run_dir.resolve():
        raise AnivisionError(f"--out {out} is the run folder itself; its metrics.json and report.md are the run's own, "
                             "so choose another folder (default: RUN/eval)")
    model, cfg, classes, dcfg = load_run(run_dir)
    device = next(model.parameters()).device
    paths, labels, idx = _evaluation_set(run_dir, cfg, classes, data, data_root)
    out_dir = Path(out) if out else run_dir / (f"eval-{Path(data).stem}" if data else "eval")
    # The training machine's cache folder may not exist here (a run copied to another machine).
    cache_dir = cfg.cache_dir if cfg.cache_dir and Path(cfg.cache_dir).is_dir() else default_cache_dir()
    decoded = decode_images(paths, cache_size(dcfg), cache_dir=cache_dir, progress=progress)
    ds = CachedImageDataset(decoded, idx, labels, eval_transform(dcfg))
    if len(ds) == 0:
        raise AnivisionError(f"{data or run_dir}: no readable images to evaluate")
    net = EngineRunner(engine, lambda: classifier_spec(model, classes, dcfg, run_dir), run_dir / "onnx").pick(model, "logits")
    if net is model:
        logits, y, _ = predict(model, DataLoader(ds, batch_size=64, shuffle=False), device, cfg.channels_last, progress=progress)
    else:
        logits, y = net.forward_dataset(ds, 64, "eval", progress), None
    metrics = logits_metrics(logits, y if y is not None else ds.targets, classes)
    metrics.update({"n_skipped": len(decoded.errors), "skipped": sorted(decoded.errors), "run": str(run_dir), "data": str(data or "test split")})
    metrics.update(measure_inference(net, decoded, ds.indices, dcfg, device, cfg.channels_last and net is model))  # type: ignore[arg-type]
    metrics["engine"] = engine
    out_dir.mkdir(parents=True, exist_ok=True)
    mistakes = mistakes_section(out_dir, model, dcfg, decoded, ds.indices, ds.targets, softmax_np(logits.astype(np.float64)), classes)
    write_report(out_dir, metrics, [], title=f"evaluation of {run_dir.name} on {data or 'its test split'} ({metrics['n_images']} images)", config=None, sections=mistakes)
    atomic_write_json(out_dir / "metrics.json", metrics)
    return metrics | {"out": str(out_dir)}
