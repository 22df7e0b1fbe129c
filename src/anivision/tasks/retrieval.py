"""Anime style retrieval: re-identification training and the cross-role, k-fold protocol.

Given images of *different* roles (characters), find the images from the same work (anime,
rendering style). This module is the library side of ``anivision retrieval``:

- losses: label-smoothing cross-entropy on work ids, batch-hard triplet (pytorch-metric-learning's
  ``TripletMarginLoss`` + ``BatchHardMiner``) and the weighted regularised triplet of AGW (written
  here: PML has no such loss; ``tests/test_retrieval_task.py`` checks it against a naive loop);
- presets ``agw`` and ``transreid`` (optimiser, schedule, losses, pooling);
- :func:`train_fold` (PK batches, BNNeck, optional GeM, AMP on CUDA, safetensors checkpoints each
  epoch, resumable) and :func:`train_run` (all folds of :func:`anivision.data.reid.make_folds`; a
  fold whose ``metrics.json`` exists is reused, so rerunning the command resumes);
- evaluation on cached embeddings (:func:`anivision.embeddings.embed_paths`) with
  :func:`anivision.metrics.retrieval.retrieval_metrics`, per fold and mean +/- std;
- :func:`evaluate_baseline` (untrained backbone on the same folds), :func:`evaluate_run`;
- gallery search with an index saved beside the run and reused;
- ``report.md`` with the CMC curve, a grid of queries and their top-k, and per-work AP.

Run folder layout::

    RUN/config.json  folds.json  data.json  metrics.json  report.md  cmc.png  examples.png
    RUN/fold<i>/checkpoint/{model,optimizer}.safetensors,state.json   (latest epoch)
    RUN/fold<i>/model.safetensors  model.json  history.json  metrics.json
    RUN/search_index/gallery-<key>.npz
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_metric_learning import distances, losses, miners, reducers
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from anivision.data.cache import DecodedImages, decode_images, files_fingerprint
from anivision.data.datasets import CachedImageDataset
from anivision.data.pk_sampler import PKSampler
from anivision.data.reid import DEFAULT_FOLDS, DEFAULT_QUERY_RATIO, Fold, ReidImages, make_folds
from anivision.data.transforms import AugmentConfig, cache_size, train_transform
from anivision.embeddings import embed_paths, model_fingerprint, pick_device
from anivision.files import atomic_write_json, atomic_write_text
from anivision.engine.checkpoint import load_checkpoint, load_weights, save_checkpoint, save_weights
from anivision.errors import AnivisionError
from anivision.metrics.retrieval import pairwise_distances, retrieval_metrics
from anivision.models.backbone import DEFAULT_BACKBONE, DEFAULT_WEIGHTS, DataConfig, create_backbone, data_config
from anivision.models.reid_head import EmbeddingModel, ReidModel

log = logging.getLogger(__name__)

#: Length of the stored CMC curves.
MAX_RANK = 50
#: Summary metrics averaged over folds, in report order (LSASRD reports mINP / mAP / R1 / R5).
SUMMARY_KEYS = ("mINP", "mAP", "rank1", "rank5", "rank10")


# ============================================================================ losses


def _euclidean(feat: torch.Tensor) -> torch.Tensor:
    """(B, D) -> (B, B) Euclidean distances.

    Through squared norms with a clamp before the sqrt: the diagonal is exactly zero and
    ``sqrt`` has an infinite derivative there, which ``torch.cdist`` would turn into NaN
    gradients once masked entries are multiplied by zero.
    """
    sq = (feat * feat).sum(dim=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * feat @ feat.t()
    return d2.clamp(min=1e-12).sqrt()


def weighted_regularized_triplet(feat: torch.Tensor, labels: torch.Tensor, normalize: bool = False) -> torch.Tensor:
    """Weighted regularised triplet loss of AGW (Ye et al., TPAMI 2021).

    For each anchor i, positives P_i (same label, not i itself) and negatives N_i:

    - ``w_ij = softmax_{j in P_i}(d_ij)``, ``ap_i = sum_j w_ij d_ij`` (far positives weigh more);
    - ``w_ik = softmax_{k in N_i}(-d_ik)``, ``an_i = sum_k w_ik d_ik`` (close negatives weigh more);
    - ``loss = mean_i log(1 + exp(ap_i - an_i))`` (soft margin: no margin to tune).

    Unlike the reference code, the anchor is not its own positive: its zero distance would only
    pull ``ap_i`` down. Anchors with no positive or no negative in the batch are left out.

    Args:
        feat: (B, D) features (un-normalised in AGW).
        labels: (B,) int labels.
        normalize: L2-normalise the features first (distances in [0, 2]).

    Returns:
        Scalar loss; zero (with a graph) when no anchor has both a positive and a negative.
    """
    feat = F.normalize(feat.float(), dim=1) if normalize else feat.float()
    dist = _euclidean(feat)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=feat.device)
    pos, neg = same & ~eye, ~same
    keep = pos.any(dim=1) & neg.any(dim=1)
    if not bool(keep.any()):
        return feat.sum() * 0.0
    dist, pos, neg = dist[keep], pos[keep], neg[keep]
    # Masked softmax: -inf outside the mask gives weight exactly 0 there.
    w_ap = torch.softmax(dist.masked_fill(~pos, float("-inf")), dim=1)
    w_an = torch.softmax((-dist).masked_fill(~neg, float("-inf")), dim=1)
    furthest_positive = (w_ap * dist).sum(dim=1)
    closest_negative = (w_an * dist).sum(dim=1)
    return F.softplus(furthest_positive - closest_negative).mean()


class WeightedRegularizedTriplet(nn.Module):
    """Module form of :func:`weighted_regularized_triplet`: ``(B, D), (B,) -> scalar``."""

    def __init__(self, normalize: bool = False) -> None:
        super().__init__()
        self.normalize = normalize

    def forward(self, feat: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return weighted_regularized_triplet(feat, labels, self.normalize)


class BatchHardTriplet(nn.Module):
    """Batch-hard triplet loss: pytorch-metric-learning's miner + loss, configured as in re-ID.

    Each anchor's hardest positive and hardest negative (``BatchHardMiner``) form one triplet;
    ``max(d_ap - d_an + margin, 0)`` is averaged over *all* anchors (``MeanReducer``; PML's
    default averages only the non-zero ones, which makes the loss scale jump as it converges).

    Args:
        margin: triplet margin (0.3 in Bag of Tricks / TransReID, on un-normalised features).
        normalize: L2-normalise features before the distances.
    """

    def __init__(self, margin: float = 0.3, normalize: bool = False) -> None:
        super().__init__()
        dist = distances.LpDistance(normalize_embeddings=normalize)
        self.miner = miners.BatchHardMiner(distance=dist)
        self.loss = losses.TripletMarginLoss(margin=margin, distance=dist, reducer=reducers.MeanReducer())

    def forward(self, feat: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, D) features, (B,) labels -> scalar loss."""
        feat = feat.float()
        return self.loss(feat, labels, self.miner(feat, labels))


