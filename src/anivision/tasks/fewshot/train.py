"""Meta-training of a prototypical network on class-disjoint episodes (resumable).

The task supplies the episode step (:func:`episode_step`) and the per-epoch data; the engine
trains (:func:`~anivision.engine.loop.train_one_epoch`) and keeps the run folder
(:class:`~anivision.engine.run.RunFolder`: same-run rule, checkpoint, resume, best epoch).
Episodes and augmentation depend only on (seed, epoch), so a resumed run ends exactly as an
unbroken one.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from anivision.data.cache import DecodedImages, decode_images, default_cache_dir
from anivision.data.datasets import CachedImageDataset
from anivision.data.folder import load_labeled
from anivision.data.samplers import EpisodeSampler
from anivision.data.transforms import DataConfig, cache_size, eval_transform, train_transform
from anivision.embeddings import forward_batches, pick_device
from anivision.engine.checkpoint import load_weights
from anivision.engine.loop import LrFn, StepFn, cross_entropy_step, seed_everything, train_one_epoch
from anivision.engine.optim import make_optimizer, param_groups
from anivision.engine.run import BestTracker, RunFolder, TrainState
from anivision.engine.schedules import multistep
from anivision.models.backbone import create_backbone, data_config
from anivision.models.classifier import Classifier
from anivision.models.protonet import PrototypicalNetwork
from anivision.models.transfer import TransferEmbedding, parse_parts
from anivision.strategies import backbone_groups, set_train_mode, train_top_groups
from anivision.tasks.fewshot.config import FewShotTrainConfig
from anivision.tasks.fewshot.episodes import evaluate_episodes
from anivision.tasks.fewshot.splits import ClassSplit, class_disjoint_split, select_classes

log = logging.getLogger(__name__)


@dataclass
class EpisodeData:
    """The images of a run: training classes first, then validation classes, one decoded cache.

    Attributes:
        split: the run's class split.
        decoded: decoded images of the training then the validation classes.
        labels: label of every decoded image (validation labels follow the training ones).
        train_set: the training images with the training augmentation.
        val_set: validation images embedded each epoch (readable, capped per class; eval
            transform; targets 0..C-1): the validation classes, or every class of ``--val-data``.
        val_sampler: the fixed validation episodes (positions in ``val_set``), or None (fewer
            than 2 validation classes).
        dcfg: input size and normalisation.
    """

    split: ClassSplit
    decoded: DecodedImages
    labels: np.ndarray
    train_set: CachedImageDataset
    val_set: CachedImageDataset
    val_sampler: EpisodeSampler | None
    dcfg: DataConfig


def episode_step(n_way: int, k_shot: int, n_query: int) -> StepFn:
    """The meta-training step: one episode, its support set's prototypes, cross-entropy of its queries.

    The batch is the episode's N * (K + Q) images class by class, support first (the layout
    :class:`EpisodeSampler` yields); one backbone pass embeds them all, as in easyfsl's episodic
    training. The step logs the query accuracy as ``acc``.
    """
    support_labels = torch.arange(n_way).repeat_interleave(k_shot)
    target = torch.arange(n_way).repeat_interleave(n_query)

    def step(model: PrototypicalNetwork, batch: Sequence[torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        z = model.embed(batch[0]).reshape(n_way, k_shot + n_query, -1)  # (N, K + Q, D)
        model.process_support_set(z[:, :k_shot].reshape(n_way * k_shot, -1), support_labels.to(z.device))
        logits = model(z[:, k_shot:].reshape(n_way * n_query, -1))  # (N * Q, N)
        y = target.to(z.device)
        loss = nn.functional.cross_entropy(logits, y)
        return loss, {"acc": float((logits.detach().argmax(1) == y).float().mean())}

    return step


def epoch_lr(epoch: int, epochs: int, cfg: FewShotTrainConfig) -> LrFn:
    """The multistep learning rate of 0-based ``epoch`` of ``epochs`` for every step of it."""
    return lambda _step, group: multistep(epoch, epochs, group["base_lr"], cfg.milestones, cfg.gamma)


def cap_per_class(positions: np.ndarray, labels: np.ndarray, valid: np.ndarray, cap: int | None, seed: int) -> np.ndarray:
    """At most ``cap`` readable positions per class (seeded choice, sorted); all when ``cap`` is None.

    Validation images are embedded every epoch; a few hundred per class already give
    thousands of distinct episodes, so a cap saves CPU time on large classes.
    """
    positions = positions[valid[positions]]
    if cap is None:
        return positions
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels[positions]):
        pos = positions[labels[positions] == c]
        keep.append(np.sort(rng.choice(pos, size=min(cap, len(pos)), replace=False)))
    return np.sort(np.concatenate(keep)) if keep else positions


def validation_episodes(cfg: FewShotTrainConfig, targets: np.ndarray, names: list[str]) -> EpisodeSampler | None:
    """Fixed validation episodes (same every epoch, so epochs compare without sampling noise).

    With fewer validation classes than ``n_way`` the episodes use all of them (e.g. 3-way);
    with fewer than 2 there is no validation and the last epoch is kept.
    """
    if len(names) < 2:
        log.warning("fewer than 2 validation classes: no validation episodes, the last epoch is kept")
        return None
    need = cfg.k_shot + cfg.n_query
    usable = sum(int((targets == c).sum()) >= need for c in range(len(names)))
    n_way = min(cfg.n_way, max(usable, 2))
    if n_way < cfg.n_way:
        log.info("validation uses %d-way episodes: only %d validation classes", n_way, usable)
    return EpisodeSampler(targets, n_way, cfg.k_shot, cfg.n_query, cfg.val_episodes, seed=cfg.seed,
                          skip_small_classes=cfg.skip_small_classes, class_names=names)


def other_source_validation(cfg: FewShotTrainConfig, dcfg: DataConfig, progress: bool) -> tuple[CachedImageDataset, list[str]]:
    """``--val-data``: every class of another source's dataset, readable images capped per class."""
    images = load_labeled(str(cfg.val_data))
    decoded = decode_images(list(images.paths), cache_size(dcfg), cache_dir=cfg.cache_dir or default_cache_dir(), progress=progress)
    labels = np.asarray(images.labels)
    positions = cap_per_class(np.arange(len(labels)), labels, decoded.valid, cfg.val_max_per_class, cfg.seed)
    return CachedImageDataset(decoded, positions, labels, eval_transform(dcfg)), list(images.classes)


