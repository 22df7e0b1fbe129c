"""The prototypical network as a model object, against naive loops."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from anivision.errors import AnivisionError
from anivision.models.protonet import PrototypicalNetwork, class_prototypes, protonet_logits, prototypes
from anivision.tasks.fewshot import episode_step


def naive_scores(support: torch.Tensor, labels: torch.Tensor, queries: torch.Tensor, distance: str, scale: float) -> torch.Tensor:
    """One prototype, one query at a time: ``-||q - p||^2`` or ``scale * cos(q, p)``."""
    n_classes = int(labels.max()) + 1
    protos = [torch.stack([support[i] for i in range(len(labels)) if labels[i] == c]).mean(0) for c in range(n_classes)]
    out = torch.empty(len(queries), n_classes, dtype=torch.float64)
    for i, q in enumerate(queries):
        for c, p in enumerate(protos):
            if distance == "euclidean":
                out[i, c] = -float(((q - p) ** 2).sum())
            else:
                out[i, c] = scale * float(q @ p / (q.norm() * p.norm()))
    return out


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
@pytest.mark.parametrize("counts", [(3, 3, 3, 3), (1, 4, 2, 5)])
def test_scores_equal_naive_loop(distance: str, counts: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(0)
    labels = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    labels = labels[torch.randperm(len(labels), generator=g)]  # supports in any order
    support = torch.randn(len(labels), 6, generator=g, dtype=torch.float64)
    queries = torch.randn(7, 6, generator=g, dtype=torch.float64)
    net = PrototypicalNetwork(distance=distance, cosine_scale=4.0)
    protos = net.process_support_set(support, labels)
    assert protos.shape == (len(counts), 6) and net.prototypes is protos
    scores = net(queries)
    assert scores.shape == (7, len(counts))
    assert torch.allclose(scores, naive_scores(support, labels, queries, distance, 4.0), rtol=1e-10, atol=1e-10)
    assert torch.allclose(net.distances(queries), -scores if distance == "euclidean" else 1 - scores / 4.0, rtol=1e-10, atol=1e-10)


def test_backbone_embeds_images_and_prototypes_are_not_weights() -> None:
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
    net = PrototypicalNetwork(backbone)
    images, labels = torch.randn(6, 3, 4, 4), torch.tensor([0, 0, 1, 1, 2, 2])
    with torch.no_grad():
        protos = net.process_support_set(images, labels)
        assert torch.equal(protos, class_prototypes(backbone(images), labels))
        assert torch.equal(net(images[:2]), net(backbone(images[:2])))  # images or their embeddings
    assert set(net.state_dict()) == {f"backbone.{k}" for k in backbone.state_dict()}


def test_equal_counts_are_the_episode_mean() -> None:
    """Prototypes of a class-by-class support set are exactly ``prototypes`` of its (N, K, D) view."""
    z = torch.randn(4, 7, 9)
    assert torch.equal(class_prototypes(z[:, :3].reshape(12, -1), torch.arange(4).repeat_interleave(3)), prototypes(z[:, :3]))


def test_errors() -> None:
    with pytest.raises(AnivisionError, match="unknown distance"):
        PrototypicalNetwork(distance="manhattan")
    net = PrototypicalNetwork()
    with pytest.raises(AnivisionError, match="process_support_set first"):
        net(torch.zeros(2, 3))
    with pytest.raises(AnivisionError, match="no support image for class"):
        net.process_support_set(torch.zeros(3, 2), torch.tensor([0, 2, 2]))
    with pytest.raises(AnivisionError, match="without backbone"):
        net.process_support_set(torch.zeros(3, 3, 4, 4), torch.tensor([0, 1, 1]))


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_episode_step_is_protonet_cross_entropy(distance: str) -> None:
    """The meta-training step: one pass over N * (K + Q) images, prototypes of the K supports, CE of the Q queries."""
    torch.manual_seed(0)
    n, k, q = 3, 2, 4
    net = PrototypicalNetwork(nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5)), distance, 10.0)
    x = torch.randn(n * (k + q), 3, 4, 4)
    loss, logs = episode_step(n, k, q)(net, [x, torch.zeros(len(x))])
    z = net.backbone(x).view(n, k + q, -1)
    logits = protonet_logits(z[:, k:].reshape(n * q, -1), prototypes(z[:, :k]), distance, 10.0)
    target = torch.arange(n).repeat_interleave(q)
    assert torch.equal(loss, nn.functional.cross_entropy(logits, target))
    assert logs["acc"] == pytest.approx(float((logits.argmax(1) == target).float().mean()))


def test_prototype_maths_stays_float32_under_autocast() -> None:
    """Mixed precision runs the backbone in half precision; distances (which cancel large squared
    norms) are computed in float32 from the upcast embeddings."""
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
    net = PrototypicalNetwork(backbone)
    images, labels = torch.randn(6, 3, 4, 4), torch.tensor([0, 0, 1, 1, 2, 2])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        z = backbone(images)
        assert z.dtype == torch.bfloat16
        net.process_support_set(images, labels)
        scores = net(images)
    assert net.prototypes.dtype == scores.dtype == torch.float32
    z = z.float()
    assert torch.equal(scores, protonet_logits(z, class_prototypes(z, labels)))