# ============================================================================ presets and config


@dataclass(frozen=True)
class RetrievalPreset:
    """A training recipe from the literature (LSASRD's two baselines).

    Attributes:
        name: preset name.
        lr: peak learning rate (SGD).
        weight_decay: L2 on weights (not on norms, biases, GeM p).
        momentum: SGD momentum.
        schedule: ``"step"`` (x0.1 at each milestone) or ``"cosine"`` (down to 1% of ``lr``).
        warmup_frac: fraction of training with a linear warm-up.
        warmup_start: learning-rate factor at the first step of the warm-up.
        milestones: fractions of training where a step schedule multiplies by 0.1.
        triplet: ``"wrt"`` (weighted regularised) or ``"batch_hard"``.
        label_smoothing: epsilon of the ID cross-entropy.
        pool: default pooling, see :class:`~anivision.models.reid_head.ReidModel`.
        paper_backbone: the backbone the published recipe used (documentation only: the CLI
            default stays a CPU-friendly one).
    """

    name: str
    lr: float
    weight_decay: float
    momentum: float
    schedule: str
    warmup_frac: float
    warmup_start: float
    milestones: tuple[float, ...]
    triplet: str
    label_smoothing: float
    pool: str
    paper_backbone: str


PRESETS: dict[str, RetrievalPreset] = {
    # AGW as in LSASRD: warm-up 1e-4 -> 1e-2 over the first 10% of epochs, x0.1 at 40% and 80%,
    # label-smoothing CE + weighted regularised triplet, GeM pooling.
    "agw": RetrievalPreset("agw", 1e-2, 5e-4, 0.9, "step", 0.1, 0.01, (0.4, 0.8), "wrt", 0.1, "auto", "resnet50"),
    # TransReID: SGD, short warm-up then cosine, ID + batch-hard triplet, the ViT's class token.
    "transreid": RetrievalPreset(
        "transreid", 8e-3, 1e-4, 0.9, "cosine", 0.05, 0.01, (), "batch_hard", 0.0, "backbone", "vit_small_patch16_224"
    ),
}


def get_preset(name: str) -> RetrievalPreset:
    """The preset called ``name``; AnivisionError lists the known ones otherwise."""
    if name not in PRESETS:
        raise AnivisionError(f"unknown preset '{name}': use one of {', '.join(PRESETS)}")
    return PRESETS[name]


def lr_factor(preset: RetrievalPreset, progress: float) -> float:
    """Learning-rate multiplier at ``progress`` in [0, 1) of training (per iteration, stateless).

    Being a pure function of progress, a resumed run needs no scheduler state.
    """
    if preset.warmup_frac > 0 and progress < preset.warmup_frac:
        return preset.warmup_start + (1.0 - preset.warmup_start) * progress / preset.warmup_frac
    if preset.schedule == "step":
        return 0.1 ** sum(progress >= m for m in preset.milestones)
    if preset.schedule == "cosine":
        u = (progress - preset.warmup_frac) / max(1.0 - preset.warmup_frac, 1e-8)
        return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(max(u, 0.0), 1.0)))
    raise AnivisionError(f"unknown schedule '{preset.schedule}'")


