"""Metric-learning losses for re-identification, in pytorch-metric-learning's style.

One class per loss, ``forward(embeddings (B, D), labels (B,)) -> scalar``:

- :class:`WeightedRegularizedTriplet`: the weighted regularised triplet of AGW (written here:
  pytorch-metric-learning has no such loss);
- :class:`BatchHardTriplet`: pytorch-metric-learning's ``TripletMarginLoss`` + ``BatchHardMiner``;
- :class:`IdTripletLoss`: the re-ID objective, label-smoothing ID cross-entropy on the logits plus
  a weighted triplet loss on the features.

Every loss computes in float32 (``.float()`` on its inputs): softmax weights and distances lose
too much in float16. ``tests/test_losses.py`` checks each one against a naive loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pytorch_metric_learning import distances, losses, miners, reducers
from torch import nn

#: Triplet losses by the name presets use.
TRIPLETS = ("wrt", "batch_hard")


def euclidean_distances(feat: torch.Tensor) -> torch.Tensor:
    """(B, D) -> (B, B) Euclidean distances.

    Through squared norms with a clamp before the sqrt: the diagonal is exactly zero and
    ``sqrt`` has an infinite derivative there, which ``torch.cdist`` would turn into NaN
    gradients once masked entries are multiplied by zero.
    """
    sq = (feat * feat).sum(dim=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * feat @ feat.t()
    return d2.clamp(min=1e-12).sqrt()


class WeightedRegularizedTriplet(nn.Module):
    """Weighted regularised triplet loss of AGW (Ye et al., "Deep Learning for Person
    Re-identification: A Survey and Outlook", TPAMI 2021).

    For each anchor i, positives P_i (same label, not i itself) and negatives N_i:

    - ``w_ij = softmax_{j in P_i}(d_ij)``, ``ap_i = sum_j w_ij d_ij`` (far positives weigh more);
    - ``w_ik = softmax_{k in N_i}(-d_ik)``, ``an_i = sum_k w_ik d_ik`` (close negatives weigh more);
    - ``loss = mean_i log(1 + exp(ap_i - an_i))`` (soft margin: no margin to tune).

    Unlike the reference code, the anchor is not its own positive: its zero distance would only
    pull ``ap_i`` down. Anchors with no positive or no negative in the batch are left out.

    Args:
        normalize: L2-normalise the features first (distances in [0, 2]); AGW uses raw features.
    """

    def __init__(self, normalize: bool = False) -> None:
        super().__init__()
        self.normalize = normalize

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, D) features, (B,) int labels -> scalar loss; zero (with a graph) when no anchor
        has both a positive and a negative."""
        feat = F.normalize(embeddings.float(), dim=1) if self.normalize else embeddings.float()
        dist = euclidean_distances(feat)
        same = labels[:, None] == labels[None, :]
        eye = torch.eye(len(labels), dtype=torch.bool, device=feat.device)
        pos, neg = same & ~eye, ~same
        keep = pos.any(dim=1) & neg.any(dim=1)
        if not bool(keep.any()):
            return feat.sum() * 0.0
        dist, pos, neg = dist[keep], pos[keep], neg[keep]
        # Masked softmax: -inf outside the mask gives weight exactly 0 there.
        w_ap = torch.softmax(dist.masked_fill(~pos, float("-inf")), dim=1)
        w_an = torch.softmax((-dist).masked_fill(~neg, float("-inf")), dim=1)
        furthest_positive = (w_ap * dist).sum(dim=1)
        closest_negative = (w_an * dist).sum(dim=1)
        return F.softplus(furthest_positive - closest_negative).mean()


def weighted_regularized_triplet(feat: torch.Tensor, labels: torch.Tensor, normalize: bool = False) -> torch.Tensor:
    """Functional form of :class:`WeightedRegularizedTriplet`: ``(B, D), (B,) -> scalar``."""
    return WeightedRegularizedTriplet(normalize)(feat, labels)


class BatchHardTriplet(nn.Module):
    """Batch-hard triplet loss (Hermans et al., "In Defense of the Triplet Loss for Person
    Re-Identification", 2017): pytorch-metric-learning's miner + loss, configured as in re-ID.

    Each anchor's hardest positive and hardest negative (``BatchHardMiner``) form one triplet;
    ``max(d_ap - d_an + margin, 0)`` is averaged over *all* anchors (``MeanReducer``; PML's
    default averages only the non-zero ones, which makes the loss scale jump as it converges).

    Args:
        margin: triplet margin (0.3 in Bag of Tricks / TransReID, on un-normalised features).
        normalize: L2-normalise features before the distances.
    """

    def __init__(self, margin: float = 0.3, normalize: bool = False) -> None:
        super().__init__()
        dist = distances.LpDistance(normalize_embeddings=normalize)
        self.miner = miners.BatchHardMiner(distance=dist)
        self.loss = losses.TripletMarginLoss(margin=margin, distance=dist, reducer=reducers.MeanReducer())

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, D) features, (B,) labels -> scalar loss."""
        feat = embeddings.float()
        return self.loss(feat, labels, self.miner(feat, labels))


def make_triplet(kind: str, margin: float = 0.3, normalize: bool = False) -> nn.Module:
    """The triplet loss called ``kind`` (see :data:`TRIPLETS`); ``margin`` only for batch-hard."""
    if kind == "wrt":
        return WeightedRegularizedTriplet(normalize)
    if kind == "batch_hard":
        return BatchHardTriplet(margin, normalize)
    raise ValueError(f"unknown triplet loss '{kind}' (choose {' or '.join(TRIPLETS)})")


@dataclass
class IdTripletTerms:
    """What :class:`IdTripletLoss` returns: the weighted total and its two (unweighted) terms."""

    total: torch.Tensor
    id_loss: torch.Tensor
    triplet_loss: torch.Tensor


class IdTripletLoss(nn.Module):
    """The re-ID objective of Bag of Tricks / AGW / TransReID (Luo et al., 2019):
    ``id_weight * CE(logits, y) + triplet_weight * triplet(feat, y)``.

    The ID cross-entropy acts on the BNNeck logits, the triplet loss on the features before
    the BNNeck. Both are computed in float32.

    Args:
        triplet: a ``(B, D), (B,) -> scalar`` loss.
        label_smoothing: epsilon of the ID cross-entropy.
        id_weight: weight of the ID term.
        triplet_weight: weight of the triplet term.
    """

    def __init__(self, triplet: nn.Module, label_smoothing: float = 0.0, id_weight: float = 1.0, triplet_weight: float = 1.0) -> None:
        super().__init__()
        self.id_loss = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.triplet = triplet
        self.id_weight = id_weight
        self.triplet_weight = triplet_weight

    def forward(self, embeddings: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> IdTripletTerms:
        """(B, D) features, (B, C) logits, (B,) labels -> the total and both terms (scalars)."""
        l_id = self.id_loss(logits.float(), labels)
        l_tri = self.triplet(embeddings.float(), labels)
        return IdTripletTerms(self.id_weight * l_id + self.triplet_weight * l_tri, l_id, l_tri)


class CosFaceLoss(nn.Module):
    """Large-margin cosine loss (CosFace, Wang et al., CVPR 2018) on a cosine head's logits
    ``s * cos_c``: cross-entropy after taking ``s * margin`` off the true class's logit, so a
    class is only "won" once its cosine beats every other by ``margin``.

    pytorch-metric-learning's ``CosFaceLoss`` owns its class weights and takes embeddings; here
    the classifier's own :class:`~anivision.models.classifier.CosineLinear` head holds them (it
    gives the logits at prediction and in an exported model), so the loss takes those logits.

    Args:
        scale: the head's ``s`` (logits = ``s * cos``).
        margin: the cosine margin (0 = plain cross-entropy on the cosine logits).
        label_smoothing: epsilon of the cross-entropy.
    """

    def __init__(self, scale: float, margin: float = 0.25, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.scale, self.margin, self.label_smoothing = scale, margin, label_smoothing

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, C) cosine logits, (B,) labels -> scalar loss."""
        logits = logits.float()
        shifted = logits - self.scale * self.margin * F.one_hot(labels, logits.shape[1]).to(logits.dtype)
        return F.cross_entropy(shifted, labels, label_smoothing=self.label_smoothing)
