"""Learning-rate schedules as pure functions of the step or epoch.

A pure function needs no scheduler state in the checkpoint: a resumed run asks for the rate at
its step and gets exactly what an uninterrupted run had. Only :class:`Plateau` depends on
validation history, so it is a tiny object whose state the checkpoint keeps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float = 0.0) -> float:
    """Linear warmup from ``base_lr / warmup_steps`` to ``base_lr``, then cosine down to ``min_lr``."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / span)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))


def warmup_constant(step: int, warmup_steps: int, base_lr: float) -> float:
    """Linear warmup to ``base_lr``, then constant."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    return base_lr


def multistep(epoch: int, epochs: int, base_lr: float, milestones: Sequence[float] = (0.5, 0.8), gamma: float = 0.1) -> float:
    """``MultiStepLR`` with milestones given as fractions of ``epochs``.

    With 100 epochs and (0.5, 0.8) the rate drops at epochs 50 and 80 (0-based), as
    ``MultiStepLR(milestones=[50, 80])``.
    """
    steps = [max(1, int(round(m * epochs))) for m in milestones]
    return base_lr * gamma ** sum(epoch >= s for s in steps)


def warmup_step_or_cosine(
    progress: float, schedule: str, warmup_frac: float = 0.0, warmup_start: float = 0.01,
    milestones: Sequence[float] = (), floor: float = 0.01,
) -> float:
    """A learning-rate *factor* at ``progress`` in [0, 1) of training (re-ID recipes).

    Linear warm-up from ``warmup_start`` to 1 over the first ``warmup_frac``, then ``step``
    (x0.1 at each milestone fraction) or ``cosine`` (down to ``floor``).
    """
    if warmup_frac > 0 and progress < warmup_frac:
        return warmup_start + (1.0 - warmup_start) * progress / warmup_frac
    if schedule == "step":
        return 0.1 ** sum(progress >= m for m in milestones)
    if schedule == "cosine":
        u = (progress - warmup_frac) / max(1.0 - warmup_frac, 1e-8)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(max(u, 0.0), 1.0)))
    raise ValueError(f"unknown schedule '{schedule}' (choose step or cosine)")


@dataclass
class Plateau:
    """ReduceLROnPlateau as a scale factor: ``scale *= factor`` after ``patience`` epochs without a
    new best (lower is better; pass ``-accuracy`` for accuracies).

    ``state_dict`` / ``load_state_dict`` keep the counters in the checkpoint.
    """

    factor: float = 0.2
    patience: int = 3
    scale: float = 1.0
    best: float | None = None
    bad: int = 0

    def step(self, value: float) -> float:
        """Record one epoch's value; return the (possibly reduced) scale."""
        if self.best is None or value < self.best:
            self.best, self.bad = value, 0
        else:
            self.bad += 1
            if self.bad > self.patience:
                self.scale *= self.factor
                self.bad = 0
        return self.scale

    def state_dict(self) -> dict[str, Any]:
        # The layout of checkpoints written before the engine existed: {"plateau": {best, bad}, "plateau_scale"}.
        return {"plateau": {"best": self.best, "bad": self.bad}, "plateau_scale": self.scale}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        p = state.get("plateau") or {}
        self.best, self.bad = p.get("best"), int(p.get("bad", 0))
        self.scale = float(state.get("plateau_scale", 1.0))
