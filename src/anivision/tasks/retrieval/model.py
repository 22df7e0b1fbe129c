"""The re-ID model of a retrieval fold: built from the config, saved as ``model.json`` +
``model.safetensors`` in the fold folder, and loaded back without the original weights file."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from anivision.data.transforms import AugmentConfig, DataConfig
from anivision.embeddings import pick_device
from anivision.engine.checkpoint import load_weights
from anivision.errors import AnivisionError
from anivision.files import read_json
from anivision.models.backbone import create_backbone
from anivision.models.reid_head import ReidModel
from anivision.tasks.retrieval.config import RetrievalConfig, get_preset


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


def build_model(cfg: RetrievalConfig, num_classes: int) -> ReidModel:
    """A :class:`ReidModel` for ``num_classes`` training works, pooled as ``cfg`` or its preset says."""
    backbone = make_backbone(cfg.backbone, cfg.weights, cfg.img_size)
    return ReidModel(backbone, num_classes, pool=cfg.pool or get_preset(cfg.preset).pool, img_size=cfg.img_size)


def model_meta(cfg: RetrievalConfig, model: ReidModel, train_works: list[str], dcfg: DataConfig) -> dict[str, Any]:
    """What ``model.json`` records: enough to rebuild the model and its input pipeline."""
    return {
        "backbone": cfg.backbone,
        "img_size": cfg.img_size,
        "num_classes": len(train_works),
        "pool": model.pool_kind,
        "train_works": train_works,
        "data_config": asdict(dcfg),
    }


def has_fold_model(fold_dir: str | Path) -> bool:
    """True when ``fold_dir`` holds a finished model (``model.json`` + ``model.safetensors``)."""
    return (Path(fold_dir) / "model.safetensors").exists() and (Path(fold_dir) / "model.json").exists()


def load_fold_model(fold_dir: str | Path, device: torch.device | str | None = None) -> tuple[ReidModel, DataConfig]:
    """The trained model of one fold and its input config (``model.json`` + ``model.safetensors``).

    Raises:
        AnivisionError: the fold has no finished model.
    """
    fold_dir = Path(fold_dir)
    if not has_fold_model(fold_dir):
        raise AnivisionError(f"{fold_dir}: no trained model (model.json + model.safetensors); train this fold first")
    meta = read_json(fold_dir / "model.json", expect=dict)
    # Random init then the saved weights: no need for the original pretrained weights file.
    backbone = make_backbone(meta["backbone"], "none", int(meta["img_size"]))
    model = ReidModel(backbone, int(meta["num_classes"]), pool=meta["pool"], img_size=int(meta["img_size"]))
    load_weights(model, fold_dir / "model.safetensors")
    dc = meta["data_config"]
    dcfg = DataConfig(int(dc["img_size"]), tuple(dc["mean"]), tuple(dc["std"]), float(dc["crop_pct"]))
    return model.to(pick_device(str(device) if device else None)).eval(), dcfg
