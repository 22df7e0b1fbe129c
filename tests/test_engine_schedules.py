"""Learning-rate schedules: pure functions, checked against torch's own schedulers."""

from __future__ import annotations

import pytest
import torch

from anivision.engine.schedules import Plateau, multistep, warmup_constant, warmup_cosine, warmup_step_or_cosine


def _torch_lrs(make, n, step_arg=None):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = make(opt)
    out = []
    for i in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step(*([step_arg[i]] if step_arg else []))
    return out


def test_warmup_cosine():
    assert [warmup_cosine(s, 10, 2, 1.0) for s in (0, 1)] == [0.5, 1.0]
    assert warmup_cosine(2, 10, 2, 1.0) == pytest.approx(1.0)
    assert warmup_cosine(6, 10, 2, 1.0) == pytest.approx(0.5)  # half way through the cosine
    assert warmup_cosine(10, 10, 2, 1.0, min_lr=0.1) == pytest.approx(0.1)
    # Without warm-up it is torch's CosineAnnealingLR, step for step.
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=8, eta_min=0.05), 9)
    assert [warmup_cosine(s, 8, 0, 1.0, 0.05) for s in range(9)] == pytest.approx(ref)


def test_warmup_constant():
    assert [warmup_constant(s, 4, 2.0) for s in range(6)] == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0]
    assert warmup_constant(0, 0, 2.0) == 2.0


def test_multistep_matches_torch():
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=[5, 8], gamma=0.1), 10)
    assert [multistep(e, 10, 1.0, (0.5, 0.8), 0.1) for e in range(10)] == pytest.approx(ref)


def test_warmup_step_or_cosine():
    assert warmup_step_or_cosine(0.0, "step", 0.1, 0.01, (0.4, 0.8)) == pytest.approx(0.01)
    assert warmup_step_or_cosine(0.05, "step", 0.1, 0.01, (0.4, 0.8)) == pytest.approx(0.505)
    assert [warmup_step_or_cosine(p, "step", 0.1, 0.01, (0.4, 0.8)) for p in (0.2, 0.5, 0.9)] == pytest.approx([1.0, 0.1, 0.01])
    assert warmup_step_or_cosine(0.999999, "cosine", 0.0, floor=0.01) == pytest.approx(0.01)
    with pytest.raises(ValueError):
        warmup_step_or_cosine(0.5, "exp")


def test_plateau_matches_reduce_lr_on_plateau():
    values = [1.0, 0.9, 0.95, 0.95, 0.96, 0.97, 0.8, 0.85, 0.85, 0.85, 0.86, 0.9, 0.9]
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, factor=0.2, patience=2, threshold=0.0), len(values), values)
    p = Plateau(factor=0.2, patience=2)
    ours = []
    for v in values:
        ours.append(p.scale)
        p.step(v)
    assert ours == pytest.approx(ref)
    q = Plateau(0.2, 2)
    q.load_state_dict(p.state_dict())
    assert (q.scale, q.best, q.bad) == (p.scale, p.best, p.bad)
