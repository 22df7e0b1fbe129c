"""Re-ID losses against naive loops (pytorch-metric-learning style: one class per loss)."""

from __future__ import annotations

import math

import pytest
import torch

from anivision.models.losses import (
    BatchHardTriplet,
    CosFaceLoss,
    IdTripletLoss,
    WeightedRegularizedTriplet,
    make_triplet,
    weighted_regularized_triplet,
)


def _pk_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 3])  # label 3 has no positive: left out
    return torch.randn(len(labels), 5, generator=g) * 2.0, labels


def _naive_wrt(feat: torch.Tensor, labels: torch.Tensor) -> float:
    f, y, n = feat.tolist(), labels.tolist(), len(labels)
    d = [[math.dist(f[i], f[j]) for j in range(n)] for i in range(n)]
    terms = []
    for i in range(n):
        pos = [j for j in range(n) if y[j] == y[i] and j != i]
        neg = [j for j in range(n) if y[j] != y[i]]
        if not pos or not neg:
            continue
        zp = sum(math.exp(d[i][j]) for j in pos)
        zn = sum(math.exp(-d[i][j]) for j in neg)
        ap = sum(math.exp(d[i][j]) / zp * d[i][j] for j in pos)
        an = sum(math.exp(-d[i][j]) / zn * d[i][j] for j in neg)
        terms.append(math.log1p(math.exp(ap - an)))
    return sum(terms) / len(terms)


def _naive_batch_hard(feat: torch.Tensor, labels: torch.Tensor, margin: float) -> float:
    d = torch.cdist(feat, feat)
    terms = []
    for i in range(len(labels)):
        pos = [d[i, j] for j in range(len(labels)) if labels[j] == labels[i] and j != i]
        neg = [d[i, j] for j in range(len(labels)) if labels[j] != labels[i]]
        if pos and neg:
            terms.append(max(max(pos).item() - min(neg).item() + margin, 0.0))
    return sum(terms) / len(terms)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weighted_regularized_triplet_matches_naive_loop(seed: int) -> None:
    feat, labels = _pk_batch(seed)
    feat.requires_grad_(True)
    loss = WeightedRegularizedTriplet()(feat, labels)
    assert loss.item() == pytest.approx(_naive_wrt(feat.detach(), labels), rel=1e-5)
    loss.backward()
    assert torch.isfinite(feat.grad).all()  # no NaN from the zero self-distances
    assert WeightedRegularizedTriplet()(feat, torch.zeros(9, dtype=torch.long)).item() == 0.0  # no negatives
    unit = torch.nn.functional.normalize(feat.detach(), dim=1)
    assert WeightedRegularizedTriplet(normalize=True)(feat, labels).item() == pytest.approx(_naive_wrt(unit, labels), rel=1e-5)
    # The functional form is the same loss.
    assert weighted_regularized_triplet(feat, labels).item() == pytest.approx(loss.item(), rel=1e-6)


def test_batch_hard_triplet_matches_naive_loop() -> None:
    feat, labels = _pk_batch(3)
    assert BatchHardTriplet(0.3)(feat, labels).item() == pytest.approx(_naive_batch_hard(feat, labels, 0.3), rel=1e-5)
    unit = torch.nn.functional.normalize(feat, dim=1)
    assert BatchHardTriplet(0.3, normalize=True)(feat, labels).item() == pytest.approx(_naive_batch_hard(unit, labels, 0.3), rel=1e-5)


def test_id_triplet_loss_is_the_weighted_sum_in_float32() -> None:
    feat, labels = _pk_batch(4)
    logits = torch.randn(len(labels), 4, generator=torch.Generator().manual_seed(5))
    loss = IdTripletLoss(make_triplet("wrt"), label_smoothing=0.1, id_weight=0.5, triplet_weight=2.0)
    terms = loss(feat.half(), logits.half(), labels)
    naive_ce = sum(
        -sum((0.9 * (c == y) + 0.1 / 4) * math.log(math.exp(z[c]) / sum(math.exp(v) for v in z)) for c in range(4))
        for z, y in zip(logits.half().float().tolist(), labels.tolist())
    ) / len(labels)
    assert terms.id_loss.dtype == torch.float32 and terms.triplet_loss.dtype == torch.float32
    assert terms.id_loss.item() == pytest.approx(naive_ce, rel=1e-5)
    assert terms.triplet_loss.item() == pytest.approx(_naive_wrt(feat.half().float(), labels), rel=1e-5)
    assert terms.total.item() == pytest.approx(0.5 * terms.id_loss.item() + 2.0 * terms.triplet_loss.item(), rel=1e-6)
    assert isinstance(make_triplet("batch_hard", margin=0.2), BatchHardTriplet)
    with pytest.raises(ValueError, match="unknown triplet"):
        make_triplet("lifted")


@pytest.mark.parametrize("margin,smoothing", [(0.0, 0.0), (0.3, 0.0), (0.25, 0.1)])
def test_cosface_is_cross_entropy_after_the_margin_leaves_the_true_logit(margin: float, smoothing: float) -> None:
    g = torch.Generator().manual_seed(3)
    cos = torch.rand(6, 4, generator=g) * 2 - 1
    y = torch.tensor([0, 1, 2, 3, 1, 0])
    scale = 16.0
    expected = 0.0
    for i in range(6):  # naive: -log softmax of s*(cos - m*[c == y]), smoothed over classes
        z = [scale * (cos[i, c].item() - (margin if c == y[i] else 0.0)) for c in range(4)]
        log_z = math.log(sum(math.exp(v) for v in z))
        nll = [log_z - v for v in z]
        expected += (1 - smoothing) * nll[int(y[i])] + smoothing * sum(nll) / 4
    got = CosFaceLoss(scale, margin, smoothing)(scale * cos, y)
    assert got.item() == pytest.approx(expected / 6, rel=1e-5)
    if margin:  # the margin makes winning harder: the loss is above plain cross-entropy
        assert got.item() > CosFaceLoss(scale, 0.0, smoothing)(scale * cos, y).item()
