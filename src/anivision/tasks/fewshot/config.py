"""The meta-training run's typed configuration, saved as the run's ``config.json``.

``data`` and a ``weights`` file are recorded absolute (:meth:`FewShotTrainConfig.with_absolute_paths`,
applied by ``train_fewshot``), so the run works from any working directory. The same-run rule
compares them as locations: ``data`` is the same place however spelt, or a saved place that
no longer exists (the data moved: rerun with ``--data NEW``; the run's ``classes.json`` must
still name classes of the new folder).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from anivision.config import RunConfig
from anivision.data.transforms import AugmentConfig
from anivision.errors import AnivisionError
from anivision.models.backbone import DEFAULT_BACKBONE, DEFAULT_WEIGHTS
from anivision.models.protonet import check_distance
from anivision.models.transfer import DEFAULT_PARTS, parse_parts


@dataclass
class FewShotTrainConfig(RunConfig):
    """Everything that defines a meta-training run.

    The embedding is the transfer embedding (:mod:`anivision.models.transfer`: pooled stages,
    head and colour histogram, centred on means fitted on the training images) compared by
    cosine; ``embedding="pooled"`` with ``distance="euclidean"`` and ``train_groups=0`` is the
    older recipe. Meta-training trains the top ``train_groups`` backbone groups only, so the
    lower stage that transfers best stays as it was. The optimisation follows AniWho's
    few-shot recipe (easy-few-shot-learning): SGD, momentum 0.9, weight decay 5e-4 (on every
    parameter, as easyfsl), lr 0.01 divided by 10 at 50% and 80% of the epochs; random resized
    crop, colour jitter 0.4, horizontal flip. AniWho ran 100 epochs of 100 episodes; the
    defaults here (2 x 50) fit a laptop CPU, and epoch 0 (no meta-training) is a candidate.
    """

    #: May change when a run folder is resumed or reused: they do not change results.
    RUNTIME_KEYS: ClassVar[tuple[str, ...]] = ("device", "workers", "cache_dir", "out")
    DATA_KEYS: ClassVar[tuple[str, ...]] = ("data", "val_data")
    FILE_KEYS: ClassVar[tuple[str, ...]] = ("weights",)
    #: Runs saved before the transfer embedding existed embedded with the pooled features.
    MISSING_MEANS: ClassVar[dict[str, object]] = {"embedding": "pooled", "train_groups": 0}

    data: str = ""
    out: str = ""
    backbone: str = DEFAULT_BACKBONE
    weights: str = DEFAULT_WEIGHTS
    img_size: int = 128
    crop_pct: float = 1.0  # face crops are already tight: no eval-time centre crop
    classes: str | None = None
    ratios: str | None = None
    seed: int = 0
    epochs: int = 2
    episodes_per_epoch: int = 50
    n_way: int = 5
    k_shot: int = 5
    n_query: int = 10
    val_episodes: int = 300
    val_max_per_class: int | None = None  # cap on validation images per class (embedded every epoch)
    val_data: str | None = None  # validation episodes on another source's characters (every class of it)
    embedding: str = "transfer"  # "transfer" (models/transfer.py) or "pooled" (the backbone's pooled features)
    parts: str = DEFAULT_PARTS  # the transfer embedding's parts
    fit_images: int = 1000  # training images the transfer embedding's means are fitted on
    train_groups: int = 2  # top backbone groups meta-training trains (timm's coarse groups; 0: all)
    distance: str = "cosine"
    cosine_scale: float = 10.0
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    milestones: tuple[float, float] = (0.5, 0.8)
    gamma: float = 0.1
    grad_clip: float | None = None  # max gradient norm; None: no clipping
    amp: bool = False  # float16 autocast on CUDA (changes the numerics; ignored on CPU)
    min_crop_scale: float = 0.08  # torchvision's RandomResizedCrop default, as easyfsl
    color_jitter: float = 0.4
    pretrain: str = "none"
    pretrain_epochs: int = 3
    pretrain_batch_size: int = 64
    skip_small_classes: bool = False
    workers: int = 0
    device: str | None = None
    cache_dir: str | None = None

    def validate(self) -> None:
        """Raise AnivisionError for values no run can use."""
        if not self.data:
            raise AnivisionError("fewshot train needs --data DIR")
        if not self.out:
            raise AnivisionError("fewshot train needs --out RUN_DIR")
        if not Path(self.data).exists():
            raise AnivisionError(f"{self.data}: no such dataset folder or manifest")
        if self.val_data and not Path(self.val_data).exists():
            raise AnivisionError(f"{self.val_data}: no such dataset folder or manifest (--val-data)")
        if self.epochs < 0:
            raise AnivisionError("--epochs must be 0 (no meta-training: the embedding as it starts) or more")
        if self.embedding not in ("transfer", "pooled"):
            raise AnivisionError(f"unknown --embedding '{self.embedding}' (choose transfer or pooled)")
        if self.embedding == "transfer":
            parse_parts(self.parts)
        if self.train_groups < 0:
            raise AnivisionError("--train-groups must be 0 (all) or more")
        if self.fit_images < 1:
            raise AnivisionError("--fit-images must be at least 1")
        for name in ("episodes_per_epoch", "img_size", "k_shot", "n_query", "val_episodes", "pretrain_batch_size"):
            if getattr(self, name) < 1:
                raise AnivisionError(f"--{name.replace('_', '-')} must be at least 1")
        if self.n_way < 2:
            raise AnivisionError("--n-way must be at least 2")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise AnivisionError(f"--lr must be a positive number, got {self.lr}")
        if self.val_max_per_class is not None and self.val_max_per_class < self.k_shot + self.n_query:
            raise AnivisionError(f"--val-max-per-class must be at least k-shot + n-query ({self.k_shot + self.n_query})")
        check_distance(self.distance)
        if self.grad_clip is not None and self.grad_clip < 0:
            raise AnivisionError("--grad-clip must be positive (0 or none: no clipping)")
        if self.pretrain not in ("none", "supervised"):
            raise AnivisionError(f"unknown --pretrain '{self.pretrain}' (choose none or supervised)")
        if self.pretrain == "supervised" and self.pretrain_epochs < 1:
            raise AnivisionError("--pretrain-epochs must be at least 1")

    def augment(self) -> AugmentConfig:
        """The episode-training augmentation: random resized crop, colour jitter, h-flip."""
        j = self.color_jitter
        return AugmentConfig(
            crop_scale=(self.min_crop_scale, 1.0), hflip=0.5, vflip=0.0, rotation=0.0, translate=0.0, zoom=0.0,
            color_jitter=(j, j, j, 0.0), random_erasing=0.0,
        )
