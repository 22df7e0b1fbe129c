"""Split a backbone into a frozen prefix and a trainable suffix.

Partial fine-tuning trains only the top groups of a backbone. When training images are not
augmented, the frozen bottom of the network (the *prefix*) maps every image to the same
activation in every epoch, so it can run once per image and be cached; each epoch then runs
only the trainable top (the *suffix*) on those activations. The backward pass never enters the
prefix anyway, so the saving is the prefix's share of the forward pass.

A split needs the exact order in which ``forward_features`` calls the model's parts, so it is
defined per architecture family: timm's ``EfficientNet`` (EfficientNet-B0..B7, -Lite,
MobileNetV2), ``ResNet``, ``VisionTransformer`` and anivision's ``vanilla_cnn``. A family whose
``forward_features`` a subclass overrides is refused rather than split wrongly.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch
from timm.models.efficientnet import EfficientNet
from timm.models.resnet import ResNet
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from anivision.errors import AnivisionError
from anivision.models.vanilla_cnn import VanillaCNN


class _Call(nn.Module):
    """``fn(x)``, with the modules and parameters ``fn`` uses registered here.

    Registering them makes ``state_dict``, ``parameters()`` and DistributedDataParallel see the
    tensors a bound method such as ``VisionTransformer._pos_embed`` reads; they stay shared
    with the original model.
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], modules: dict[str, nn.Module] | None = None,
                 params: dict[str, nn.Parameter] | None = None) -> None:
        super().__init__()
        self._fn = [fn]  # a plain list: a bound method's module must not be registered again
        for name, m in (modules or {}).items():
            self.add_module(name, m)
        for name, p in (params or {}).items():
            self.register_parameter(name, p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fn[0](x)


def _overrides(model: nn.Module, base: type, *methods: str) -> bool:
    return any(getattr(type(model), m) is not getattr(base, m) for m in methods)


def backbone_stages(backbone: nn.Module) -> tuple[list[tuple[str, nn.Module]], nn.Module]:
    """The parts of ``backbone`` in forward order, and its pooling head.

    Running the stages in order gives ``backbone.forward_features(x)``; the returned head maps
    that to ``backbone(x)`` (pooled features, ``num_classes=0``).

    Args:
        backbone: a timm model created with ``num_classes=0``.

    Returns:
        ``(stages, head)``: ``stages`` is a list of ``(name, module)``; a stage's parameters are
        those of its module.

    Raises:
        AnivisionError: the architecture family has no known split.
    """
    m = backbone
    head_methods = ("forward_features", "forward_head", "forward")
    if isinstance(m, EfficientNet) and not _overrides(m, EfficientNet, *head_methods):
        stages = [("conv_stem", m.conv_stem), ("bn1", m.bn1)]
        stages += [(f"blocks.{i}", b) for i, b in enumerate(m.blocks)]
        stages += [("conv_head", m.conv_head), ("bn2", m.bn2)]
    elif isinstance(m, ResNet) and not _overrides(m, ResNet, *head_methods):
        stages = [("conv1", m.conv1), ("bn1", m.bn1), ("act1", m.act1), ("maxpool", m.maxpool)]
        stages += [(f"layer{i}", getattr(m, f"layer{i}")) for i in range(1, 5)]
    elif isinstance(m, VisionTransformer) and not _overrides(m, VisionTransformer, *head_methods, "_pos_embed"):
        params = {n: getattr(m, n) for n in ("pos_embed", "cls_token", "reg_token") if isinstance(getattr(m, n, None), nn.Parameter)}
        stages = [("patch_embed", m.patch_embed), ("pos_embed", _Call(m._pos_embed, params=params)),
                  ("patch_drop", m.patch_drop), ("norm_pre", m.norm_pre)]
        stages += [(f"blocks.{i}", b) for i, b in enumerate(m.blocks)]
        stages += [("norm", m.norm)]
    elif isinstance(m, VanillaCNN) and not _overrides(m, VanillaCNN, *head_methods):
        stages = [(f"stages.{i}", s) for i, s in enumerate(m.stages)]
    else:
        raise AnivisionError(
            f"{type(m).__name__}: no frozen-prefix split for this architecture "
            "(--prefix-cache supports EfficientNet/MobileNetV2, ResNet, ViT and vanilla_cnn backbones)"
        )
    head_modules = {n: c for n, c in m.named_children() if n in ("global_pool", "fc_norm", "head_drop", "attn_pool", "drop")}
    head = _Call(lambda x: m.forward_head(x, pre_logits=True), modules=head_modules)
    return stages, head


def _sequential(stages: list[tuple[str, nn.Module]]) -> nn.Sequential:
    # Dots are not allowed in module names; keep the original name readable.
    return nn.Sequential(OrderedDict((name.replace(".", "_"), mod) for name, mod in stages))


class SuffixClassifier(nn.Module):
    """The trainable top of a classifier: suffix stages, pooling head, then the linear head.

    Maps prefix activations (the shape the prefix outputs, e.g. (B, C, h, w) for a CNN or
    (B, T, D) for a ViT) to (B, num_classes) logits. Its modules are shared with the full
    classifier, so training it trains that classifier in place.
    """

    def __init__(self, stages: nn.Sequential, pool: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.stages = stages
        self.pool = pool
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.stages(x)))


def split_frozen_prefix(backbone: nn.Module, head: nn.Module) -> tuple[nn.Sequential, SuffixClassifier, int]:
    """Cut ``backbone`` before its first stage with a trainable parameter.

    Call after the strategy has set ``requires_grad``.

    Args:
        backbone: timm backbone (``num_classes=0``).
        head: the classifier's head, (B, D) -> (B, C).

    Returns:
        ``(prefix, suffix, k)``: ``prefix`` maps (B, 3, H, W) images to activations (all its
        parameters frozen), ``suffix`` maps those activations to logits, and ``k`` is the number
        of prefix stages.

    Raises:
        AnivisionError: unknown architecture, or nothing in the backbone is frozen.
    """
    stages, pool = backbone_stages(backbone)
    k = 0
    while k < len(stages) and not any(p.requires_grad for p in stages[k][1].parameters()):
        k += 1
    if k == 0:
        raise AnivisionError(f"{type(backbone).__name__}: the first stage trains, so there is no frozen prefix to cache")
    # Parameters outside the listed stages (e.g. a pooling head) must be trainable or absent,
    # never frozen-but-skipped: check that every backbone parameter is covered.
    covered = {id(p) for _, mod in stages for p in mod.parameters()} | {id(p) for p in pool.parameters()}
    missing = [n for n, p in backbone.named_parameters() if id(p) not in covered]
    if missing:
        raise AnivisionError(f"{type(backbone).__name__}: split does not cover parameter(s) {', '.join(missing[:3])}")
    return _sequential(stages[:k]), SuffixClassifier(_sequential(stages[k:]), pool, head), k
