"""Re-identification heads: GeM pooling and the BNNeck, on any timm backbone.

The BNNeck (Luo et al., "Bag of Tricks and a Strong Baseline for Deep Person Re-ID", 2019)
puts a BatchNorm between the pooled feature and a bias-free ID classifier: the metric loss
(triplet) acts on the feature *before* the BN, where Euclidean distances are free, the ID loss on
the logits *after* it, where features lie near a hypersphere; retrieval uses the BN feature.
GeM (generalised-mean) pooling, ``(mean x^p)^(1/p)`` with a learnt ``p``, sits between average
(p=1) and max pooling (p -> inf) and is part of AGW.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from anivision.errors import AnivisionError


class GeM(nn.Module):
    """Generalised-mean pooling over the spatial dimensions.

    Args:
        p: initial exponent (3 in AGW).
        eps: clamp before the power, so negative or zero activations (e.g. after SiLU) do not
            give NaN gradients.
        learn_p: learn ``p`` with the network.
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6, learn_p: bool = True) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)), requires_grad=learn_p)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) feature map -> (B, C) pooled features."""
        p = self.p.clamp(min=1.0)  # p < 1 is not a mean any more and is unstable
        return x.clamp(min=self.eps).pow(p).mean(dim=(-2, -1)).pow(1.0 / p)

    def extra_repr(self) -> str:
        return f"p={self.p.item():.3f}, eps={self.eps}"


class BNNeck(nn.Module):
    """BatchNorm (bias frozen at zero) followed by a bias-free linear ID classifier.

    Args:
        dim: D, the feature size.
        num_classes: C, the number of training identities (works).
    """

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)
        # A learnt BN shift would move features off the origin and break the hypersphere the
        # ID loss shapes; Bag of Tricks freezes it at zero.
        self.bn.bias.requires_grad_(False)
        self.classifier = nn.Linear(dim, num_classes, bias=False)
        nn.init.constant_(self.bn.weight, 1.0)
        nn.init.constant_(self.bn.bias, 0.0)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        """(B, D) features -> (B, D) batch-normalised features."""
        return self.bn(feat)


@dataclass
class ReidOutput:
    """What :class:`ReidModel` returns for a batch.

    Attributes:
        feat: (B, D) pooled features before the BNNeck (for the triplet loss).
        logits: (B, C) ID logits from the BNNeck classifier (for the ID loss).
    """

    feat: torch.Tensor
    logits: torch.Tensor


class ReidModel(nn.Module):
    """A timm backbone (``num_classes=0``), optional GeM pooling, and a BNNeck.

    Args:
        backbone: timm feature extractor; ``forward_features`` gives (B, C, H, W) for CNNs or
            (B, N, C) tokens for ViTs, ``forward_head(x, pre_logits=True)`` the pooled (B, D).
        num_classes: C, training works.
        pool: ``"gem"`` (needs a CNN feature map), ``"backbone"`` (the backbone's own pooling, e.g.
            average pooling or the ViT class token) or ``"auto"`` (GeM where the backbone gives a
            feature map, else its own pooling).
        gem_p: initial GeM exponent.
        img_size: input side used to probe what ``forward_features`` returns.

    Raises:
        AnivisionError: ``pool="gem"`` with a backbone that gives tokens, or an unknown ``pool``.
    """

    def __init__(
        self, backbone: nn.Module, num_classes: int, pool: str = "auto", gem_p: float = 3.0, img_size: int = 64
    ) -> None:
        super().__init__()
        if pool not in ("auto", "gem", "backbone"):
            raise AnivisionError(f"unknown pooling '{pool}': use auto, gem or backbone")
        self.backbone = backbone
        if pool != "backbone":
            is_map = _gives_feature_map(backbone, img_size)
            if pool == "gem" and not is_map:
                name = getattr(backbone, "default_cfg", {}).get("architecture", type(backbone).__name__)
                raise AnivisionError(f"GeM pooling needs a CNN feature map; backbone '{name}' gives tokens (use --pool backbone)")
            pool = "gem" if is_map else "backbone"
        self.pool_kind = pool
        self.gem = GeM(gem_p) if pool == "gem" else None
        self.dim = int(backbone.num_features)
        self.neck = BNNeck(self.dim, num_classes)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images -> (B, D) pooled features (before the BNNeck)."""
        fmap = self.backbone.forward_features(x)
        if self.gem is not None:
            return self.gem(fmap)
        return self.backbone.forward_head(fmap, pre_logits=True)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images -> (B, D) retrieval features (after the BNNeck's BatchNorm)."""
        return self.neck(self.pooled(x))

    def forward(self, x: torch.Tensor) -> ReidOutput:
        """(B, 3, H, W) images -> pre-BN features (B, D) and ID logits (B, C)."""
        feat = self.pooled(x)
        return ReidOutput(feat=feat, logits=self.neck.classifier(self.neck(feat)))


class EmbeddingModel(nn.Module):
    """Adapter: ``forward`` = ``model.embed``, so :func:`anivision.embeddings.embed_paths` can use it.

    Its state dict is the wrapped model's (prefixed), so the feature cache key changes whenever
    the trained weights change.
    """

    def __init__(self, model: ReidModel) -> None:
        super().__init__()
        self.model = model
        self.num_features = model.dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images -> (B, D) retrieval features."""
        return self.model.embed(x)


@torch.no_grad()
def _gives_feature_map(backbone: nn.Module, img_size: int) -> bool:
    """True when ``forward_features`` returns a (B, C, H, W) map with C = ``num_features``."""
    was_training = backbone.training
    backbone.eval()  # BatchNorm in train mode refuses a batch of one
    try:
        out = backbone.forward_features(torch.zeros(1, 3, img_size, img_size))
    finally:
        backbone.train(was_training)
    return out.ndim == 4 and out.shape[1] == int(backbone.num_features)
