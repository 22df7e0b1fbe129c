"""Fine-tuning strategies: which parameters train, and with which learning rate.

A strategy is told the epoch at its start and sets ``requires_grad`` on the backbone's
parameter groups; the training loop never knows which strategy runs. Groups come from timm's
``group_matcher(coarse=True)`` (stem, then one group per stage or transformer block, bottom to
top), so the same code unfreezes ResNet stages, EfficientNet block stages and ViT blocks.

The optimizer always holds every parameter (head group + backbone group) from the first epoch:
frozen parameters simply have no gradient and are skipped by the optimizer. That keeps the
optimizer's structure fixed, so a run resumed from a checkpoint continues exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from timm.models import group_parameters

from anivision.errors import AnivisionError

STRATEGIES = ("linear_probe", "partial", "full", "progressive")


def backbone_groups(backbone: nn.Module) -> list[list[str]]:
    """Parameter names of the backbone, grouped bottom (stem) to top (last stage/block + final norm).

    Uses timm's coarse ``group_matcher``; a model without one is grouped by its top-level children.
    """
    if hasattr(backbone, "group_matcher"):
        grouped = group_parameters(backbone, backbone.group_matcher(coarse=True))
        return [list(grouped[k]) for k in sorted(grouped)]
    groups: dict[str, list[str]] = {}
    for name, _ in backbone.named_parameters():
        groups.setdefault(name.split(".")[0], []).append(name)
    return list(groups.values())


def train_top_groups(backbone: nn.Module, groups: list[list[str]], k: int) -> None:
    """``requires_grad`` on the parameters of the top ``k`` of ``groups`` (bottom to top), off elsewhere."""
    train_names = {n for g in groups[len(groups) - k :] for n in g} if k else set()
    for name, p in backbone.named_parameters():
        p.requires_grad_(name in train_names)


@dataclass
class Strategy:
    """Which backbone groups train at each epoch.

    Attributes:
        name: one of :data:`STRATEGIES`.
        groups: backbone parameter names per group, bottom to top (from :func:`backbone_groups`).
        partial_groups: for ``partial``, how many top groups train (with the head).
        unfreeze_every: for ``progressive``, epochs between unfreezing one more group.
        progressive_groups: for ``progressive``, how many top groups are unfrozen at most
            (``None``: all of them).
    """

    name: str
    groups: list[list[str]]
    partial_groups: int = 1
    unfreeze_every: int = 2
    progressive_groups: int | None = None

    def __post_init__(self) -> None:
        if self.name not in STRATEGIES:
            raise AnivisionError(f"unknown strategy '{self.name}' (choose from {', '.join(STRATEGIES)})")
        if self.partial_groups < 1:
            raise AnivisionError("--partial-groups must be at least 1")
        if self.unfreeze_every < 1:
            raise AnivisionError("--unfreeze-every must be at least 1")

    def n_trainable_groups(self, epoch: int) -> int:
        """How many top backbone groups train at ``epoch`` (0-based)."""
        n = len(self.groups)
        if self.name == "linear_probe":
            return 0
        if self.name == "partial":
            return min(self.partial_groups, n)
        if self.name == "full":
            return n
        limit = n if self.progressive_groups is None else min(self.progressive_groups, n)
        return min(epoch // self.unfreeze_every, limit)

    def apply(self, model: nn.Module, epoch: int) -> None:
        """Set ``requires_grad`` for ``epoch``; the head (``model.head``) always trains.

        Args:
            model: a :class:`~anivision.models.classifier.Classifier` (``backbone`` + ``head``).
            epoch: 0-based epoch about to start.
        """
        train_top_groups(model.backbone, self.groups, self.n_trainable_groups(epoch))
        for p in model.head.parameters():
            p.requires_grad_(True)

    def max_trainable_fraction(self, model: nn.Module, epochs: int) -> float:
        """Largest share of parameters that train in any epoch of ``epochs`` (reported as % trainable)."""
        total = sum(p.numel() for p in model.parameters())
        sizes = dict(model.backbone.named_parameters())
        head = sum(p.numel() for p in model.head.parameters())
        k = max(self.n_trainable_groups(e) for e in range(max(1, epochs)))
        groups = self.groups[len(self.groups) - k :] if k else []
        return (head + sum(sizes[n].numel() for g in groups for n in g)) / total


def set_train_mode(model: nn.Module) -> None:
    """``model.train()``, except normalisation layers whose parameters are frozen stay in eval mode.

    A frozen BatchNorm must keep its ImageNet running statistics: updating them from a small,
    differently distributed dataset while the weights around them are fixed hurts accuracy
    (the linear probe freezes "BN statistics too").
    """
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            params = list(m.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                m.eval()
