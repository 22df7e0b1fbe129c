"""Backbone + classification head."""

from __future__ import annotations

import torch
from torch import nn


class Classifier(nn.Module):
    """A timm backbone (``num_classes=0``) followed by dropout and a linear layer.

    Args:
        backbone: feature extractor mapping (B, 3, H, W) to (B, D), with ``num_features`` = D.
        num_classes: C, the number of outputs.
        dropout: dropout probability before the linear layer.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(int(backbone.num_features), num_classes))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images -> (B, D) features."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images -> (B, C) logits."""
        return self.head(self.backbone(x))
