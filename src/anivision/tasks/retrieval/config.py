"""Retrieval presets (LSASRD's two baselines), the run's typed configuration and its LR schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from anivision.config import RunConfig
from anivision.data.reid import DEFAULT_FOLDS, DEFAULT_QUERY_RATIO
from anivision.engine.loop import LrFn
from anivision.engine.schedules import warmup_step_or_cosine
from anivision.errors import AnivisionError
from anivision.models.backbone import DEFAULT_BACKBONE, DEFAULT_WEIGHTS


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
    try:
        return warmup_step_or_cosine(progress, preset.schedule, preset.warmup_frac, preset.warmup_start, preset.milestones)
    except ValueError as exc:
        raise AnivisionError(str(exc)) from exc


def preset_lr_fn(preset: RetrievalPreset, base_lr: float, total_steps: int) -> LrFn:
    """The engine's ``lr_fn(global_step, group)``: ``base_lr * lr_factor(step / total_steps)``.

    Every parameter group gets the same rate. ``base_lr`` is passed in rather than read from the
    group, because optimizer states saved before the engine existed have no ``base_lr`` key (and
    loading an optimizer state replaces the groups' keys with the saved ones).
    """
    total = max(1, total_steps)
    return lambda step, group: base_lr * lr_factor(preset, step / total)


@dataclass
class RetrievalConfig(RunConfig):
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
        grad_clip: max total gradient norm; None: no clipping (the papers clip nothing).
        amp: mixed precision on CUDA (ignored on CPU).
        num_workers: DataLoader workers for training.
        eval_batch_size: images per forward pass when embedding.
    """

    #: May differ when a run is resumed (they do not change results). Runs saved before the
    #: engine existed wrote config.json without them; a missing key counts as its default.
    RUNTIME_KEYS: ClassVar[tuple[str, ...]] = ("num_workers", "eval_batch_size", "amp")

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
    grad_clip: float | None = None
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
            flag = "--p" if self.p < 2 else "--k"
            raise AnivisionError(f"{flag} {self.p if self.p < 2 else self.k}: PK batches need P >= 2 works (--p) and K >= 2 images per work (--k)")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise AnivisionError(f"--lr must be a positive number, got {self.lr}")
        if self.num_workers < 0:
            raise AnivisionError(f"--workers must be at least 0, got {self.num_workers}")
        if self.metric not in ("cosine", "euclidean"):
            raise AnivisionError(f"--metric must be cosine or euclidean (got {self.metric})")
        if self.pool not in (None, "auto", "gem", "backbone"):
            raise AnivisionError(f"--pool must be auto, gem or backbone (got {self.pool})")
        if self.grad_clip is not None and self.grad_clip < 0:
            raise AnivisionError(f"--grad-clip must be >= 0 (got {self.grad_clip})")

    @property
    def base_lr(self) -> float:
        """The peak learning rate: ``lr``, else the preset's."""
        return self.lr if self.lr is not None else get_preset(self.preset).lr


def load_run_config(run_dir: str | Path) -> RetrievalConfig:
    """The :class:`RetrievalConfig` saved in ``run_dir/config.json`` (with or without runtime keys).

    Raises:
        AnivisionError: no config.json, invalid JSON or a key this version does not know.
    """
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise AnivisionError(f"{run_dir}: not a retrieval run folder (no config.json)")
    return RetrievalConfig.load(path)
