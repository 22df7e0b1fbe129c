"""The one training loop (``train_one_epoch``) and the one inference loop (``predict``).

Every task trains through :func:`train_one_epoch`: classification, few-shot meta-training and
re-ID all supply only a *step*, ``step(model, batch) -> (loss, logs)``, the way Lightning's
``training_step`` does, without the dependency. The loop owns what every task should get:
moving the batch to the device, channels-last, the per-step learning rate, mixed precision
(AMP, CUDA only), gradient clipping, a non-finite-loss guard, progress bars and running means.

It knows nothing about strategies, recipes or run folders: strategies act before each epoch
and :class:`~anivision.engine.run.RunFolder` does the bookkeeping after it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from anivision.errors import AnivisionError
from anivision.progress import progress_bar

#: ``step(model, batch) -> (loss, logs)``: the scalar loss to minimise and per-batch means to log.
StepFn = Callable[[nn.Module, Sequence[torch.Tensor]], "tuple[torch.Tensor, dict[str, float]]"]
#: ``lr_fn(global_step, param_group) -> learning rate`` for that group at that step.
LrFn = Callable[[int, dict], float]


@dataclass
class EpochStats:
    """What one training epoch measured.

    Attributes:
        loss: mean loss over the epoch (weighted by batch size).
        logs: mean of each value the step logged (weighted by batch size).
        n_images: training examples seen (the first dimension of the batch's last tensor).
        seconds: wall time of the epoch.
        lr: learning rate of the first parameter group at the last step.
    """

    loss: float
    logs: dict[str, float] = field(default_factory=dict)
    n_images: int = 0
    seconds: float = 0.0
    lr: float = 0.0

    @property
    def accuracy(self) -> float:
        return float(self.logs.get("acc", float("nan")))

    @property
    def images_per_second(self) -> float:
        return self.n_images / self.seconds if self.seconds > 0 else 0.0


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's global RNG (augmentation, dropout) and return a generator for shuffling."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def to_device(batch: Sequence[Any], device: torch.device, channels_last: bool) -> list[Any]:
    """Move every tensor of ``batch`` to ``device``; 4-D image batches become channels-last."""
    out = []
    for t in batch:
        if isinstance(t, torch.Tensor):
            t = t.to(device, non_blocking=True)
            if channels_last and t.dim() == 4:
                t = t.contiguous(memory_format=torch.channels_last)
        out.append(t)
    return out


def cross_entropy_step(loss_fn: nn.Module) -> StepFn:
    """The classification step: ``loss_fn(model(x), y)``, logging accuracy as ``acc``."""

    def step(model: nn.Module, batch: Sequence[torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        x, y = batch[0], batch[1]
        logits = model(x)
        loss = loss_fn(logits, y)
        return loss, {"acc": float((logits.detach().argmax(1) == y).float().mean())}

    return step


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    step_fn: StepFn,
    lr_fn: LrFn | None = None,
    *,
    device: torch.device | None = None,
    start_step: int = 0,
    amp: bool = False,
    grad_clip: float | None = None,
    channels_last: bool = True,
    on_step: Callable[[int], None] | None = None,
    desc: str = "train",
    progress: bool = True,
) -> EpochStats:
    """Train ``model`` for one pass over ``loader``; the caller sets train mode first.

    Args:
        model: what ``step_fn`` calls (may be wrapped in DDP).
        loader: yields tuples of tensors; the last one's first dimension counts the examples.
        optimizer: each param group may carry ``base_lr`` for ``lr_fn``.
        step_fn: ``(model, batch on device) -> (loss, logs)``.
        lr_fn: per-step learning rate of each param group, or None to leave LRs alone.
        device: where to compute; default: the model's device.
        start_step: global step of the first batch (for the LR schedule and ``on_step``).
        amp: float16 autocast with a gradient scaler; only on CUDA (ignored elsewhere).
        grad_clip: max total gradient norm, or None / 0 for no clipping.
        channels_last: convert 4-D inputs to channels-last (faster convolutions).
        on_step: called with the global step before each batch (tests inject a kill here).
        desc: progress-bar label.
        progress: show a progress bar.

    Raises:
        AnivisionError: the loss is not finite (training diverged).
    """
    device = device or next(model.parameters()).device
    use_amp = bool(amp) and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if use_amp else None
    params = [p for g in optimizer.param_groups for p in g["params"]]
    sums: dict[str, float] = {}
    total_loss = 0.0
    seen = 0
    step = start_step
    t0 = time.perf_counter()
    bar = progress_bar(loader, progress, desc=desc, leave=False, dynamic_ncols=True)
    for batch in bar:
        if on_step is not None:
            on_step(step)
        batch = to_device(batch, device, channels_last)
        if lr_fn is not None:
            for g in optimizer.param_groups:
                g["lr"] = lr_fn(step, g)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
            loss, logs = step_fn(model, batch)
        if not torch.isfinite(loss.detach()):
            raise AnivisionError(f"training diverged at step {step + 1} ({desc}: loss {float(loss.detach())}); lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        bs = int(batch[-1].shape[0]) if isinstance(batch[-1], torch.Tensor) and batch[-1].dim() else 1
        total_loss += float(loss.detach()) * bs
        for k, v in logs.items():
            sums[k] = sums.get(k, 0.0) + float(v) * bs
        seen += bs
        step += 1
        elapsed = time.perf_counter() - t0
        logged = {k: (f"{100 * v / seen:.2f}%" if k == "acc" else f"{v / seen:.3f}") for k, v in sums.items()}
        bar.set_postfix(loss=f"{total_loss / seen:.3f}", **logged, img_s=f"{seen / max(elapsed, 1e-9):.0f}")
    n = max(seen, 1)
    return EpochStats(
        loss=total_loss / n,
        logs={k: v / n for k, v in sums.items()},
        n_images=seen,
        seconds=time.perf_counter() - t0,
        lr=float(optimizer.param_groups[0]["lr"]) if optimizer.param_groups else 0.0,
    )


@torch.inference_mode()
def predict(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device | None = None,
    channels_last: bool = True,
    desc: str = "eval",
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray | None, float]:
    """Run ``model`` in eval mode over ``loader`` (batches ``(x,)`` or ``(x, y)``).

    Returns:
        outputs (N, ...) float32, labels (N,) int64 (None when the batches carry none) and the
        wall time in seconds.
    """
    device = device or next(model.parameters()).device
    model.eval()
    outs, ys = [], []
    t0 = time.perf_counter()
    for batch in progress_bar(loader, progress, desc=desc, leave=False):
        x = to_device(batch[:1], device, channels_last)[0]
        outs.append(model(x).float().cpu())
        if len(batch) > 1 and batch[1] is not None:
            ys.append(torch.as_tensor(batch[1]))
    seconds = time.perf_counter() - t0
    if not outs:
        return np.zeros((0, 0), np.float32), None, seconds
    labels = torch.cat(ys).numpy().astype(np.int64) if ys else None
    return torch.cat(outs).numpy(), labels, seconds


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
