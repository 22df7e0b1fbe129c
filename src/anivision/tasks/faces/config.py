"""The face-detector training run's typed configuration, saved as the run's ``config.json``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from anivision.config import RunConfig
from anivision.errors import AnivisionError
from anivision.models.backbone import DEFAULT_BACKBONE, DEFAULT_WEIGHTS


@dataclass
class FaceTrainConfig(RunConfig):
    """Everything that defines a detector training run.

    The backbone stays frozen: each image gives ``views`` augmented canvases whose backbone
    features are computed once (``RUN/views/``, removed when the run ends) and the neck and head
    train on them for ``epochs`` passes (AdamW, warmup + cosine).

    Attributes:
        boxes: folder with ``boxes.csv`` (and optionally ``images.csv`` and ``images/``).
        split: the ``images.csv`` split to train on (``all``: every image).
        img_size: long side of the input at inference; training scales faces around it.
        canvas: side of a training view.
        views: augmented views per image.
        threads: torch CPU threads (runtime only).
    """

    RUNTIME_KEYS: ClassVar[tuple[str, ...]] = ("out", "threads", "progress", "keep_views")
    DATA_KEYS: ClassVar[tuple[str, ...]] = ("boxes",)
    FILE_KEYS: ClassVar[tuple[str, ...]] = ("weights",)

    boxes: str = ""
    out: str = ""
    split: str = "train"
    backbone: str = DEFAULT_BACKBONE
    weights: str = DEFAULT_WEIGHTS
    width: int = 64
    img_size: int = 384
    canvas: int = 288
    views: int = 4
    epochs: int = 8
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    grey_p: float = 0.35
    mosaic_p: float = 0.2
    seed: int = 0
    threads: int = 0
    progress: bool = True
    keep_views: bool = False

    def validate(self) -> None:
        """Raise a one-line error naming the first flag out of range."""
        checks = [
            ("--img-size", self.img_size >= 64 and self.img_size % 32 == 0, "a multiple of 32, at least 64"),
            ("--canvas", self.canvas >= 64 and self.canvas % 32 == 0, "a multiple of 32, at least 64"),
            ("--views", self.views >= 1, "at least 1"),
            ("--epochs", self.epochs >= 1, "at least 1"),
            ("--batch-size", self.batch_size >= 1, "at least 1"),
            ("--width", self.width >= 8, "at least 8"),
            ("--lr", 0 < self.lr < 1, "between 0 and 1"),
            ("--grey-p", 0 <= self.grey_p <= 1, "between 0 and 1"),
            ("--mosaic-p", 0 <= self.mosaic_p <= 1, "between 0 and 1"),
        ]
        for flag, ok, what in checks:
            if not ok:
                raise AnivisionError(f"{flag} must be {what}, got {getattr(self, flag[2:].replace('-', '_'))}")