def load_episode_data(cfg: FewShotTrainConfig, run: RunFolder, dcfg: DataConfig, progress: bool) -> EpisodeData:
    """Split the classes (or read the run's ``classes.json``), decode the images, check the episode shape.

    Raises:
        AnivisionError: a class is missing, or the classes cannot fill the episodes.
    """
    images = load_labeled(cfg.data)
    split_path = run.path / "classes.json"
    if split_path.exists():
        split = ClassSplit.load(split_path)
    else:
        split = class_disjoint_split(images.classes, cfg.classes, cfg.ratios, cfg.seed)
        split.save(split_path)
    log.info("classes: %d train, %d val, %d test (held out: %s)", len(split.train), len(split.val), len(split.test), ", ".join(split.test) or "none")
    train_idx, train_labels, _ = select_classes(images, split.train, cfg.data)
    val_idx, val_labels, _ = select_classes(images, split.val, cfg.data)
    paths = [images.paths[i] for i in train_idx] + [images.paths[i] for i in val_idx]
    labels = np.concatenate([train_labels, val_labels + len(split.train)])
    n_train = len(train_idx)
    decoded = decode_images(paths, cache_size(dcfg), cache_dir=cfg.cache_dir or default_cache_dir(), progress=progress)
    if decoded.errors:
        run.write_text("skipped.txt", "\n".join(decoded.errors.values()) + "\n")
    train_set = CachedImageDataset(decoded, np.arange(n_train), labels, train_transform(dcfg, cfg.augment()))
    # Validate the episode shape early (before any pretraining): small classes, too few classes.
    EpisodeSampler(train_set.targets, cfg.n_way, cfg.k_shot, cfg.n_query, 1, skip_small_classes=cfg.skip_small_classes, class_names=split.train)
    if cfg.val_data:
        val_set, val_names = other_source_validation(cfg, dcfg, progress)
        log.info("validation: %d classes of %s (another source)", len(val_names), cfg.val_data)
    else:
        val_positions = cap_per_class(np.arange(n_train, len(paths)), labels, decoded.valid, cfg.val_max_per_class, cfg.seed)
        val_set, val_names = CachedImageDataset(decoded, val_positions, labels - len(split.train), eval_transform(dcfg)), list(split.val)
    return EpisodeData(split, decoded, labels, train_set, val_set, validation_episodes(cfg, val_set.targets, val_names), dcfg)


