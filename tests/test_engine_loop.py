"""The one training loop: a task supplies a step, the loop does the rest."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from anivision.engine.loop import cross_entropy_step, predict, train_one_epoch
from anivision.engine.optim import make_optimizer, param_groups
from anivision.errors import AnivisionError


def _data(n: int = 12, d: int = 4, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, d, generator=g), torch.randint(0, 3, (n,), generator=g))


def test_step_logs_are_batch_weighted_means_and_lr_is_set_per_step():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    opt = torch.optim.SGD(param_groups([("all", model, 0.1)], 0.0))
    seen_lrs, steps = [], []

    def step(m, batch):
        x, y = batch
        seen_lrs.append(opt.param_groups[0]["lr"])
        loss = nn.functional.cross_entropy(m(x), y)
        return loss, {"n": float(len(y))}

    # 10 examples in batches of 4: 4, 4, 2 -> the logged mean of n is (16 + 16 + 4) / 10.
    loader = DataLoader(_data(10), batch_size=4)
    stats = train_one_epoch(model, loader, opt, step, lambda s, g: 0.01 * (s + 1), start_step=5, on_step=steps.append, progress=False)
    assert steps == [5, 6, 7]
    assert seen_lrs == pytest.approx([0.06, 0.07, 0.08])
    assert stats.n_images == 10
    assert stats.logs["n"] == pytest.approx(3.6)
    assert stats.lr == pytest.approx(0.08)


def test_cross_entropy_step_accuracy_matches_predictions():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    opt = make_optimizer("sgd", param_groups([("all", model, 0.0)], 0.0))
    data = _data(12)
    stats = train_one_epoch(model, DataLoader(data, batch_size=5), opt, cross_entropy_step(nn.CrossEntropyLoss()), progress=False)
    with torch.no_grad():
        acc = float((model(data.tensors[0]).argmax(1) == data.tensors[1]).float().mean())
    assert stats.accuracy == pytest.approx(acc)  # lr 0: the model did not change during the epoch
    logits, labels, _ = predict(model, DataLoader(data, batch_size=5), progress=False)
    assert logits.shape == (12, 3) and labels is not None and np.array_equal(labels, data.tensors[1].numpy())


def test_grad_clip_bounds_the_update():
    def one_step(clip):
        model = nn.Linear(4, 1, bias=False)
        nn.init.zeros_(model.weight)
        opt = torch.optim.SGD(model.parameters(), lr=1.0)
        x = torch.full((2, 4), 100.0)

        def step(m, batch):
            return (m(batch[0]) - 1000.0).pow(2).mean(), {}

        train_one_epoch(model, DataLoader(TensorDataset(x, torch.zeros(2)), batch_size=2), opt, step, grad_clip=clip, progress=False)
        return float(model.weight.detach().norm())

    assert one_step(0.5) == pytest.approx(0.5, rel=1e-5)  # lr 1 x clipped gradient norm 0.5
    assert one_step(None) > 1000


def test_non_finite_loss_is_one_clear_error():
    model = nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def step(m, batch):
        return m(batch[0]).sum() * float("nan"), {}

    with pytest.raises(AnivisionError, match="diverged at step 1"):
        train_one_epoch(model, DataLoader(_data(4), batch_size=2), opt, step, progress=False)


def test_images_reach_the_step_channels_last():
    formats = []
    model = nn.Conv2d(3, 2, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)

    def step(m, batch):
        formats.append(batch[0].is_contiguous(memory_format=torch.channels_last))
        return m(batch[0]).mean(), {}

    ds = TensorDataset(torch.randn(4, 3, 8, 8), torch.zeros(4))
    train_one_epoch(model, DataLoader(ds, batch_size=2), opt, step, channels_last=True, progress=False)
    train_one_epoch(model, DataLoader(ds, batch_size=2), opt, step, channels_last=False, progress=False)
    assert formats == [True, True, False, False]


def test_no_weight_decay_on_one_dimensional_parameters():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    model[0].weight.requires_grad_(False)
    groups = param_groups([("net", model, 0.5)], 0.1)
    assert [(len(g["params"]), g["weight_decay"], g["base_lr"], g["part"]) for g in groups] == [(1, 0.1, 0.5, "net"), (3, 0.0, 0.5, "net")]
    trainable = param_groups([("net", model, 0.5)], 0.1, trainable_only=True)
    assert [len(g["params"]) for g in trainable] == [3]  # the frozen weight matrix left out, its group dropped
    recipe = param_groups([("net", model, 0.5)], 0.1, decay_1d=True)  # plain SGD(weight_decay=...) semantics
    assert [g["weight_decay"] for g in recipe] == [0.1, 0.1]
    with pytest.raises(AnivisionError, match="unknown optimizer"):
        make_optimizer("lion", groups)
