"""One plain training loop: ``train_one_epoch`` and ``evaluate``.

The loop knows nothing about strategies or recipes: it gets a model, a loader, an optimizer,
a per-step learning-rate function and a loss. Strategies act before each epoch.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm


@dataclass
class EpochStats:
    """What one training epoch measured."""

    loss: float
    accuracy: float
    n_images: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.n_images / self.seconds if self.seconds > 0 else 0.0


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float = 0.0) -> float:
    """Learning rate at ``step``: linear warmup from ~0 to ``base_lr``, then cosine to ``min_lr``."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / span)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's global RNG (augmentation, dropout) and return a generator for shuffling."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _debug_kill(step: int) -> None:
    # Test hook: simulate a run killed mid-epoch (power cut, OOM killer) at a given global step.
    at = os.environ.get("ANIVISION_KILL_AT_STEP")
    if at is not None and step == int(at):
        os._exit(137)


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    device: torch.device,
    lr_at_step: Callable[[int, dict], float] | None = None,
    start_step: int = 0,
    grad_clip: float | None = None,
    channels_last: bool = True,
    desc: str = "train",
    progress: bool = True,
) -> EpochStats:
    """Train ``model`` for one pass over ``loader``.

    Args:
        model: maps a (B, ...) batch to (B, C) logits; put in train mode by the caller.
        loader: yields ``(x, y)`` with x (B, ...) and y (B,) int64.
        optimizer: its param groups may carry a ``base_lr``; ``lr_at_step(step, group)`` sets ``lr``.
        loss_fn: ``(logits, y) -> scalar``.
        device: where to compute.
        lr_at_step: per-step learning rate for each param group, or None to leave LRs alone.
        start_step: global step number of the first batch (for the LR schedule).
        grad_clip: max total gradient norm, or None.
        channels_last: convert 4-D inputs to channels-last memory format (faster convolutions).
        desc: progress-bar label.
        progress: show a progress bar.

    Returns:
        Mean loss, accuracy, image count and wall time of the epoch.
    """
    total_loss = 0.0
    correct = 0
    seen = 0
    step = start_step
    t0 = time.perf_counter()
    bar = tqdm(loader, desc=desc, disable=None if progress else True, leave=False, dynamic_ncols=True)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for x, y in bar:
        _debug_kill(step)
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if lr_at_step is not None:
            for g in optimizer.param_groups:
                g["lr"] = lr_at_step(step, g)
        logits = model(x)
        loss = loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], grad_clip)
        optimizer.step()
        bs = y.shape[0]
        total_loss += float(loss.detach()) * bs
        correct += int((logits.detach().argmax(1) == y).sum())
        seen += bs
        step += 1
        elapsed = time.perf_counter() - t0
        bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}", img_s=f"{seen / max(elapsed, 1e-9):.0f}")
    seconds = time.perf_counter() - t0
    return EpochStats(loss=total_loss / max(seen, 1), accuracy=correct / max(seen, 1), n_images=seen, seconds=seconds)


@torch.inference_mode()
def predict_logits(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    channels_last: bool = True,
    desc: str = "eval",
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Run ``model`` in eval mode over ``loader``.

    Returns:
        logits (N, C) float32, labels (N,) int64 and the wall time in seconds.
    """
    model.eval()
    outs, ys = [], []
    t0 = time.perf_counter()
    for x, y in tqdm(loader, desc=desc, disable=None if progress else True, leave=False):
        x = x.to(device, non_blocking=True)
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        outs.append(model(x).float().cpu())
        ys.append(torch.as_tensor(y))
    seconds = time.perf_counter() - t0
    if not outs:
        return np.zeros((0, 0), np.float32), np.zeros((0,), np.int64), seconds
    return torch.cat(outs).numpy(), torch.cat(ys).numpy().astype(np.int64), seconds


def softmax_np(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (N, C) logits, numerically stable."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def evaluate_loss_acc(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of (N, C) logits against (N,) labels."""
    if len(labels) == 0:
        return float("nan"), float("nan")
    t = torch.from_numpy(logits)
    loss = float(nn.functional.cross_entropy(t, torch.from_numpy(labels)))
    acc = float((logits.argmax(1) == labels).mean())
    return loss, acc
