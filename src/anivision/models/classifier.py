"""Backbone + classification head (linear, or cosine for open-set work)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: Heads a :class:`Classifier` can have.
HEADS = ("linear", "cosine")
#: Scale of the cosine head: its logits are ``COSINE_SCALE * cos(feature, class weight)``.
COSINE_SCALE = 16.0


class CosineLinear(nn.Linear):
    """``scale * cos(x, w_c)`` for every class weight ``w_c`` (no bias): the logits of a cosine
    classifier (CosFace, Wang et al. 2018). Features of one class gather around one direction,
    so a distance threshold on normalised features separates characters the model never saw
    better than after a linear head (benchmarks/RESULTS.md §18)."""

    def __init__(self, in_features: int, out_features: int, scale: float = COSINE_SCALE) -> None:
        super().__init__(in_features, out_features, bias=False)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))


class Classifier(nn.Module):
    """A timm backbone (``num_classes=0``) followed by dropout and a linear or cosine layer.

    Args:
        backbone: feature extractor mapping (B, 3, H, W) to (B, D), with ``num_features`` = D.
        num_classes: C, the number of outputs.
        dropout: dropout probability before the last layer.
        head: ``linear`` (``nn.Linear``) or ``cosine`` (:class:`CosineLinear`).
    """

    def __init__(self, backbone: nn.Module, num_classes: int, dropout: float = 0.2, head: str = "linear") -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head must be one of {', '.join(HEADS)}, got {head!r}")
        self.backbone = backbone
        last = CosineLinear if head == "cosine" else nn.Linear
        self.head = nn.Sequential(nn.Dropout(dropout), last(int(backbone.num_features), num_classes))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images -> (B, D) features."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images -> (B, C) logits."""
        return self.head(self.backbone(x))
