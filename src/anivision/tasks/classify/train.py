"""Train (or resume) one classification run.

:func:`train_classifier` runs the whole job for one :class:`TrainConfig`: split (or read a
frozen split), decode images once, build backbone + head, train with the chosen strategy and
early stopping on validation, score the test split once with the best weights, and write
``metrics.json`` + ``report.md``. Rerunning the same command on the same folder resumes from
the last finished epoch; every epoch reseeds from (seed, epoch), so a resumed run ends exactly
where an uninterrupted one does.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from anivision.engine.distributed import device_for, init_distributed, torch_device
from anivision.engine.loop import LrFn, cross_entropy_step, evaluate_loss_acc, predict, seed_everything, train_one_epoch
from anivision.engine.run import BestTracker, RunFolder, TrainState
from anivision.engine.schedules import Plateau, warmup_constant, warmup_cosine
from anivision.errors import AnivisionError
from anivision.strategies import Strategy, backbone_groups, set_train_mode
from anivision.tasks.classify.config import TrainConfig
from anivision.tasks.classify.data import RunData, TrainingSets, check_new_data, keep_split, load_data, prepare_split, training_sets
from anivision.tasks.classify.evaluate import finish_run
from anivision.tasks.classify.model import build_classifier, classification_loss

log = logging.getLogger(__name__)

SCHEDULES = ("cosine", "plateau", "constant")


def train_classifier(cfg: TrainConfig, progress: bool = True, on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Run (or resume) one classification training job; return the test metrics.

    Writes into ``cfg.out``: ``config.json`` (``data``/``split`` absolute), ``split.csv`` (the
    run's own split, always: see :func:`~anivision.tasks.classify.data.prepare_split`), ``classes.json``,
    ``metrics.jsonl`` (one line per epoch), ``checkpoint/`` (last epoch, for resume),
    ``model.safetensors`` (best weights), ``metrics.json``, ``report.md`` and PNG plots.
    Under torchrun every rank trains (DDP) and rank 0 alone writes; the others return ``{}``.

    Args:
        cfg: the resolved configuration.
        progress: progress bars and per-epoch log lines.
        on_step: called with the global step before each training batch (tests inject a kill).

    Raises:
        AnivisionError: bad data, backbone, weights or config; or ``cfg.out`` holds a
            different run.
    """
    t_start = time.perf_counter()
    cfg = cfg.with_absolute_paths()  # config.json records where the data lies, from any working directory
    cfg.validate()  # a config built in code gets the same checks as the CLI's, before anything is written
    if cfg.device:
        torch_device(cfg.device)  # --device bogus, or cuda without a GPU: refused before the run folder is made
    cfg.check_out_outside_data()
    dinfo = init_distributed()
    run = RunFolder(cfg.out, cfg, dinfo)
    done = run.finished("metrics.json")
    if done is not None:
        return done
    check_new_data(cfg, run.path)
    run.claim()
    device = device_for(dinfo, cfg.device)
    seed_everything(cfg.seed)
    # Classes and split come first: the head's size depends on them. Rank 0 makes the split and
    # fills the decoded-image cache; the other ranks then read both.
    images = run.main_first(lambda: prepare_split(cfg, run.path))
    if len(images.classes) < 2:
        raise AnivisionError(f"{cfg.data}: a classifier needs at least 2 classes, found {len(images.classes)}")
    run.write_json("classes.json", images.classes)
    model, dcfg = build_classifier(cfg, len(images.classes))
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    progress = progress and run.is_main
    data = run.main_first(lambda: load_data(cfg, run, dcfg, images, progress))
    strategy = Strategy(cfg.strategy, backbone_groups(model.backbone), cfg.partial_groups, cfg.unfreeze_every, cfg.progressive_groups)
    sets = training_sets(cfg, model, dcfg, data, strategy, run, device, progress)
    keep_split(cfg, run, images)  # training starts: from now on the run keeps (and reuses) its split
    if sets.kind == "features":
        if not run.is_main:
            return {}  # a head on cached features trains in seconds: rank 0 does it alone
        run = run.alone()
    state = fit(cfg, model, sets, strategy, run, device, progress, on_step)
    if not run.is_main:
        return {}
    return finish_run(cfg, model, dcfg, data, sets, state, strategy, run, device, progress, time.perf_counter() - t_start)


def lr_function(cfg: TrainConfig, steps_per_epoch: int, plateau: Plateau) -> LrFn:
    """The per-step learning rate of each param group (``group["base_lr"]`` scaled)."""
    if cfg.schedule not in SCHEDULES:
        raise AnivisionError(f"unknown schedule '{cfg.schedule}' (choose {', '.join(SCHEDULES)})")
    total = cfg.epochs * steps_per_epoch
    warm = int(round(cfg.warmup_epochs * steps_per_epoch))

    def lr_at(step: int, group: dict) -> float:
        base = group["base_lr"]
        if cfg.schedule == "cosine":
            return warmup_cosine(step, total, warm, base, min(cfg.min_lr, base))
        if cfg.schedule == "plateau":
            return max(base * plateau.scale, min(cfg.min_lr, base))
        return warmup_constant(step, warm, base)

    return lr_at