def validation_accuracy(backbone: nn.Module, data: EpisodeData, cfg: FewShotTrainConfig, device: torch.device, progress: bool) -> float | None:
    """Mean accuracy of the fixed validation episodes on fresh embeddings; None without validation.

    A transfer embedding's means are fitted first (always: they belong to these weights)."""
    if isinstance(backbone, TransferEmbedding):
        fit_means(backbone, data, cfg, device)  # the means of this epoch's weights (saved with them)
    if data.val_sampler is None:
        return None
    feats = forward_batches(backbone, data.val_set, batch_size=64, device=device, desc="val embed", progress=progress)
    idx, _ = data.val_sampler.sample()
    return float(evaluate_episodes(feats, idx, cfg.k_shot, cfg.distance).mean())


def fit_means(model: TransferEmbedding, data: EpisodeData, cfg: FewShotTrainConfig, device: torch.device) -> None:
    """Fit the transfer embedding's means on up to ``fit_images`` training images (seeded, eval transform)."""
    n = len(data.train_set)
    rows = np.sort(np.random.default_rng(cfg.seed).choice(n, size=min(cfg.fit_images, n), replace=False))
    ds = CachedImageDataset(data.decoded, data.train_set.indices[rows], None, eval_transform(data.dcfg))
    loader = DataLoader(ds, batch_size=64, shuffle=False, num_workers=0)
    model.fit(batch[0].to(device) for batch in loader)


def pretrain_steps(cfg: FewShotTrainConfig, data: EpisodeData) -> int:
    """Optimizer steps of supervised pretraining (0 without): where meta-training's global steps start."""
    return cfg.pretrain_epochs * math.ceil(len(data.train_set) / cfg.pretrain_batch_size) if cfg.pretrain == "supervised" else 0


def pretrain_supervised(
    cfg: FewShotTrainConfig, backbone: nn.Module, data: EpisodeData, run: RunFolder, device: torch.device,
    on_step: Callable[[int], None] | None, progress: bool,
) -> None:
    """Ordinary cross-entropy training of backbone + linear head on the training classes.

    The head is dropped afterwards; the backbone is the starting point of episode training.
    Resumable: ``pretrain/`` holds an epoch checkpoint and, when done, ``backbone.safetensors``.
    Its global steps are 0 .. :func:`pretrain_steps` - 1.
    """
    sub = run.sub("pretrain", metrics_log=None)
    done = sub.path / "backbone.safetensors"
    if done.exists():
        load_weights(backbone, done)
        return
    model = Classifier(backbone, len(data.split.train), dropout=0.2).to(device)
    optimizer = make_optimizer("sgd", param_groups([("model", model, cfg.lr)], cfg.weight_decay, decay_1d=True), momentum=cfg.momentum)
    state = sub.resume(model, optimizer)
    step_fn = cross_entropy_step(nn.CrossEntropyLoss())
    per_epoch = math.ceil(len(data.train_set) / cfg.pretrain_batch_size)
    for epoch in state.epochs(cfg.pretrain_epochs):
        gen = seed_everything(cfg.seed * 1000 + 500 + epoch)
        loader = DataLoader(data.train_set, batch_size=cfg.pretrain_batch_size, shuffle=True, generator=gen, num_workers=cfg.workers)
        model.train()
        stats = train_one_epoch(
            model, loader, optimizer, step_fn, epoch_lr(epoch, cfg.pretrain_epochs, cfg), device=device,
            start_step=epoch * per_epoch, amp=cfg.amp, grad_clip=cfg.grad_clip, channels_last=True, on_step=on_step,
            desc=f"pretrain {epoch + 1}/{cfg.pretrain_epochs}", progress=progress,
        )
        log.info("pretrain epoch %d/%d: loss %.4f acc %.2f%% (%.0fs)", epoch + 1, cfg.pretrain_epochs, stats.loss, 100 * stats.accuracy, stats.seconds)
        sub.end_epoch(state, epoch, {"epoch": epoch, "train_loss": stats.loss, "train_acc": stats.accuracy}, model, optimizer)
    sub.save_weights(backbone, "backbone.safetensors")


