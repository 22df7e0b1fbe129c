"""The classification run's typed configuration and the named recipes.

Only the CLI (and :func:`resolve_train_config`, which it calls) builds a :class:`TrainConfig`
from YAML and flags; library functions take the typed object. The resolved config is saved as
``config.json`` beside every run.

Paths: ``data``, ``split`` and a ``weights`` file are recorded absolute
(:meth:`TrainConfig.with_absolute_paths`, applied by :func:`resolve_train_config` and by
``train_classifier``), so a run works from any working directory. The same-run rule compares
them as locations (:meth:`TrainConfig.differences`): the same place however spelt, or, for
``data`` and ``split``, a saved place that no longer exists (the data moved; the run's own
``split.csv`` then proves by sha1 that the images are the same).
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping

from anivision.config import RunConfig, read_yaml_mapping
from anivision.files import absolute_path
from anivision.data.transforms import AugmentConfig
from anivision.errors import AnivisionError
from anivision.models.backbone import DEFAULT_BACKBONE, DEFAULT_WEIGHTS
from anivision.models.classifier import HEADS
from anivision.strategies import STRATEGIES

RECIPES = ("default", "openset", "fer", "aniwho")

#: The largest ``--img-size``: the decoded-image cache holds every image at about this size
#: (2048 px = 12 MiB per image, 12 GiB per thousand images), and no backbone is trained larger.
MAX_IMG_SIZE = 2048
#: Accepted values of the choice settings (the CLI's choices; checked again for YAML and code).
CHOICES: dict[str, tuple[str, ...]] = {
    "strategy": STRATEGIES, "recipe": RECIPES, "optimizer": ("adamw", "sgd"),
    "schedule": ("cosine", "plateau", "constant"), "monitor": ("val_acc", "val_loss"), "head": HEADS,
}

#: Training augmentation switched off: the train transform equals the eval transform.
NO_AUGMENT = AugmentConfig(crop_scale=None, hflip=0.0, vflip=0.0, rotation=0.0, translate=0.0, zoom=0.0,
                           color_jitter=(0.0, 0.0, 0.0, 0.0), random_erasing=0.0)

#: User options of ``anivision train`` that set a :class:`TrainConfig` field directly.
TRAIN_OPTION_KEYS: tuple[str, ...] = tuple(
    (
        "data split ratios backbone weights strategy recipe img_size epochs batch_size seed lr_head lr_backbone "
        "weight_decay optimizer schedule warmup_epochs patience monitor grad_clip dropout label_smoothing head margin "
        "partial_groups unfreeze_every progressive_groups workers device cache_dir out"
    ).split()
)


def train_option_defaults() -> dict[str, Any]:
    """Every train option unset: the field options, plus ``config`` (YAML path) and the switches
    ``no_feature_cache``, ``prefix_cache`` and ``amp``."""
    return {**{k: None for k in TRAIN_OPTION_KEYS}, "config": None, "no_feature_cache": False, "prefix_cache": False, "amp": False}


def resolve_train_config(options: Mapping[str, Any]) -> "TrainConfig":
    """Merge defaults < recipe (for the chosen strategy) < YAML file < options into a TrainConfig.

    Args:
        options: user options by name (see :func:`train_option_defaults`); ``None`` means not
            given. ``config`` is a YAML file of TrainConfig keys; ``no_feature_cache`` switches the
            linear probe's feature cache off; ``prefix_cache`` makes partial fine-tuning train on
            cached activations of the frozen prefix, which switches training augmentation off
            (other strategies ignore it). Other keys are ignored.

    Raises:
        AnivisionError: unreadable YAML, unknown keys, missing data/out, or bad values.
    """
    values: dict[str, Any] = {}
    if options.get("config"):
        values.update(read_yaml_mapping(options["config"]))
    for k in TRAIN_OPTION_KEYS:
        if options.get(k) is not None:
            values[k] = options[k]
    if options.get("no_feature_cache"):
        values["feature_cache"] = False
    if options.get("prefix_cache"):
        values["prefix_cache"] = True
    if options.get("amp"):
        values["amp"] = True
    if values.get("grad_clip") == 0:
        values["grad_clip"] = None
    strategy = values.get("strategy", TrainConfig.strategy)
    recipe = values.get("recipe", "default")
    base = TrainConfig().to_dict()
    base.update({k: (dataclasses.asdict(v) if k == "aug" else v) for k, v in recipe_values(recipe, strategy).items()})
    base.update(values)
    cfg = TrainConfig.from_dict(base, source=str(options.get("config") or "train options"))
    from_yaml = {k for k in values if options.get(k) is None} if options.get("config") else set()
    cfg.validate(from_yaml, str(options.get("config") or ""))
    if cfg.prefix_cache:
        if cfg.strategy == "partial":
            # Cached activations cannot be augmented: training images get the eval transform,
            # and the saved config says so.
            cfg.aug = NO_AUGMENT
        else:
            cfg.prefix_cache = False  # only partial fine-tuning has a prefix that stays frozen
    if not cfg.data and not cfg.split:
        raise AnivisionError("train needs --data DIR (or --split SPLIT.csv)")
    if not cfg.out:
        raise AnivisionError("train needs --out RUN_DIR")
    if cfg.data and not Path(cfg.data).exists():
        raise AnivisionError(f"{cfg.data}: no such dataset folder or manifest")
    return cfg.with_absolute_paths()


@dataclass
class TrainConfig(RunConfig):
    """Everything that defines a classification run.

    Head: ``linear``, or ``cosine`` (logits ``16 * cos(feature, class weight)``, trained with the
    CosFace loss at ``margin``; ``margin`` is unused with a linear head): features of one class
    gather around a direction, which helps open set (``enroll`` with the run, ``--reject-rate``).

    Learning rates: ``lr_head`` for the new linear layer, ``lr_backbone`` for the backbone
    (differential learning rates). ``schedule`` is ``cosine`` (linear warmup for
    ``warmup_epochs`` then cosine to ``min_lr``, per step), ``plateau`` (ReduceLROnPlateau on
    the monitored validation value) or ``constant``.
    """

    data: str = ""
    out: str = ""
    split: str | None = None
    ratios: str = "70/15/15"
    backbone: str = DEFAULT_BACKBONE
    weights: str = DEFAULT_WEIGHTS
    strategy: str = "full"
    recipe: str = "default"
    img_size: int = 128
    crop_pct: float = 1.0
    epochs: int = 10
    batch_size: int = 32
    seed: int = 42
    optimizer: str = "adamw"
    lr_head: float = 3e-3
    lr_backbone: float = 5e-4
    weight_decay: float = 0.02
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    min_lr: float = 1e-6
    plateau_factor: float = 0.2
    plateau_patience: int = 3
    grad_clip: float | None = 1.0
    patience: int = 5
    monitor: str = "val_acc"
    dropout: float = 0.2
    label_smoothing: float = 0.1
    head: str = "linear"
    margin: float = 0.25
    partial_groups: int = 1
    unfreeze_every: int = 2
    progressive_groups: int | None = None
    feature_cache: bool = True
    prefix_cache: bool = False
    aug: AugmentConfig = field(default_factory=lambda: TrainConfig.default_aug())
    workers: int = 0
    device: str | None = None
    cache_dir: str | None = None
    channels_last: bool = True
    amp: bool = False

    @staticmethod
    def default_aug() -> AugmentConfig:
        """The training augmentation of the defaults: crops of 80-100% of the area, flips, mild colour jitter."""
        return AugmentConfig(rotation=0.0, color_jitter=(0.1, 0.1, 0.1, 0.0), random_erasing=0.0)

    #: Keys that may differ when a run folder is resumed or reused: they do not change results
    #: (``out``: a run folder may be moved, or cells of separate grids merged into one folder).
    RUNTIME_KEYS: ClassVar[tuple[str, ...]] = ("device", "workers", "cache_dir", "out")
    DATA_KEYS: ClassVar[tuple[str, ...]] = ("data", "split")
    FILE_KEYS: ClassVar[tuple[str, ...]] = ("weights",)

    def validate(self, from_yaml: "set[str] | frozenset[str]" = frozenset(), source: str = "") -> None:
        """Refuse values no run can train with, before anything is written.

        Each error is one line naming the setting as the user wrote it: ``--dropout`` for a flag
        (or a config built in code), ``FILE: dropout`` for a key of the YAML file ``source``
        (the keys in ``from_yaml``).

        Raises:
            AnivisionError: a value of the wrong type or out of range.
        """
        def name(key: str) -> str:
            return f"{source}: {key}" if key in from_yaml and source else "--" + key.replace("_", "-")

        for key, problem in self._type_problems() or self._range_problems():
            raise AnivisionError(f"{name(key)} {problem}")

    def _type_problems(self) -> list[tuple[str, str]]:
        out = []
        for f in dataclasses.fields(self):
            v, kind = getattr(self, f.name), str(f.type).replace(" ", "")
            base, optional = kind.split("|")[0], kind.endswith("|None")
            if v is None and optional:
                continue
            ok = {"int": isinstance(v, int) and not isinstance(v, bool),
                  "float": isinstance(v, (int, float)) and not isinstance(v, bool),
                  "str": isinstance(v, str), "bool": isinstance(v, bool)}.get(base, True)
            if not ok:
                what = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false"}[base]
                out.append((f.name, f"must be {what}, got {v!r}"))
        return out

    def _range_problems(self) -> list[tuple[str, str]]:
        def finite(v: float) -> bool:
            return math.isfinite(v)

        checks: list[tuple[str, bool, str]] = [
            ("epochs", self.epochs >= 1, "must be at least 1"),
            ("batch_size", self.batch_size >= 1, "must be at least 1"),
            ("img_size", 16 <= self.img_size <= MAX_IMG_SIZE,
             f"must be between 16 and {MAX_IMG_SIZE} pixels (the decoded-image cache holds every image at this size)"),
            ("crop_pct", finite(self.crop_pct) and 0 < self.crop_pct <= 1, "must be in (0, 1]"),
            ("dropout", finite(self.dropout) and 0 <= self.dropout < 1, "must be in [0, 1)"),
            ("label_smoothing", finite(self.label_smoothing) and 0 <= self.label_smoothing < 1, "must be in [0, 1)"),
            ("margin", finite(self.margin) and 0 <= self.margin < 1, "must be in [0, 1)"),
            ("momentum", finite(self.momentum) and 0 <= self.momentum < 1, "must be in [0, 1)"),
            ("plateau_factor", finite(self.plateau_factor) and 0 < self.plateau_factor < 1, "must be in (0, 1)"),
            ("seed", self.seed >= 0, "must be 0 or more"),
            ("partial_groups", self.partial_groups >= 1, "must be at least 1"),
            ("unfreeze_every", self.unfreeze_every >= 1, "must be at least 1"),
            ("progressive_groups", self.progressive_groups is None or self.progressive_groups >= 1, "must be at least 1"),
            ("grad_clip", self.grad_clip is None or (finite(self.grad_clip) and self.grad_clip >= 0),
             "must be a finite number, 0 or more (0 for no clipping)"),
        ]
        for key in ("lr_head", "lr_backbone", "weight_decay", "warmup_epochs", "min_lr"):
            v = getattr(self, key)
            checks.append((key, finite(v) and v >= 0, "must be a finite number, 0 or more"))
        for key in ("patience", "plateau_patience", "workers"):
            checks.append((key, getattr(self, key) >= 0, "must be 0 or more"))
        for key, allowed in CHOICES.items():
            checks.append((key, getattr(self, key) in allowed, f"must be one of {', '.join(allowed)}"))
        return [(k, f"{msg}, got {getattr(self, k)!r}") for k, ok, msg in checks if not ok]

    def check_out_outside_data(self) -> None:
        """Refuse an ``out`` inside the class-per-folder ``data`` folder (checked when training)."""
        # A run folder inside a class-per-folder dataset would put its PNGs among the images
        # of a class the next time the folder is scanned. (A manifest lists its images.)
        if not self.data or not self.out or Path(self.data).suffix.lower() == ".csv":
            return
        root, out = (os.path.realpath(absolute_path(p)) for p in (self.data, self.out))
        if out == root or out.startswith(root.rstrip(os.sep) + os.sep):
            raise AnivisionError(
                f"--out {self.out} is inside the data folder {self.data}: its files would become training images "
                "of a class in later runs; choose an output folder outside the data"
            )

    def differences(self, old: Mapping[str, Any], source: str = "config.json") -> list[str]:
        """The same-run rule (:meth:`RunConfig.differences`: ``data``, ``split`` and a ``weights``
        file compared as locations; the run's ``split.csv`` checks moved images by sha1); besides,
        ``data`` may be added to a run trained from ``split`` alone, to say where moved images are."""
        if isinstance(old.get("aug"), dict):
            # Augmentation steps added later (greyscale, screentone) were off in runs saved before them.
            later = {f.name: f.default for f in dataclasses.fields(AugmentConfig) if f.name not in old["aug"]}
            old = {**old, "aug": {**later, **old["aug"]}}
        return [k for k in super().differences(old, source) if not (k == "data" and not old.get("data") and self.data and self.split)]

    @classmethod
    def _coerce(cls, values: dict[str, Any]) -> dict[str, Any]:
        # YAML 1.1 reads ``1e-4`` (no dot) as a string: a number-like string is a number where
        # the setting is one; anything else is left for :meth:`validate` to name.
        for f in dataclasses.fields(cls):
            v = values.get(f.name)
            if isinstance(v, str) and str(f.type).startswith("float"):
                try:
                    values[f.name] = float(v)
                except ValueError:
                    pass
        if isinstance(values.get("aug"), dict):
            aug = dict(values["aug"])
            for k in ("crop_scale", "color_jitter"):
                if isinstance(aug.get(k), list):
                    aug[k] = tuple(aug[k])
            values["aug"] = AugmentConfig(**aug)
        return values


def recipe_values(recipe: str, strategy: str) -> dict[str, Any]:
    """Hyper-parameters of a named recipe for one strategy (flags override them).

    ``fer``: the anime facial-expression study (ViT vs CNN, 2026). ``aniwho``: AniWho (2022).
    ``openset``: the defaults made for open set (``enroll`` with the run's backbone, ``predict
    --reject-rate``): cosine head, no label smoothing, and greyscale copies of 30% of the training
    images so that features keep more than colour (RESULTS.md section 18).
    ``default``: anivision's CPU-friendly defaults (128 px, short cosine schedule). On a small
    real manga set, 5-fold cross-validation (benchmarks/emotions_cv.py) puts them well above the
    linear probe; a longer schedule in batches of 16 with greyscale and screentone augmentation
    did worse on the fold measured (RESULTS.md, "Small real data").
    """
    if recipe not in RECIPES:
        raise AnivisionError(f"unknown recipe '{recipe}' (choose from {', '.join(RECIPES)})")
    if recipe in ("default", "openset"):
        v: dict[str, Any] = {}
        if recipe == "openset":
            aug = dataclasses.replace(TrainConfig.default_aug(), grayscale=0.3)
            v.update(head="cosine", label_smoothing=0.0, aug=aug)
        if strategy == "linear_probe":
            v.update(lr_head=3e-3, epochs=20, warmup_epochs=0.0, label_smoothing=0.0)
        return v
    if recipe == "fer":
        v = dict(
            optimizer="adamw",
            weight_decay=1e-4,
            batch_size=32,
            seed=42,
            monitor="val_acc",
            label_smoothing=0.0,
            dropout=0.2,
            crop_pct=224 / 256,
            img_size=224,
            aug=AugmentConfig(
                crop_scale=(0.8, 1.0), hflip=0.5, rotation=10.0, color_jitter=(0.2, 0.2, 0.2, 0.05), random_erasing=0.1
            ),
        )
        per = {
            "linear_probe": dict(lr_head=1e-3, lr_backbone=0.0, epochs=20, patience=5, schedule="constant", warmup_epochs=0.0, grad_clip=None),
            "partial": dict(lr_head=1e-3, lr_backbone=1e-4, epochs=30, patience=7, schedule="constant", warmup_epochs=0.0, grad_clip=None),
            "full": dict(lr_head=1e-3, lr_backbone=1e-5, epochs=40, patience=10, schedule="cosine", warmup_epochs=3.0, grad_clip=1.0),
            # The study holds the progressive schedule constant across models; it uses the full
            # fine-tuning optimiser settings with groups unfrozen from the top.
            "progressive": dict(lr_head=1e-3, lr_backbone=1e-4, epochs=40, patience=10, schedule="cosine", warmup_epochs=3.0, grad_clip=1.0, unfreeze_every=3),
        }
        v.update(per.get(strategy, {}))  # an unknown strategy is refused by TrainConfig.validate
        return v
    # aniwho
    return dict(
        optimizer="sgd",
        momentum=0.9,
        lr_head=0.005,
        lr_backbone=0.005,
        weight_decay=0.0,
        schedule="plateau",
        plateau_factor=0.2,
        plateau_patience=3,
        min_lr=1e-5,
        monitor="val_loss",
        patience=6,
        epochs=100,
        dropout=0.2,
        label_smoothing=0.0,
        img_size=96,
        crop_pct=1.0,
        warmup_epochs=0.0,
        grad_clip=None,
        aug=AugmentConfig(
            # Keras RandomRotation(0.4) is a fraction of a full turn: +/- 0.4 * 360 = 144 degrees.
            crop_scale=None, hflip=0.5, vflip=0.5, rotation=144.0,
            translate=0.2, zoom=0.2, color_jitter=(0.0, 0.2, 0.0, 0.0), random_erasing=0.0,
        ),
    )
