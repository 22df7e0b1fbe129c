import pytest
import torch

from anivision.models.backbone import create_backbone
from anivision.models.classifier import Classifier
from anivision.strategies import Strategy, backbone_groups, set_train_mode

from conftest import TINY_CNN, TINY_VIT


def _model(name):
    return Classifier(create_backbone(name, "none"), 3)


def _trainable(model):
    return {n for n, p in model.backbone.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("name", [TINY_CNN, TINY_VIT, "resnet10t"])
def test_which_parameters_train(name):
    model = _model(name)
    groups = backbone_groups(model.backbone)
    assert len(groups) >= 3
    all_names = {n for n, _ in model.backbone.named_parameters()}
    assert set().union(*map(set, groups)) == all_names  # every parameter is in a group

    Strategy("linear_probe", groups).apply(model, 0)
    assert _trainable(model) == set()
    assert all(p.requires_grad for p in model.head.parameters())

    Strategy("partial", groups, partial_groups=1).apply(model, 0)
    assert _trainable(model) == set(groups[-1])
    Strategy("partial", groups, partial_groups=2).apply(model, 0)
    assert _trainable(model) == set(groups[-1]) | set(groups[-2])

    Strategy("full", groups).apply(model, 0)
    assert _trainable(model) == all_names

    prog = Strategy("progressive", groups, unfreeze_every=2)
    seen = []
    for epoch in range(2 * len(groups) + 2):
        prog.apply(model, epoch)
        seen.append(_trainable(model))
    assert seen[0] == set() and seen[1] == set()  # head only for the first K epochs
    assert seen[2] == set(groups[-1]) and seen[4] == set(groups[-1]) | set(groups[-2])
    assert seen[-1] == all_names
    for a, b in zip(seen, seen[1:]):
        assert a <= b  # unfreezing only ever adds groups, from the top


def test_progressive_group_limit_and_fraction():
    model = _model(TINY_CNN)
    groups = backbone_groups(model.backbone)
    s = Strategy("progressive", groups, unfreeze_every=1, progressive_groups=2)
    s.apply(model, 10)
    assert _trainable(model) == set(groups[-1]) | set(groups[-2])
    lp = Strategy("linear_probe", groups).max_trainable_fraction(model, 5)
    full = Strategy("full", groups).max_trainable_fraction(model, 5)
    part = Strategy("partial", groups).max_trainable_fraction(model, 5)
    assert 0 < lp < part < full == pytest.approx(1.0)


def test_frozen_batchnorm_keeps_running_stats():
    model = _model(TINY_CNN)
    Strategy("linear_probe", backbone_groups(model.backbone)).apply(model, 0)
    set_train_mode(model)
    bns = [m for m in model.backbone.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns and all(not m.training for m in bns)
    before = [m.running_mean.clone() for m in bns]
    model(torch.randn(4, 3, 32, 32) * 5 + 3)
    assert all(torch.equal(a, m.running_mean) for a, m in zip(before, bns))
    assert model.head.training
