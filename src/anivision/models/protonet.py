"""Prototypical Networks (Snell et al., 2017): a class is the mean embedding of its support images.

:class:`PrototypicalNetwork` follows easy-few-shot-learning's interface:
``process_support_set(support, labels)`` computes and stores one prototype per class, then
``forward(query)`` scores every query against them. Meta-training episodes call both, enrolment
is the first (a gallery's prototypes) and identification the second. The pure functions below
are the maths the model and the batched episode evaluator share.
"""

from __future__ import annotations

import torch
from torch import nn

from anivision.errors import AnivisionError

DISTANCES = ("euclidean", "cosine")


def check_distance(distance: str) -> None:
    """Raise AnivisionError for a distance other than ``euclidean`` or ``cosine``."""
    if distance not in DISTANCES:
        raise AnivisionError(f"unknown distance '{distance}' (choose {' or '.join(DISTANCES)})")


def prototypes(support: torch.Tensor) -> torch.Tensor:
    """Class prototypes: the mean of each class's support embeddings.

    Args:
        support: (..., N, K, D) embeddings, K per class.

    Returns:
        (..., N, D).
    """
    return support.mean(dim=-2)


def class_prototypes(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Prototypes of labelled embeddings: row ``c`` is the mean of the rows labelled ``c``.

    With the same number of rows per class this is :func:`prototypes` of the (N, K, D)
    regrouping, so an episode's prototypes do not depend on how its support set is passed.

    Args:
        features: (M, D) embeddings.
        labels: (M,) class ids 0..N-1, every class present.

    Returns:
        (N, D) in the dtype of ``features``.

    Raises:
        AnivisionError: a class id below the largest one has no row.
    """
    labels = torch.as_tensor(labels, device=features.device).long()
    if labels.numel() == 0:
        raise AnivisionError("a support set needs at least one image")
    if labels.numel() > 1 and not bool((labels[1:] >= labels[:-1]).all()):
        order = torch.argsort(labels, stable=True)
        features, labels = features[order], labels[order]
    counts = torch.bincount(labels)
    if bool((counts == 0).any()):
        raise AnivisionError(f"no support image for class(es) {(counts == 0).nonzero().flatten().tolist()}")
    if bool((counts == counts[0]).all()):
        return prototypes(features.reshape(len(counts), int(counts[0]), -1))
    return torch.stack([features[labels == c].mean(0) for c in range(len(counts))])


def episode_distances(queries: torch.Tensor, protos: torch.Tensor, distance: str = "euclidean") -> torch.Tensor:
    """Distance of every query to every prototype.

    ``euclidean`` is the *squared* euclidean distance, as in Snell et al.: ``-d`` are then the
    logits of a linear classifier on the embeddings. ``cosine`` is ``1 - cos``.

    Args:
        queries: (..., M, D).
        protos: (..., N, D).
        distance: ``"euclidean"`` or ``"cosine"``.

    Returns:
        (..., M, N) distances.
    """
    check_distance(distance)
    if distance == "euclidean":
        # ||q||^2 + ||p||^2 - 2 q.p: batched matmuls instead of an (M, N, D) difference tensor.
        qq = (queries * queries).sum(-1, keepdim=True)
        pp = (protos * protos).sum(-1).unsqueeze(-2)
        return (qq + pp - 2.0 * queries @ protos.transpose(-1, -2)).clamp_min(0.0)
    q = nn.functional.normalize(queries, dim=-1)
    p = nn.functional.normalize(protos, dim=-1)
    return 1.0 - q @ p.transpose(-1, -2)


def distance_logits(distances: torch.Tensor, distance: str = "euclidean", cosine_scale: float = 10.0) -> torch.Tensor:
    """Logits from distances: ``-d`` for euclidean, ``scale * cos`` for cosine.

    Cosine similarities lie in [-1, 1], too flat for a softmax over classes; a fixed scale
    (temperature 0.1) lets the loss sharpen, as in cosine-classifier few-shot baselines.
    """
    return -distances if distance == "euclidean" else cosine_scale * (1.0 - distances)


def protonet_logits(queries: torch.Tensor, protos: torch.Tensor, distance: str = "euclidean", cosine_scale: float = 10.0) -> torch.Tensor:
    """(..., M, N) logits of (..., M, D) queries against (..., N, D) prototypes (see :func:`distance_logits`)."""
    return distance_logits(episode_distances(queries, protos, distance), distance, cosine_scale)


class PrototypicalNetwork(nn.Module):
    """Nearest-prototype classifier over an optional backbone.

    Inputs are images (B, C, H, W), which go through the backbone, or embeddings (B, D), which
    are used as they are (a network without backbone takes only embeddings).

    Args:
        backbone: maps (B, C, H, W) images to (B, D) embeddings, or None.
        distance: ``euclidean`` (squared, as Snell et al.) or ``cosine``.
        cosine_scale: the logit scale of cosine similarities.

    Attributes:
        prototypes: (N, D) prototypes of the last support set (not part of the state dict).
    """

    def __init__(self, backbone: nn.Module | None = None, distance: str = "euclidean", cosine_scale: float = 10.0) -> None:
        super().__init__()
        check_distance(distance)
        self.backbone = backbone
        self.distance = distance
        self.cosine_scale = float(cosine_scale)
        self.prototypes: torch.Tensor | None = None

    @classmethod
    def from_prototypes(cls, protos: torch.Tensor, distance: str = "euclidean", cosine_scale: float = 10.0) -> "PrototypicalNetwork":
        """A network without backbone whose support set is already summarised (a saved gallery)."""
        net = cls(None, distance, cosine_scale)
        net.prototypes = torch.as_tensor(protos)
        return net

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images -> (B, D) embeddings; (B, D) embeddings pass through.

        Half-precision embeddings (mixed precision) come back as float32: the prototype maths
        subtracts large squared norms, which float16 would cancel away.
        """
        if x.dim() != 2:
            if self.backbone is None:
                raise AnivisionError(f"a prototypical network without backbone takes (B, D) embeddings, got shape {tuple(x.shape)}")
            x = self.backbone(x)
        return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x

    def process_support_set(self, support: torch.Tensor, support_labels: torch.Tensor) -> torch.Tensor:
        """Compute and store the prototypes of a support set.

        Args:
            support: (M, C, H, W) images or (M, D) embeddings.
            support_labels: (M,) class ids 0..N-1.

        Returns:
            (N, D) prototypes (also kept as :attr:`prototypes`).
        """
        features = self.embed(support)
        with torch.autocast(features.device.type, enabled=False):
            self.prototypes = class_prototypes(features, support_labels)
        return self.prototypes

    def distances(self, query: torch.Tensor) -> torch.Tensor:
        """(M, N) distances of queries (images or embeddings) to the stored prototypes."""
        if self.prototypes is None:
            raise AnivisionError("no prototypes: call process_support_set first")
        features = self.embed(query)
        with torch.autocast(features.device.type, enabled=False):  # the maths stays in the embeddings' precision
            return episode_distances(features, self.prototypes, self.distance)

    def forward(self, query: torch.Tensor) -> torch.Tensor:
        """(M, N) scores (logits) of queries: ``-d`` for euclidean, ``scale * cos`` for cosine."""
        return distance_logits(self.distances(query), self.distance, self.cosine_scale)