@dataclass
class RetrievalConfig:
    """Everything a retrieval training run depends on (saved as ``config.json``).

    Attributes:
        backbone: timm model name.
        weights: ``none``, ``imagenet``, ``efficientnet_lite0_imagenet`` or a weights file.
        preset: ``agw`` or ``transreid``.
        img_size: input side in pixels.
        epochs: training epochs per fold.
        p: works per PK batch (clamped to the number of training works).
        k: images per work in a PK batch.
        batches_per_epoch: PK batches per epoch; None: about one pass over the training images.
        lr: peak learning rate; None: the preset's.
        pool: ``auto``, ``gem`` or ``backbone``; None: the preset's.
        id_weight: weight of the ID (cross-entropy) loss.
        triplet_weight: weight of the triplet loss.
        triplet_margin: margin of the batch-hard triplet (the weighted one has none).
        triplet_normalize: compute the triplet loss on L2-normalised features. The papers use raw
            features; with SGD at lr 1e-2 and a short schedule, raw-feature triplets (initial loss
            ~10) wreck pretrained features before the ID loss gets going (measured on synthetic
            styles: training-set ID accuracy 0.21 vs 0.54 after 80 steps), so True is the default
            and ``--triplet-features raw`` restores the papers' choice for long GPU runs.
        folds: number of folds by work.
        query_ratio: fraction of each test work's roles on the query side.
        seed: fold, role-split, sampler and initialisation seed.
        metric: retrieval distance, ``cosine`` or ``euclidean``.
        amp: mixed precision on CUDA (ignored on CPU).
        num_workers: DataLoader workers for training.
        eval_batch_size: images per forward pass when embedding.
    """

    backbone: str = DEFAULT_BACKBONE
    weights: str = DEFAULT_WEIGHTS
    preset: str = "agw"
    img_size: int = 128
    epochs: int = 20
    p: int = 16
    k: int = 4
    batches_per_epoch: int | None = None
    lr: float | None = None
    pool: str | None = None
    id_weight: float = 1.0
    triplet_weight: float = 1.0
    triplet_margin: float = 0.3
    triplet_normalize: bool = True
    folds: int = DEFAULT_FOLDS
    query_ratio: float = DEFAULT_QUERY_RATIO
    seed: int = 0
    metric: str = "cosine"
    amp: bool = True
    num_workers: int = 0
    eval_batch_size: int = 64

    def validate(self) -> None:
        """Raise AnivisionError for values that cannot work."""
        get_preset(self.preset)
        if self.epochs < 1:
            raise AnivisionError(f"--epochs must be >= 1 (got {self.epochs})")
        if self.img_size < 16:
            raise AnivisionError(f"--img-size must be >= 16 (got {self.img_size})")
        if self.p < 2 or self.k < 2:
            raise AnivisionError(f"PK batches need P >= 2 works and K >= 2 images (got P={self.p}, K={self.k})")
        if self.metric not in ("cosine", "euclidean"):
            raise AnivisionError(f"--metric must be cosine or euclidean (got {self.metric})")
        if self.pool not in (None, "auto", "gem", "backbone"):
            raise AnivisionError(f"--pool must be auto, gem or backbone (got {self.pool})")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RetrievalConfig":
        """Inverse of ``asdict`` (unknown keys ignored, so older runs still load)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


#: Settings that may differ when a run is resumed (they do not change results).
_RUNTIME_FIELDS = ("num_workers", "eval_batch_size", "amp")


def reid_augment() -> AugmentConfig:
    """Re-ID augmentation (LSASRD): flip, pad + random crop, random erasing; nothing else.

    Images are cached at ``img_size / crop_pct``; a centre crop then a random translation with
    zero fill is a pad-and-crop (a shift of up to ~6% of the side, like 10 px padding at 256 px).
    Colour jitter and rotation are off: colour and line style are what identifies a work.
    """
    return AugmentConfig(
        crop_scale=None, hflip=0.5, vflip=0.0, rotation=0.0, translate=0.06, zoom=0.0,
        color_jitter=(0.0, 0.0, 0.0, 0.0), random_erasing=0.5,
    )


def make_backbone(name: str, weights: str, img_size: int) -> nn.Module:
    """:func:`create_backbone` built for ``img_size`` (matters for fixed-size models such as ViTs)."""
    return create_backbone(name, weights, img_size=img_size)


# ============================================================================ training


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on weight matrices and kernels only: decaying norms, biases and GeM's p hurts."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def train_one_epoch(
    model: ReidModel,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    id_loss: nn.Module,
    triplet_loss: nn.Module,
    cfg: RetrievalConfig,
    preset: RetrievalPreset,
    epoch: int,
    device: torch.device,
    scaler: torch.amp.GradScaler | None,
    progress: bool = True,
) -> dict[str, float]:
    """One pass over ``loader``'s PK batches; sets the learning rate every iteration.

    Returns:
        ``{"epoch", "train_loss", "id_loss", "triplet_loss", "train_acc", "lr", "seconds"}``
        (means over the epoch; ``epoch`` 1-based for plots).
    """
    model.train()
    base_lr = cfg.lr if cfg.lr is not None else preset.lr
    n_iter = len(loader)
    use_amp = scaler is not None
    sums = {"loss": 0.0, "id": 0.0, "tri": 0.0, "correct": 0.0, "n": 0.0}
    t0 = time.perf_counter()
    lr = base_lr
    for it, (x, y) in enumerate(tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False)):
        lr = base_lr * lr_factor(preset, (epoch + it / n_iter) / cfg.epochs)
        for g in optimizer.param_groups:
            g["lr"] = lr
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
            out = model(x)
        # Losses in float32: softmax weights and distances lose too much in float16.
        l_id = id_loss(out.logits.float(), y)
        l_tri = triplet_loss(out.feat.float(), y)
        loss = cfg.id_weight * l_id + cfg.triplet_weight * l_tri
        if not torch.isfinite(loss):
            raise AnivisionError(f"training diverged at epoch {epoch + 1} (loss {loss.item()}); lower --lr")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        b = float(len(y))
        sums["loss"] += loss.item() * b
        sums["id"] += l_id.item() * b
        sums["tri"] += l_tri.item() * b
        sums["correct"] += (out.logits.argmax(dim=1) == y).sum().item()
        sums["n"] += b
    n = max(sums["n"], 1.0)
    return {
        "epoch": epoch + 1,
        "train_loss": sums["loss"] / n,
        "id_loss": sums["id"] / n,
        "triplet_loss": sums["tri"] / n,
        "train_acc": sums["correct"] / n,
        "lr": lr,
        "seconds": time.perf_counter() - t0,
    }


def train_fold(
    data: ReidImages,
    decoded: DecodedImages,
    fold: Fold,
    cfg: RetrievalConfig,
    dcfg: DataConfig,
    fold_dir: Path,
    device: torch.device | None = None,
    progress: bool = True,
) -> ReidModel:
    """Train one fold's model on its training works; resumes from ``fold_dir/checkpoint``.

    Args:
        data: all images.
        decoded: ``data`` decoded at :func:`cache_size` of ``dcfg`` (one cache for all folds).
        fold: which works train.
        cfg: run configuration.
        dcfg: input size and normalisation.
        fold_dir: where the checkpoint, ``model.safetensors``, ``model.json`` and ``history.json`` go.
        device: default CUDA if available.
        progress: progress bars.

    Returns:
        The trained model (eval mode), also saved as ``fold_dir/model.safetensors``.
    """
    preset = get_preset(cfg.preset)
    device = pick_device(str(device) if device else None)
    train_works = fold.train_works
    if len(train_works) < 2:
        raise AnivisionError(f"fold {fold.index}: {len(train_works)} training work(s); the triplet loss needs 2 or more")
    labels = data.work_ids(train_works)
    role_lut = {key: i for i, key in enumerate(sorted(set(data.role_keys())))}
    role_ids = np.array([role_lut[key] for key in data.role_keys()], dtype=np.int64)
    ds = CachedImageDataset(decoded, fold.train_idx, labels, train_transform(dcfg, reid_augment()))
    if len(ds) == 0:
        raise AnivisionError(f"fold {fold.index}: no readable training image")
    n_classes_present = len(np.unique(ds.targets))
    p = min(cfg.p, n_classes_present)
    if p < cfg.p:
        log.info("fold %d: P lowered from %d to %d (training works with readable images)", fold.index, cfg.p, p)
    sampler = PKSampler(
        ds.targets, p, cfg.k, groups=role_ids[ds.indices], batches_per_epoch=cfg.batches_per_epoch,
        seed=cfg.seed * 1000 + fold.index,
    )
    loader = DataLoader(ds, batch_sampler=sampler, num_workers=cfg.num_workers, pin_memory=device.type == "cuda")

    torch.manual_seed(cfg.seed * 1000 + fold.index)  # classifier init, erasing: reproducible per fold
    backbone = make_backbone(cfg.backbone, cfg.weights, cfg.img_size)
    model = ReidModel(backbone, len(train_works), pool=cfg.pool or preset.pool, img_size=cfg.img_size).to(device)
    optimizer = torch.optim.SGD(_param_groups(model, preset.weight_decay), lr=cfg.lr or preset.lr, momentum=preset.momentum)
    id_loss = nn.CrossEntropyLoss(label_smoothing=preset.label_smoothing)
    triplet_loss: nn.Module = (
        WeightedRegularizedTriplet(cfg.triplet_normalize)
        if preset.triplet == "wrt"
        else BatchHardTriplet(cfg.triplet_margin, cfg.triplet_normalize)
    )
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if use_amp else None

    ckpt = fold_dir / "checkpoint"
    state = load_checkpoint(ckpt, model, optimizer)
    start, history = (int(state["epoch"]) + 1, list(state["history"])) if state else (0, [])
    if state:
        log.info("fold %d: resuming after epoch %d", fold.index, start)
    for epoch in range(start, cfg.epochs):
        sampler.set_epoch(epoch)
        stats = train_one_epoch(model, loader, optimizer, id_loss, triplet_loss, cfg, preset, epoch, device, scaler, progress)
        history.append(stats)
        log.info(
            "fold %d epoch %d/%d: loss %.4f (id %.4f, triplet %.4f), id acc %.3f, lr %.2e, %.1fs",
            fold.index, epoch + 1, cfg.epochs, stats["train_loss"], stats["id_loss"], stats["triplet_loss"],
            stats["train_acc"], stats["lr"], stats["seconds"],
        )
        save_checkpoint(ckpt, model, optimizer, {"epoch": epoch, "history": history})
    model.eval()
    save_weights(model, fold_dir / "model.safetensors")
    atomic_write_json(fold_dir / "history.json", history)
    atomic_write_json(
        fold_dir / "model.json",
        {
            "backbone": cfg.backbone,
            "img_size": cfg.img_size,
            "num_classes": len(train_works),
            "pool": model.pool_kind,
            "train_works": train_works,
            "data_config": asdict(dcfg),
        },
    )
    return model


def load_fold_model(fold_dir: str | Path, device: torch.device | None = None) -> tuple[ReidModel, DataConfig]:
    """The trained model of one fold and its input config (``model.json`` + ``model.safetensors``).

    Raises:
        AnivisionError: the fold has no finished model.
    """
    fold_dir = Path(fold_dir)
    meta_path, weights = fold_dir / "model.json", fold_dir / "model.safetensors"
    if not meta_path.exists() or not weights.exists():
        raise AnivisionError(f"{fold_dir}: no trained model (model.json + model.safetensors); train this fold first")
    meta = json.loads(meta_path.read_text())
    # Random init then the saved weights: no need for the original pretrained weights file.
    backbone = make_backbone(meta["backbone"], "none", int(meta["img_size"]))
    model = ReidModel(backbone, int(meta["num_classes"]), pool=meta["pool"], img_size=int(meta["img_size"]))
    load_weights(model, weights)
    dc = meta["data_config"]
    dcfg = DataConfig(int(dc["img_size"]), tuple(dc["mean"]), tuple(dc["std"]), float(dc["crop_pct"]))
    return model.to(pick_device(str(device) if device else None)).eval(), dcfg


# ============================================================================ evaluation


def fold_metrics(
    features: np.ndarray,
    valid: np.ndarray,
    data: ReidImages,
    fold: Fold,
    metric: str = "cosine",
    n_examples: int = 6,
    top_k: int = 5,
) -> dict[str, Any]:
    """Cross-role retrieval metrics of one fold from the features of its query and gallery images.

    Args:
        features: (n_query + n_gallery, D) features, queries first (``fold.query_idx`` order),
            then the gallery (``fold.gallery_idx`` order).
        valid: (n_query + n_gallery,) bool; unreadable images are left out on both sides.
        data: all images (for works, roles, paths).
        fold: the fold.
        metric: ``cosine`` or ``euclidean``.
        n_examples: queries kept, with their top-``top_k`` gallery items, for the report grid.
        top_k: gallery items per example query.

    Returns:
        JSON-able dict: the :func:`retrieval_metrics` scalars and ``cmc`` (list), counts,
        ``per_work`` (AP/INP averaged over each work's queries) and ``examples``.
    """
    nq = len(fold.query_idx)
    q_idx = fold.query_idx[valid[:nq]]
    g_idx = fold.gallery_idx[valid[nq:]]
    q_feat, g_feat = features[:nq][valid[:nq]], features[nq:][valid[nq:]]
    works = np.asarray(data.works, dtype=object)
    q_works, g_works = works[q_idx], works[g_idx]
    dist = pairwise_distances(q_feat, g_feat, metric)
    res = retrieval_metrics(dist, q_works.astype(str), g_works.astype(str), max_rank=MAX_RANK)

    per_work: dict[str, dict[str, float | int]] = {}
    for w in sorted(set(q_works)):
        m = q_works == w
        per_work[w] = {
            "AP": float(np.nanmean(res["ap"][m])),
            "INP": float(np.nanmean(res["inp"][m])),
            "n_query": int(m.sum()),
            "n_gallery": int((g_works == w).sum()),
        }

    # Example queries for the report: one per work in turn (seeded), so the grid shows several works.
    rng = np.random.default_rng(fold.index)
    examples = []
    by_work = {w: rng.permutation(np.flatnonzero(q_works == w)) for w in sorted(set(q_works))}
    for i in range(n_examples):
        ws = list(by_work)
        if not ws:
            break
        w = ws[i % len(ws)]
        if i // len(ws) >= len(by_work[w]):
            continue
        qi = int(by_work[w][i // len(ws)])
        order = np.argsort(dist[qi], kind="stable")[:top_k]
        examples.append(
            {
                "query": data.paths[q_idx[qi]],
                "work": str(q_works[qi]),
                "role": data.roles[q_idx[qi]],
                "top": [
                    {
                        "path": data.paths[g_idx[j]],
                        "work": str(g_works[j]),
                        "role": data.roles[g_idx[j]],
                        "dist": float(dist[qi, j]),
                        "correct": bool(g_works[j] == q_works[qi]),
                    }
                    for j in order
                ],
            }
        )
    out = {k: res[k] for k in ("mAP", "mINP", "rank1", "rank5", "rank10", "n_valid_queries", "n_excluded_queries")}
    out.update(
        fold=fold.index,
        cmc=res["cmc"].tolist(),
        test_works=fold.test_works,
        excluded_works=fold.excluded_works,
        n_query=int(len(q_idx)),
        n_gallery=int(len(g_idx)),
        n_unreadable=int((~valid).sum()),
        n_query_roles=sum(len(r) for r in fold.query_roles.values()),
        n_gallery_roles=sum(len(r) for r in fold.gallery_roles.values()),
        per_work=per_work,
        examples=examples,
    )
    return out


def _fold_paths(data: ReidImages, fold: Fold) -> list[str]:
    return [data.paths[i] for i in fold.query_idx] + [data.paths[i] for i in fold.gallery_idx]


def evaluate_fold_model(
    model: ReidModel,
    dcfg: DataConfig,
    data: ReidImages,
    fold: Fold,
    metric: str = "cosine",
    cache_dir: str | Path | None = None,
    batch_size: int = 64,
    progress: bool = True,
) -> dict[str, Any]:
    """Embed a fold's query and gallery images with a trained model (BNNeck features) and score them."""
    emb = embed_paths(EmbeddingModel(model), _fold_paths(data, fold), dcfg, batch_size=batch_size, cache_dir=cache_dir, progress=progress)
    return fold_metrics(emb.features, emb.valid, data, fold, metric)


def summarize_folds(fold_results: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample std (ddof=1; 0 for one fold) over folds of :data:`SUMMARY_KEYS`, and the mean CMC."""
    if not fold_results:
        raise AnivisionError("no finished fold to summarise")
    out: dict[str, Any] = {"mean": {}, "std": {}}
    for k in SUMMARY_KEYS:
        v = np.array([r[k] for r in fold_results], dtype=np.float64)
        out["mean"][k] = float(v.mean())
        out["std"][k] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    out["cmc_mean"] = np.mean([np.asarray(r["cmc"]) for r in fold_results], axis=0).tolist()
    out["n_folds"] = len(fold_results)
    out["excluded_works"] = sorted(w for r in fold_results for w in r["excluded_works"])
    return out


def data_summary(data: ReidImages, source: str | Path) -> dict[str, Any]:
    """Counts for ``data.json`` and the report: totals, per work, per role."""
    return {
        "source": str(source),
        "images": len(data),
        "works": len(data.work_names),
        "roles": len(set(data.role_keys())),
        "ignored_files": len(data.ignored),
        "per_work": data.work_counts(),
        "per_role": data.role_counts(),
    }


# ============================================================================ runs


def _model_info(cfg: RetrievalConfig) -> dict[str, Any]:
    return {k: getattr(cfg, k) for k in ("backbone", "weights", "preset", "img_size", "epochs", "p", "k", "metric")}


def _run_summary(
    kind: str,
    model: dict[str, Any],
    folds: int,
    query_ratio: float,
    seed: int,
    data: ReidImages,
    data_source: str | Path,
    command: str | None,
    results: list[dict[str, Any]],
) -> dict[str, Any]:
    """The ``metrics.json`` of a run: what was evaluated, on what, per fold and mean +/- std."""
    return {
        "kind": kind,
        "model": model,
        "protocol": {"folds": folds, "query_ratio": query_ratio, "seed": seed},
        "data": {k: v for k, v in data_summary(data, data_source).items() if not k.startswith("per_")},
        "command": command,
        "folds": results,
        **summarize_folds(results),
    }


def _check_same(path: Path, new: Any, what: str, hint: str) -> None:
    """Write ``new`` as JSON to ``path``, or check it equals what is already there."""
    if path.exists():
        old = json.loads(path.read_text())
        if old != json.loads(json.dumps(new, default=list)):
            if isinstance(old, dict) and isinstance(new, dict):
                diff = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
                what = f"{what} ({', '.join(diff[:6])})"
            raise AnivisionError(f"{path}: {what} differs from this run's; {hint}")
    else:
        atomic_write_json(path, new)


def train_run(
    data: ReidImages,
    cfg: RetrievalConfig,
    run_dir: str | Path,
    data_source: str | Path = "",
    only_fold: int | None = None,
    cache_dir: str | Path | None = None,
    device: torch.device | None = None,
    progress: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """Train and evaluate every fold (or one), resumably, then write ``metrics.json`` and ``report.md``.

    A fold whose ``metrics.json`` exists is reused; one with ``model.safetensors`` is only
    evaluated; one with a checkpoint continues from its last finished epoch.

    Args:
        data: the images.
        cfg: the configuration (must match ``config.json`` when ``run_dir`` already holds a run).
        run_dir: run folder.
        data_source: where the data came from (recorded).
        only_fold: train just this fold (0-based).
        cache_dir: decoded-image and feature cache; None: no disk cache.
        device: default CUDA if available.
        progress: progress bars.
        command: the command line, recorded in the report.

    Returns:
        The run summary (also ``run_dir/metrics.json``).
    """
    cfg.validate()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    resumable = {k: v for k, v in asdict(cfg).items() if k not in _RUNTIME_FIELDS}
    _check_same(run_dir / "config.json", resumable, "the configuration", "use a new --out folder or the same settings")
    folds = make_folds(data, cfg.folds, cfg.query_ratio, cfg.seed)
    if only_fold is not None and not 0 <= only_fold < len(folds):
        raise AnivisionError(f"--fold {only_fold} is out of range: folds are 0..{len(folds) - 1}")
    _check_same(run_dir / "folds.json", [f.describe() for f in folds], "the fold definition", "the data changed since this run started")
    atomic_write_json(run_dir / "data.json", data_summary(data, data_source))

    device = pick_device(str(device) if device else None)
    dcfg: DataConfig | None = None
    decoded: DecodedImages | None = None
    results = []
    for fold in folds:
        if only_fold is not None and fold.index != only_fold:
            fdone = run_dir / f"fold{fold.index}" / "metrics.json"
            if fdone.exists():
                results.append(json.loads(fdone.read_text()))
            continue
        fold_dir = run_dir / f"fold{fold.index}"
        done = fold_dir / "metrics.json"
        if done.exists():
            log.info("fold %d: reusing %s", fold.index, done)
            results.append(json.loads(done.read_text()))
            continue
        if (fold_dir / "model.safetensors").exists() and (fold_dir / "model.json").exists():
            model, fdcfg = load_fold_model(fold_dir, device)
        else:
            if decoded is None:
                # Decoded once for all folds: every fold trains on a different subset of the same images.
                dcfg = data_config(make_backbone(cfg.backbone, "none", cfg.img_size), cfg.img_size)
                decoded = decode_images(data.paths, cache_size(dcfg), cache_dir=cache_dir, progress=progress)
            assert dcfg is not None
            model = train_fold(data, decoded, fold, cfg, dcfg, fold_dir, device, progress)
            fdcfg = dcfg
        res = evaluate_fold_model(model, fdcfg, data, fold, cfg.metric, cache_dir, cfg.eval_batch_size, progress)
        atomic_write_json(done, res)
        log.info("fold %d: mAP %.4f, mINP %.4f, rank-1 %.4f", fold.index, res["mAP"], res["mINP"], res["rank1"])
        results.append(res)
    summary = _run_summary("trained", _model_info(cfg), cfg.folds, cfg.query_ratio, cfg.seed, data, data_source, command, results)
    atomic_write_json(run_dir / "metrics.json", summary)
    write_report(run_dir, summary)
    return summary


def load_run_config(run_dir: str | Path) -> RetrievalConfig:
    """The :class:`RetrievalConfig` saved in ``run_dir/config.json``."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise AnivisionError(f"{run_dir}: not a retrieval run folder (no config.json)")
    return RetrievalConfig.from_dict(json.loads(path.read_text()))


def evaluate_run(
    run_dir: str | Path,
    data: ReidImages,
    out_dir: str | Path | None = None,
    data_source: str | Path = "",
    cache_dir: str | Path | None = None,
    device: torch.device | None = None,
    progress: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """Re-evaluate every trained fold of a run on its own folds; ``metrics.json`` + ``report.md`` in ``out_dir``.

    Raises:
        AnivisionError: not a run folder, the data no longer gives the run's folds, or no fold
            has a trained model.
    """
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    out_dir = Path(out_dir) if out_dir else run_dir
    folds = make_folds(data, cfg.folds, cfg.query_ratio, cfg.seed)
    saved = run_dir / "folds.json"
    if saved.exists() and json.loads(saved.read_text()) != json.loads(json.dumps([f.describe() for f in folds])):
        raise AnivisionError(f"{saved}: the data gives different folds than the run was trained on (changed or different --data)")
    results = []
    for fold in folds:
        fold_dir = run_dir / f"fold{fold.index}"
        if not (fold_dir / "model.safetensors").exists():
            log.warning("fold %d: no trained model in %s; skipped", fold.index, fold_dir)
            continue
        model, dcfg = load_fold_model(fold_dir, device)
        res = evaluate_fold_model(model, dcfg, data, fold, cfg.metric, cache_dir, cfg.eval_batch_size, progress)
        atomic_write_json(out_dir / f"fold{fold.index}" / "metrics.json", res)
        results.append(res)
    if not results:
        raise AnivisionError(f"{run_dir}: no fold has a trained model (run 'anivision retrieval train' first)")
    summary = _run_summary("trained", _model_info(cfg), cfg.folds, cfg.query_ratio, cfg.seed, data, data_source, command, results)
    atomic_write_json(out_dir / "metrics.json", summary)
    write_report(out_dir, summary)
    return summary


def evaluate_baseline(
    data: ReidImages,
    backbone: str,
    weights: str,
    out_dir: str | Path,
    img_size: int = 128,
    folds: int = DEFAULT_FOLDS,
    query_ratio: float = DEFAULT_QUERY_RATIO,
    seed: int = 0,
    metric: str = "cosine",
    data_source: str | Path = "",
    cache_dir: str | Path | None = None,
    batch_size: int = 64,
    device: torch.device | None = None,
    progress: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """The untrained baseline: the backbone's pooled features, scored on the same folds as training.

    All images are embedded once (features do not depend on the fold), then each fold is scored
    on its query and gallery rows.

    Returns:
        The summary (also ``out_dir/metrics.json``; ``report.md`` beside it).
    """
    fold_list = make_folds(data, folds, query_ratio, seed)
    model = make_backbone(backbone, weights, img_size).to(pick_device(str(device) if device else None)).eval()
    dcfg = data_config(model, img_size)
    emb = embed_paths(model, data.paths, dcfg, batch_size=batch_size, cache_dir=cache_dir, progress=progress)
    results = []
    for fold in fold_list:
        rows = np.concatenate([fold.query_idx, fold.gallery_idx])
        results.append(fold_metrics(emb.features[rows], emb.valid[rows], data, fold, metric))
    info = {"backbone": backbone, "weights": weights, "img_size": img_size, "metric": metric}
    summary = _run_summary("untrained", info, folds, query_ratio, seed, data, data_source, command, results)
    out_dir = Path(out_dir)
    atomic_write_json(out_dir / "metrics.json", summary)
    write_report(out_dir, summary)
    return summary


# ============================================================================ search


@dataclass
class GalleryIndex:
    """Embedded gallery images.

    Attributes:
        paths: (N,) image paths (readable ones only).
        works: (N,) work of each image (``"-"`` when the folder does not say).
        roles: (N,) role of each image.
        features: (N, D) float32 retrieval features.
        skipped: gallery files that could not be read.
    """

    paths: list[str]
    works: list[str]
    roles: list[str]
    features: np.ndarray
    skipped: list[str]


def build_gallery_index(
    model: ReidModel,
    dcfg: DataConfig,
    gallery: ReidImages,
    index_dir: str | Path,
    batch_size: int = 64,
    progress: bool = True,
) -> GalleryIndex:
    """Embed ``gallery`` once and save the index as ``index_dir/gallery-<key>.npz``; reuse it when current.

    The key covers the model weights, the input config and the gallery files (paths, sizes,
    modification times), so a retrained model or a changed gallery builds a new index.
    """
    key = hashlib.sha1(
        json.dumps([model_fingerprint(model), asdict(dcfg), files_fingerprint(gallery.paths), gallery.works, gallery.roles]).encode()
    ).hexdigest()[:20]
    path = Path(index_dir) / f"gallery-{key}.npz"
    if path.exists():
        with np.load(path) as z:
            log.info("reusing gallery index %s", path)
            return GalleryIndex(z["paths"].tolist(), z["works"].tolist(), z["roles"].tolist(), z["features"], z["skipped"].tolist())
    emb = embed_paths(EmbeddingModel(model), gallery.paths, dcfg, batch_size=batch_size, cache_dir=None, progress=progress)
    v = emb.valid
    index = GalleryIndex(
        [p for p, ok in zip(gallery.paths, v) if ok],
        [w for w, ok in zip(gallery.works, v) if ok],
        [r for r, ok in zip(gallery.roles, v) if ok],
        emb.features[v],
        list(emb.skipped),
    )
    if not index.paths:
        raise AnivisionError(f"no readable gallery image ({len(emb.skipped)} unreadable)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(
        tmp, paths=np.array(index.paths), works=np.array(index.works), roles=np.array(index.roles),
        features=index.features, skipped=np.array(index.skipped, dtype=str),
    )
    tmp.replace(path)
    return index


def search(index: GalleryIndex, query_features: np.ndarray, top_k: int = 10, metric: str = "cosine") -> list[list[dict[str, Any]]]:
    """Top-``top_k`` gallery items for each query.

    Args:
        index: the gallery.
        query_features: (Q, D) features from the same model.
        top_k: results per query.
        metric: ``cosine`` or ``euclidean``.

    Returns:
        Per query, a list of ``{"path", "work", "role", "dist"}``, nearest first.
    """
    dist = pairwise_distances(query_features, index.features, metric)
    k = min(top_k, dist.shape[1])
    out = []
    for row in dist:
        order = np.argsort(row, kind="stable")[:k]
        out.append([{"path": index.paths[j], "work": index.works[j], "role": index.roles[j], "dist": float(row[j])} for j in order])
    return out


def pick_search_fold(run_dir: str | Path, fold: int | None = None) -> int:
    """``fold`` if it has a model, else the lowest-numbered fold with one."""
    run_dir = Path(run_dir)
    have = sorted(int(p.parent.name[4:]) for p in run_dir.glob("fold*/model.safetensors") if p.parent.name[4:].isdigit())
    if fold is not None:
        if fold not in have:
            raise AnivisionError(f"{run_dir}: fold {fold} has no trained model (trained folds: {have or 'none'})")
        return fold
    if not have:
        raise AnivisionError(f"{run_dir}: no trained fold model; run 'anivision retrieval train' first")
    return have[0]


# ============================================================================ report


def _pct(x: float) -> str:
    return f"{100.0 * x:.2f}"


def format_table(summary: dict[str, Any]) -> str:
    """Markdown table: one row per fold, then mean +/- std (percent, as LSASRD reports)."""
    head = "| fold | test works | query imgs | gallery imgs | mINP | mAP | rank-1 | rank-5 | rank-10 |"
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for r in summary["folds"]:
        excl = f" ({len(r['excluded_works'])} excluded)" if r["excluded_works"] else ""
        lines.append(
            f"| {r['fold']} | {len(r['test_works'])}{excl} | {r['n_query']} | {r['n_gallery']} | "
            + " | ".join(_pct(r[k]) for k in SUMMARY_KEYS) + " |"
        )
    m, s = summary["mean"], summary["std"]
    lines.append("| **mean ± std** | | | | " + " | ".join(f"**{_pct(m[k])} ± {_pct(s[k])}**" for k in SUMMARY_KEYS) + " |")
    return "\n".join(lines)


def write_report(out_dir: str | Path, summary: dict[str, Any]) -> Path:
    """``out_dir/report.md`` with the fold table, ``cmc.png``, ``examples.png`` and per-work AP."""
    from anivision.reports.plots import plot_cmc, plot_image_grid, plot_training_curves

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, proto, data = summary["model"], summary["protocol"], summary["data"]
    kind = summary["kind"]
    lines = [
        f"# Style retrieval, cross-role protocol: {model['backbone']} ({kind})",
        "",
        f"- model: `{model['backbone']}`, weights `{model['weights']}`, {model['img_size']} px, distance {model['metric']}"
        + (f", preset {model['preset']}, {model['epochs']} epochs, PK {model['p']}×{model['k']}" if kind == "trained" else ", no re-ID training"),
        f"- data: `{data['source']}`: {data['images']} images, {data['works']} works, {data['roles']} roles",
        f"- protocol: {proto['folds']}-fold by work (seed {proto['seed']}), {100 * proto['query_ratio']:.0f}% of each test work's "
        f"roles as queries, the rest as gallery; no role on both sides; {summary['n_folds']} fold(s) reported",
    ]
    if summary["excluded_works"]:
        lines.append(
            f"- {len(summary['excluded_works'])} test work(s) with a single role could not be split and were excluded: "
            + ", ".join(summary["excluded_works"][:20])
        )
    if summary.get("command"):
        lines += ["", "```", summary["command"], "```"]
    lines += ["", "## Results (%)", "", format_table(summary), ""]

    curves = {f"fold {r['fold']}": np.asarray(r["cmc"]) for r in summary["folds"]}
    if len(curves) > 1:
        curves["mean"] = np.asarray(summary["cmc_mean"])
    plot_cmc(curves, out_dir / "cmc.png", title=f"CMC, {model['backbone']} ({kind})")
    lines += ["![CMC curve](cmc.png)", ""]

    ex_fold = next((r for r in summary["folds"] if r.get("examples")), None)
    if ex_fold is not None:
        rows = []
        for ex in ex_fold["examples"]:
            row: list[tuple[Any, str, bool | None]] = [(ex["query"], f"query: {ex['work']}", None)]
            row += [(t["path"], f"{i + 1}. {t['work']} ({t['dist']:.3f})", t["correct"]) for i, t in enumerate(ex["top"])]
            rows.append(row)
        try:
            plot_image_grid(rows, out_dir / "examples.png", title=f"fold {ex_fold['fold']}: queries and their top-{len(ex_fold['examples'][0]['top'])}")
            lines += [
                "## Example queries",
                "",
                f"Fold {ex_fold['fold']}: each row is a query (first image) and its nearest gallery images; "
                "green = same work (correct), red = another work.",
                "",
                "![examples](examples.png)",
                "",
            ]
        except AnivisionError as exc:  # an image moved since evaluation: the report still gets written
            log.warning("example grid skipped: %s", exc)

    hist_path = out_dir / "fold0" / "history.json"
    if kind == "trained" and hist_path.exists():
        plot_training_curves(json.loads(hist_path.read_text()), out_dir / "training_fold0.png")
        lines += ["## Training (fold 0)", "", "![training curves](training_fold0.png)", ""]

    lines += [
        "## Per-work AP (%)",
        "",
        "Every work is a test work in exactly one fold; AP and INP are averaged over its query images.",
        "",
        "| work | fold | query imgs | gallery imgs | AP | INP |",
        "|---|---|---|---|---|---|",
    ]
    rows_w = [(w, r["fold"], v) for r in summary["folds"] for w, v in r["per_work"].items()]
    for w, f, v in sorted(rows_w, key=lambda t: -t[2]["AP"]):
        lines.append(f"| {w} | {f} | {v['n_query']} | {v['n_gallery']} | {_pct(v['AP'])} | {_pct(v['INP'])} |")
    path = out_dir / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