def meta_train_epoch(
    net: PrototypicalNetwork, data: EpisodeData, optimizer: torch.optim.Optimizer, cfg: FewShotTrainConfig, epoch: int,
    start_step: int, device: torch.device, on_step: Callable[[int], None] | None, progress: bool,
) -> dict[str, Any]:
    """One epoch (1-based) of ``episodes_per_epoch`` training episodes; its metrics row without ``val_acc``."""
    # Episodes and augmentation depend only on (seed, epoch): a resumed run matches an unbroken one.
    seed_everything(cfg.seed * 1000 + epoch)
    sampler = EpisodeSampler(data.train_set.targets, cfg.n_way, cfg.k_shot, cfg.n_query, cfg.episodes_per_epoch,
                             seed=cfg.seed * 1000 + epoch, skip_small_classes=cfg.skip_small_classes, class_names=data.split.train)
    loader = DataLoader(data.train_set, batch_sampler=sampler, num_workers=cfg.workers)
    set_train_mode(net)  # the frozen lower groups' BatchNorms keep their statistics
    stats = train_one_epoch(
        net, loader, optimizer, episode_step(cfg.n_way, cfg.k_shot, cfg.n_query), epoch_lr(epoch - 1, cfg.epochs, cfg),
        device=device, start_step=start_step, amp=cfg.amp, grad_clip=cfg.grad_clip, channels_last=True, on_step=on_step,
        desc=f"epoch {epoch}/{cfg.epochs}", progress=progress,
    )
    lr = multistep(epoch - 1, cfg.epochs, cfg.lr, cfg.milestones, cfg.gamma)
    return {"epoch": epoch, "lr": lr, "train_loss": stats.loss, "train_acc": stats.accuracy, "epoch_seconds": stats.seconds}