def tracker_for(cfg: TrainConfig, has_val: bool) -> BestTracker:
    """Best epoch by ``cfg.monitor`` with early stopping; without validation the last epoch."""
    if not has_val:
        return BestTracker("last")
    return BestTracker("max" if cfg.monitor.endswith("acc") else "min", patience=cfg.patience)


def fit(
    cfg: TrainConfig, model: nn.Module, sets: TrainingSets, strategy: Strategy, run: RunFolder,
    device: torch.device, progress: bool, on_step: Callable[[int], None] | None,
) -> TrainState:
    """The epochs: strategy, one pass of the engine's loop, validation, best weights, checkpoint."""
    has_val = len(sets.val_set) > 0
    world = run.dist.world_size
    # A last batch of one image breaks BatchNorm in train mode; drop the remainder instead
    # (the shuffle differs every epoch, so every image is still seen).
    drop_last = len(sets.train_set) > cfg.batch_size * world
    steps_per_epoch = len(sets.train_set) // (cfg.batch_size * world) if drop_last else 1
    plateau = Plateau(cfg.plateau_factor, cfg.plateau_patience)
    state = run.resume(sets.trained, sets.optimizer, tracker_for(cfg, has_val))
    plateau.load_state_dict(state.extra)
    lr_fn = lr_function(cfg, steps_per_epoch, plateau)
    step_fn = cross_entropy_step(classification_loss(cfg))
    for epoch in state.epochs(cfg.epochs):
        gen = seed_everything(cfg.seed * 1000 + epoch)
        loader = _train_loader(cfg, sets, run, epoch, gen, drop_last)
        if sets.kind != "features":
            strategy.apply(model, epoch)
        set_train_mode(sets.trained)
        # DDP registers gradient hooks for the parameters that train when it is built, so it is
        # rebuilt each epoch: progressive unfreezing changes that set.
        step_model = DistributedDataParallel(sets.trained, device_ids=[device.index] if device.type == "cuda" else None) if run.dist.enabled else sets.trained
        stats = train_one_epoch(
            step_model, loader, sets.optimizer, step_fn, lr_fn, device=device, start_step=epoch * steps_per_epoch,
            amp=cfg.amp, grad_clip=cfg.grad_clip, channels_last=cfg.channels_last, on_step=on_step,
            desc=f"epoch {epoch + 1}/{cfg.epochs}", progress=progress,
        )
        row: dict[str, Any] = {
            "epoch": epoch + 1, "train_loss": stats.loss, "train_acc": stats.accuracy, "epoch_seconds": stats.seconds,
            "train_images_per_second": stats.images_per_second, "lr_head": stats.lr,
            "trainable_groups": strategy.n_trainable_groups(epoch) if sets.kind != "features" else 0,
        }
        if has_val:
            row["val_loss"], row["val_acc"] = _validate(cfg, sets, device, progress)
            if cfg.schedule == "plateau":
                plateau.step(row["val_loss"] if cfg.monitor == "val_loss" else -row["val_acc"])
        if state.tracker.update(row.get(cfg.monitor) if has_val else None, epoch):
            # The prefix run's suffix shares its modules with ``model``: saving ``model`` keeps the whole net.
            run.save_weights(model if sets.kind == "prefix" else sets.trained, "head.safetensors" if sets.kind == "features" else "model.safetensors")
        run.end_epoch(state, epoch, row, sets.trained, sets.optimizer, extra={**plateau.state_dict(), "world_size": world})
        if run.is_main:
            _log_epoch(cfg, epoch, row, stats.seconds, stats.images_per_second, state)
    return state


def _train_loader(cfg: TrainConfig, sets: TrainingSets, run: RunFolder, epoch: int, gen: torch.Generator, drop_last: bool) -> DataLoader:
    if run.dist.enabled:
        sampler = DistributedSampler(sets.train_set, num_replicas=run.dist.world_size, rank=run.dist.rank, shuffle=True, seed=cfg.seed, drop_last=drop_last)
        sampler.set_epoch(epoch)
        return DataLoader(sets.train_set, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.workers, drop_last=drop_last)
    return DataLoader(sets.train_set, batch_size=cfg.batch_size, shuffle=True, generator=gen, num_workers=cfg.workers, drop_last=drop_last)


def _validate(cfg: TrainConfig, sets: TrainingSets, device: torch.device, progress: bool) -> tuple[float, float]:
    loader = DataLoader(sets.val_set, batch_size=max(64, cfg.batch_size), shuffle=False, num_workers=cfg.workers)
    logits, y, _ = predict(sets.trained, loader, device, cfg.channels_last, desc="val", progress=progress)
    return evaluate_loss_acc(logits, y if y is not None else np.zeros(0, np.int64))


def _log_epoch(cfg: TrainConfig, epoch: int, row: dict[str, Any], seconds: float, ips: float, state: TrainState) -> None:
    msg = f"epoch {epoch + 1}/{cfg.epochs}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.2%}"
    if "val_loss" in row:
        msg += f" | val loss {row['val_loss']:.4f} acc {row['val_acc']:.2%}"
    log.info("%s | %.1fs, %.0f img/s", msg, seconds, ips)
    if state.stopped:
        log.info("early stop: no %s improvement for %d epoch(s)", cfg.monitor, cfg.patience)


__all__ = ["train_classifier", "lr_function", "fit", "RunData"]
