"""Re-ID training of the cross-role protocol's folds, through the shared engine.

A fold trains on its training works with PK batches (P works x K images from different roles),
a BNNeck and optional GeM, the preset's SGD schedule per iteration, and the ID + triplet
objective (:class:`~anivision.models.losses.IdTripletLoss`). The loop, AMP, gradient clipping
and the divergence guard are :func:`~anivision.engine.loop.train_one_epoch`'s; checkpoints,
resume and the same-run rule are :class:`~anivision.engine.run.RunFolder`'s.

Run folder layout::

    RUN/config.json  folds.json  data.json  metrics.json  report.md  cmc.png  examples.png
    RUN/fold<i>/checkpoint/{model,optimizer}.safetensors,state.json   (latest epoch)
    RUN/fold<i>/model.safetensors  model.json  history.json  metrics.json
    RUN/search_index/gallery-<key>.npz
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from anivision.data.cache import DecodedImages, decode_images
from anivision.data.datasets import CachedImageDataset
from anivision.data.pk_sampler import PKSampler
from anivision.data.reid import Fold, ReidImages, make_folds
from anivision.data.transforms import DataConfig, cache_size, train_transform
from anivision.embeddings import pick_device
from anivision.engine.loop import EpochStats, StepFn, train_one_epoch
from anivision.engine.optim import make_optimizer, param_groups
from anivision.engine.run import BestTracker, RunFolder
from anivision.errors import AnivisionError
from anivision.files import atomic_write_json
from anivision.models.backbone import data_config
from anivision.models.losses import IdTripletLoss, make_triplet
from anivision.models.reid_head import ReidModel
from anivision.reports.retrieval import write_report
from anivision.tasks.retrieval.config import RetrievalConfig, RetrievalPreset, get_preset, preset_lr_fn
from anivision.tasks.retrieval.evaluate import data_summary, evaluate_fold_model, model_info, run_summary
from anivision.tasks.retrieval.model import build_model, has_fold_model, load_fold_model, make_backbone, model_meta, reid_augment

log = logging.getLogger(__name__)

#: ``on_step(global_step)``, called before each training batch (tests inject a kill here).
OnStep = Callable[[int], None]


def reid_step(criterion: IdTripletLoss) -> StepFn:
    """The engine step of re-ID training: forward, ID + triplet loss in float32.

    Logs ``id_loss``, ``triplet_loss`` (unweighted terms) and ``acc`` (ID accuracy).
    """

    def step(model: nn.Module, batch: Sequence[torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        x, y = batch[0], batch[1]
        out = model(x)
        # The engine autocasts the whole step under AMP; softmax weights and distances lose too
        # much in float16, so the losses run in float32.
        with torch.autocast(device_type=x.device.type, enabled=False):
            terms = criterion(out.feat.float(), out.logits.float(), y)
        acc = (out.logits.detach().argmax(dim=1) == y).float().mean()
        return terms.total, {"id_loss": float(terms.id_loss.detach()), "triplet_loss": float(terms.triplet_loss.detach()), "acc": float(acc)}

    return step


def make_criterion(cfg: RetrievalConfig, preset: RetrievalPreset) -> IdTripletLoss:
    """The preset's ID + triplet objective with the config's weights, margin and normalisation."""
    triplet = make_triplet(preset.triplet, cfg.triplet_margin, cfg.triplet_normalize)
    return IdTripletLoss(triplet, preset.label_smoothing, cfg.id_weight, cfg.triplet_weight)


def fold_loader(
    data: ReidImages, decoded: DecodedImages, fold: Fold, cfg: RetrievalConfig, dcfg: DataConfig, device: torch.device
) -> tuple[DataLoader, PKSampler]:
    """PK batches over the fold's training works (labels: indices into ``fold.train_works``).

    Raises:
        AnivisionError: fewer than two training works, or no readable training image.
    """
    if len(fold.train_works) < 2:
        raise AnivisionError(f"fold {fold.index}: {len(fold.train_works)} training work(s); the triplet loss needs 2 or more")
    labels = data.work_ids(fold.train_works)
    role_lut = {key: i for i, key in enumerate(sorted(set(data.role_keys())))}
    role_ids = np.array([role_lut[key] for key in data.role_keys()], dtype=np.int64)
    ds = CachedImageDataset(decoded, fold.train_idx, labels, train_transform(dcfg, reid_augment()))
    if len(ds) == 0:
        raise AnivisionError(f"fold {fold.index}: no readable training image")
    p = min(cfg.p, len(np.unique(ds.targets)))
    if p < cfg.p:
        log.info("fold %d: P lowered from %d to %d (training works with readable images)", fold.index, cfg.p, p)
    sampler = PKSampler(
        ds.targets, p, cfg.k, groups=role_ids[ds.indices], batches_per_epoch=cfg.batches_per_epoch,
        seed=cfg.seed * 1000 + fold.index,
    )
    loader = DataLoader(ds, batch_sampler=sampler, num_workers=cfg.num_workers, pin_memory=device.type == "cuda")
    return loader, sampler


def history_row(epoch: int, stats: EpochStats) -> dict[str, Any]:
    """One ``history.json`` entry (``epoch`` 1-based for plots), as retrieval runs always wrote it."""
    return {
        "epoch": epoch + 1,
        "train_loss": stats.loss,
        "id_loss": stats.logs.get("id_loss", float("nan")),
        "triplet_loss": stats.logs.get("triplet_loss", float("nan")),
        "train_acc": stats.accuracy,
        "lr": stats.lr,
        "seconds": stats.seconds,
    }


def train_fold(
    data: ReidImages,
    decoded: DecodedImages,
    fold: Fold,
    cfg: RetrievalConfig,
    dcfg: DataConfig,
    fold_dir: str | Path | RunFolder,
    device: torch.device | str | None = None,
    progress: bool = True,
    on_step: OnStep | None = None,
) -> ReidModel:
    """Train one fold's model on its training works; resumes from ``fold_dir/checkpoint``.

    Args:
        data: all images.
        decoded: ``data`` decoded at :func:`cache_size` of ``dcfg`` (one cache for all folds).
        fold: which works train.
        cfg: run configuration.
        dcfg: input size and normalisation.
        fold_dir: the fold's folder (or its :class:`RunFolder`): checkpoint, ``model.safetensors``,
            ``model.json`` and ``history.json`` go there.
        device: default CUDA if available.
        progress: progress bars.
        on_step: called with the global step before each batch.

    Returns:
        The trained model (eval mode), also saved as ``fold_dir/model.safetensors``.
    """
    run = fold_dir if isinstance(fold_dir, RunFolder) else RunFolder(fold_dir, metrics_log=None)
    preset = get_preset(cfg.preset)
    device = pick_device(str(device) if device else None)
    loader, sampler = fold_loader(data, decoded, fold, cfg, dcfg, device)
    torch.manual_seed(cfg.seed * 1000 + fold.index)  # classifier init, erasing: reproducible per fold
    model = build_model(cfg, len(fold.train_works)).to(device)
    groups = param_groups([("model", model, cfg.base_lr)], preset.weight_decay, trainable_only=True)
    optimizer = make_optimizer("sgd", groups, momentum=preset.momentum)
    step_fn = reid_step(make_criterion(cfg, preset))
    steps = len(loader)
    lr_fn = preset_lr_fn(preset, cfg.base_lr, cfg.epochs * steps)
    # The checkpoint state keeps the layout of earlier retrieval runs ({"epoch": 0-based,
    # "history": [...]}, plus the tracker's counters), so their half-trained folds resume.
    state = run.resume(model, optimizer, BestTracker("last"))
    for epoch in state.epochs(cfg.epochs):
        sampler.set_epoch(epoch)
        model.train()
        stats = train_one_epoch(
            model, loader, optimizer, step_fn, lr_fn, device=device, start_step=epoch * steps, amp=cfg.amp,
            grad_clip=cfg.grad_clip, on_step=on_step, desc=f"fold {fold.index} epoch {epoch + 1}/{cfg.epochs}", progress=progress,
        )
        row = history_row(epoch, stats)
        log.info(
            "fold %d epoch %d/%d: loss %.4f (id %.4f, triplet %.4f), id acc %.2f%%, lr %.2e, %.1fs",
            fold.index, epoch + 1, cfg.epochs, row["train_loss"], row["id_loss"], row["triplet_loss"],
            100 * row["train_acc"], row["lr"], row["seconds"],
        )
        run.end_epoch(state, epoch, row, model, optimizer)
    model.eval()
    run.save_weights(model, "model.safetensors")
    run.write_json("history.json", state.history)
    run.write_json("model.json", model_meta(cfg, model, fold.train_works, dcfg))
    return model


def _check_same(path: Path, new: Any, what: str, hint: str) -> None:
    """Write ``new`` as JSON to ``path``, or check it equals what is already there."""
    if path.exists():
        old = json.loads(path.read_text())
        if old != json.loads(json.dumps(new, default=list)):
            raise AnivisionError(f"{path}: {what} differs from this run's; {hint}")
    else:
        atomic_write_json(path, new)


def _decode_all(data: ReidImages, cfg: RetrievalConfig, cache_dir: str | Path | None, progress: bool) -> tuple[DataConfig, DecodedImages]:
    """The input config and every image decoded once: each fold trains on a subset of them."""
    dcfg = data_config(make_backbone(cfg.backbone, "none", cfg.img_size), cfg.img_size)
    return dcfg, decode_images(data.paths, cache_size(dcfg), cache_dir=cache_dir, progress=progress)


def train_run(
    data: ReidImages,
    cfg: RetrievalConfig,
    run_dir: str | Path,
    data_source: str | Path = "",
    only_fold: int | None = None,
    cache_dir: str | Path | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
    command: str | None = None,
    on_step: OnStep | None = None,
) -> dict[str, Any]:
    """Train and evaluate every fold (or one), resumably, then write ``metrics.json`` and ``report.md``.

    A fold whose ``metrics.json`` exists is reused; one with ``model.safetensors`` is only
    evaluated; one with a checkpoint continues from its last finished epoch.

    Args:
        data: the images.
        cfg: the configuration (must match ``config.json`` when ``run_dir`` already holds a run).
        run_dir: run folder.
        data_source: where the data came from (recorded).
        only_fold: train just this fold (0-based); other folds' finished results are reported.
        cache_dir: decoded-image and feature cache; None: no disk cache.
        device: default CUDA if available.
        progress: progress bars.
        command: the command line, recorded in the report.
        on_step: called with each fold's global step before each training batch.

    Returns:
        The run summary (also ``run_dir/metrics.json``).

    Raises:
        AnivisionError: the folder holds a run with another config or other folds, or a bad fold.
    """
    cfg.validate()
    run = RunFolder(run_dir, cfg)
    run.claim()
    folds = make_folds(data, cfg.folds, cfg.query_ratio, cfg.seed)
    if only_fold is not None and not 0 <= only_fold < len(folds):
        raise AnivisionError(f"--fold {only_fold} is out of range: folds are 0..{len(folds) - 1}")
    _check_same(run.path / "folds.json", [f.describe() for f in folds], "the fold definition", "the data changed since this run started")
    run.write_json("data.json", data_summary(data, data_source))
    device = pick_device(str(device) if device else None)
    decoded = functools.cache(lambda: _decode_all(data, cfg, cache_dir, progress))
    results = []
    for fold in folds:
        done = run.path / f"fold{fold.index}" / "metrics.json"
        if done.exists():
            log.info("fold %d: reusing %s", fold.index, done)
            results.append(json.loads(done.read_text()))
            continue
        if only_fold is not None and fold.index != only_fold:
            continue
        fold_run = run.sub(f"fold{fold.index}", metrics_log=None)
        if has_fold_model(fold_run.path):
            model, dcfg = load_fold_model(fold_run.path, device)
        else:
            dcfg, images = decoded()
            model = train_fold(data, images, fold, cfg, dcfg, fold_run, device, progress, on_step)
        res = evaluate_fold_model(model, dcfg, data, fold, cfg.metric, cache_dir, cfg.eval_batch_size, progress)
        fold_run.write_json("metrics.json", res)
        log.info("fold %d: mAP %.2f%%, mINP %.2f%%, rank-1 %.2f%%", fold.index, 100 * res["mAP"], 100 * res["mINP"], 100 * res["rank1"])
        results.append(res)
    summary = run_summary("trained", model_info(cfg), cfg.folds, cfg.query_ratio, cfg.seed, data, data_source, command, results)
    run.write_json("metrics.json", summary)
    write_report(run.path, summary)
    return summary