def train_fewshot(cfg: FewShotTrainConfig, progress: bool = True, on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Meta-train (or resume) a prototypical network on class-disjoint episodes.

    Writes into ``cfg.out``: ``config.json``, ``classes.json`` (train/val/test classes; the
    test classes are never read here), ``metrics.jsonl`` (one line per epoch; epoch 0 is the
    starting point), ``checkpoint/`` (last epoch, for resume), ``model.safetensors`` (backbone
    weights with the best validation-episode accuracy) and ``train.json`` (summary).

    Args:
        cfg: the run.
        progress: show progress bars.
        on_step: called with the global step (0-based, pretraining first) before every
            optimizer step; tests interrupt training from it.

    Returns:
        The summary: best epoch, best and initial validation accuracy, classes, timings.

    Raises:
        AnivisionError: bad data or config, too few classes for the episodes, or ``cfg.out``
            holds a different run.
    """
    cfg.validate()
    cfg = cfg.with_absolute_paths()  # config.json records where the data lies, from any working directory
    run = RunFolder(cfg.out, cfg)
    if (done := run.finished("train.json")) is not None:
        return done
    run.claim()
    device = pick_device(cfg.device)
    seed_everything(cfg.seed)
    backbone = create_backbone(cfg.backbone, cfg.weights, img_size=cfg.img_size)
    base = data_config(backbone, cfg.img_size)
    data = load_episode_data(cfg, run, DataConfig(base.img_size, base.mean, base.std, crop_pct=cfg.crop_pct), progress)
    backbone.to(device).to(memory_format=torch.channels_last)
    if cfg.pretrain == "supervised":
        pretrain_supervised(cfg, backbone, data, run, device, on_step, progress)

    # The embedding episodes train and evaluation uses: the transfer embedding's parts, or the pooled features.
    model = embedding_model(backbone, cfg, base.mean, base.std)
    freeze_lower_groups(backbone, cfg.train_groups)
    optimizer = make_optimizer("sgd", param_groups([("backbone", backbone, cfg.lr)], cfg.weight_decay, decay_1d=True), momentum=cfg.momentum)
    state = run.resume(model, optimizer, BestTracker("max"), first_epoch=1)
    if not state.history:
        # Epoch 0: the starting point, so the log shows what meta-training adds.
        v0 = validation_accuracy(model, data, cfg, device, progress)
        state.history.append({"epoch": 0, "val_acc": v0})
        run.rewrite_metrics_log(state.history)
        # Epoch 0 is a best-epoch candidate: a meta-training that only makes the embedding worse
        # on validation leaves model.safetensors holding the starting weights.
        if state.tracker.update(v0, 0) or cfg.epochs == 0:
            save_model(run, model, cfg, 0)
        if v0 is not None:
            log.info("epoch 0 (before meta-training): val %d-way %d-shot acc %.2f%%", data.val_sampler.n_way, cfg.k_shot, 100 * v0)  # type: ignore[union-attr]
    net = PrototypicalNetwork(model, cfg.distance, cfg.cosine_scale)
    first_step = pretrain_steps(cfg, data)
    for epoch in state.epochs(cfg.epochs + 1):
        start = first_step + (epoch - 1) * cfg.episodes_per_epoch
        row = meta_train_epoch(net, data, optimizer, cfg, epoch, start, device, on_step, progress)
        row["val_acc"] = validation_accuracy(model, data, cfg, device, progress)
        # Without validation classes every epoch counts as the best: the last one is kept.
        if state.tracker.update(row["val_acc"], epoch):
            save_model(run, model, cfg, epoch)
        run.end_epoch(state, epoch, row, model, optimizer)
        msg = f"epoch {epoch}/{cfg.epochs}: loss {row['train_loss']:.4f} acc {row['train_acc']:.2%}"
        if row["val_acc"] is not None:
            msg += f" | val {data.val_sampler.n_way}-way {cfg.k_shot}-shot acc {row['val_acc']:.2%}"  # type: ignore[union-attr]
        log.info("%s | %.0fs, lr %.0e", msg, row["epoch_seconds"], row["lr"])
    summary = run_summary(cfg, run, state, data)
    run.write_json("train.json", summary)
    return summary


def freeze_lower_groups(backbone: nn.Module, train_groups: int) -> None:
    """Only the top ``train_groups`` of timm's coarse parameter groups train (0: all).

    With the transfer embedding, the lower stages' pooled features are the part that transfers
    best to other sources (RESULTS section 17): meta-training adapts the top of the network and
    leaves them as they are.
    """
    groups = backbone_groups(backbone)
    if train_groups and train_groups < len(groups):
        train_top_groups(backbone, groups, train_groups)


def embedding_model(backbone: nn.Module, cfg: FewShotTrainConfig, mean: Sequence[float], std: Sequence[float]) -> nn.Module:
    """The run's embedding: :class:`TransferEmbedding` of ``backbone`` (``--embedding transfer``) or ``backbone`` itself."""
    if cfg.embedding != "transfer":
        return backbone
    return TransferEmbedding(backbone, parse_parts(cfg.parts), mean, std, cfg.img_size).to(next(backbone.parameters()).device)


def save_model(run: RunFolder, model: nn.Module, cfg: FewShotTrainConfig, epoch: int) -> None:
    """``model.safetensors``: the embedding of ``epoch`` (a transfer embedding with the means that
    :func:`validation_accuracy` fitted on it)."""
    run.save_weights(model, "model.safetensors", metadata={"backbone": cfg.backbone, "epoch": str(epoch), "embedding": cfg.embedding})


def run_summary(cfg: FewShotTrainConfig, run: RunFolder, state: TrainState, data: EpisodeData) -> dict[str, Any]:
    """``train.json``: best epoch, best and initial validation accuracy, classes, timings."""
    history = state.history
    return {
        "run": str(run.path),
        "best_epoch": state.tracker.best_epoch,
        "best_val_acc": state.tracker.best,
        "initial_val_acc": history[0].get("val_acc") if history else None,
        "val_n_way": data.val_sampler.n_way if data.val_sampler else None,
        "classes": dataclasses.asdict(data.split),
        "n_train_images": len(data.train_set),
        "n_skipped": len(data.decoded.errors),
        "epochs": cfg.epochs,
        "avg_epoch_seconds": float(np.mean([h["epoch_seconds"] for h in history if "epoch_seconds" in h])) if len(history) > 1 else 0.0,
    }
