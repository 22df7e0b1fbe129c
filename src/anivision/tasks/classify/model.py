"""The classifier of a run: backbone + head, its optimizer, and loading a finished run."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from anivision.data.transforms import DataConfig
from anivision.embeddings import pick_device
from anivision.engine.checkpoint import load_weights
from anivision.engine.optim import make_optimizer, param_groups
from anivision.errors import AnivisionError
from anivision.files import read_json
from anivision.models.backbone import create_backbone, data_config
from anivision.models.classifier import COSINE_SCALE, Classifier
from anivision.models.losses import CosFaceLoss
from anivision.tasks.classify.config import TrainConfig


def build_classifier(cfg: TrainConfig, n_classes: int, weights: str | None = None) -> tuple[Classifier, DataConfig]:
    """Backbone (``cfg.backbone`` with ``weights`` or ``cfg.weights``) + dropout and a ``cfg.head`` layer."""
    backbone = create_backbone(cfg.backbone, cfg.weights if weights is None else weights, img_size=cfg.img_size)
    dcfg = data_config(backbone, cfg.img_size)
    dcfg = DataConfig(dcfg.img_size, dcfg.mean, dcfg.std, crop_pct=cfg.crop_pct)
    return Classifier(backbone, n_classes, dropout=cfg.dropout, head=cfg.head), dcfg


def classification_loss(cfg: TrainConfig) -> nn.Module:
    """The training loss of ``cfg.head``: cross-entropy for a linear head, CosFace for a cosine one."""
    if cfg.head == "cosine":
        return CosFaceLoss(COSINE_SCALE, cfg.margin, cfg.label_smoothing)
    return nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)


def classifier_optimizer(cfg: TrainConfig, head: nn.Module, backbone: nn.Module | None) -> torch.optim.Optimizer:
    """Optimizer over every parameter of ``head`` and ``backbone`` (differential learning rates).

    Every parameter is held from the first epoch, frozen or not: strategies change
    ``requires_grad`` between epochs, and a fixed optimizer structure keeps resume exact.
    """
    parts = [("head", head, cfg.lr_head)] + ([("backbone", backbone, cfg.lr_backbone)] if backbone is not None else [])
    return make_optimizer(cfg.optimizer, param_groups(parts, cfg.weight_decay), momentum=cfg.momentum)


def load_run(run_dir: str | Path, device: str | None = None) -> tuple[Classifier, TrainConfig, list[str], DataConfig]:
    """Rebuild a trained classifier from its run folder (weights from ``model.safetensors``).

    Returns:
        (model in eval mode on its device, config, class names, input config).

    Raises:
        AnivisionError: the folder is not a finished run.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise AnivisionError(f"{run_dir}: no such run folder")
    for f in ("config.json", "classes.json", "model.safetensors"):
        if not (run_dir / f).exists():
            raise AnivisionError(f"{run_dir}: not a trained run ({f} missing)")
    cfg = TrainConfig.load(run_dir / "config.json")
    classes = read_json(run_dir / "classes.json", expect=list)
    # The run's own weights replace whatever the backbone started from: no hub access needed.
    model, dcfg = build_classifier(cfg, len(classes), weights="none")
    load_weights(model, run_dir / "model.safetensors")
    model.to(pick_device(device or cfg.device)).eval()
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    return model, cfg, classes, dcfg
