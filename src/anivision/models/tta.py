"""Test-time augmentation of an embedding: the mean of an image's and its mirror image's unit vectors.

Characters are drawn facing either way, so a face and its mirror image are the same character;
averaging the two embeddings removes what the pose adds. On the open-set benchmark (RESULTS.md
section 18) it raised the unknown images rejected at the same known accuracy. It is a module, not
a loop option, so the torch path, the decoded-image and feature caches and the ONNX export all
see one network.
"""

from __future__ import annotations

import torch
from torch import nn

from anivision.errors import AnivisionError

#: ``none``: embed the image as it is; ``flip``: mean of the unit vectors of the image and its mirror.
TTA_CHOICES = ("none", "flip")


class FlipAverage(nn.Module):
    """``(normalise(f(x)) + normalise(f(mirror(x)))) / 2`` for an embedding ``f`` of (B, 3, H, W) images."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_features = getattr(backbone, "num_features", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Two passes, not one over the concatenated batch: the ONNX export keeps its batch axis dynamic.
        a, b = self.backbone(x), self.backbone(torch.flip(x, dims=[3]))
        return (nn.functional.normalize(a, dim=1) + nn.functional.normalize(b, dim=1)) / 2


def check_tta(tta: str) -> None:
    """Raise AnivisionError for a test-time augmentation other than those of :data:`TTA_CHOICES`."""
    if tta not in TTA_CHOICES:
        raise AnivisionError(f"unknown test-time augmentation '{tta}' (choose from {', '.join(TTA_CHOICES)})")


def with_tta(backbone: nn.Module, tta: str) -> nn.Module:
    """``backbone`` itself for ``none``, wrapped in :class:`FlipAverage` for ``flip``."""
    check_tta(tta)
    return FlipAverage(backbone) if tta == "flip" else backbone
