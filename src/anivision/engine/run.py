"""The run folder: same-run rule, resume, best-epoch tracking, rank-0 writes and barriers.

Every task keeps its own loop body (which data, which step, which validation) and hands the
bookkeeping to :class:`RunFolder`, as timm's ``CheckpointSaver`` and accelerate's
``save_state`` do::

    run = RunFolder(cfg.out, cfg)
    if (done := run.finished("metrics.json")) is not None:
        return done                                  # a finished run is reused
    run.claim()                                      # same config, or AnivisionError
    state = run.resume(model, optimizer, BestTracker("max", patience=5))
    for epoch in state.epochs(cfg.epochs):
        stats = train_one_epoch(...)
        if state.tracker.update(val_acc, epoch):
            run.save_weights(model, "model.safetensors")
        run.end_epoch(state, epoch, row, model, optimizer)

A checkpoint (``checkpoint/``) is written after every epoch; ``metrics.jsonl`` mirrors its
history, so lines of an epoch that did not finish are dropped on resume. A run killed at any
moment resumes from its last finished epoch and ends with the same metrics as an unbroken run,
because each epoch reseeds from (seed, epoch).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterator, TypeVar

import torch
from torch import nn

try:
    import fcntl
except ImportError:  # Windows: no flock, run folders are not locked there
    fcntl = None  # type: ignore[assignment]

from anivision.config import RunConfig
from anivision.engine.checkpoint import load_checkpoint, save_checkpoint, save_weights
from anivision.engine.distributed import DistInfo, barrier
from anivision.errors import AnivisionError
from anivision.files import atomic_write_json, atomic_write_text, sweep_temp_files

log = logging.getLogger(__name__)

MODES = ("max", "min", "last")
T = TypeVar("T")
LOCK_NAME = ".lock"
# Lock files this process holds ((device, inode) -> open file): claiming one again in the same
# process (a resumed run, a bench re-run, a folder moved since) is fine; flock would refuse it.
# Keyed by inode, not path, because a moved folder keeps its lock file.
_HELD_LOCKS: dict[tuple[int, int], IO[str]] = {}


def _lock_folder(path: Path) -> IO[str] | None:
    """Take an exclusive, non-blocking flock on ``path/.lock`` and write our pid into it.

    The OS drops the lock when the process dies, so a killed run leaves no stale lock.

    Raises:
        AnivisionError: another process holds the lock.
    """
    if fcntl is None:
        return None
    fh = open(path / LOCK_NAME, "a+", encoding="utf-8")
    st = os.fstat(fh.fileno())
    key = (st.st_dev, st.st_ino)
    if key in _HELD_LOCKS:
        fh.close()
        return None
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.seek(0)
        pid = fh.read().strip() or "unknown"
        fh.close()
        raise AnivisionError(
            f"{path}: another anivision process is using this run folder (pid {pid}); wait for it or choose another --out"
        ) from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()}\n")
    fh.flush()
    _HELD_LOCKS[key] = fh
    return fh


def check_same_config(path: str | Path, config: RunConfig, unreadable_ok: bool = False) -> None:
    """The same-run rule for a saved ``config.json`` at ``path`` (nothing to check when missing).

    Raises:
        AnivisionError: the saved config differs in a key that is not a runtime key, holds a key
            this version does not know, or is not valid JSON (unless ``unreadable_ok``).
    """
    p = Path(path)
    if not p.exists():
        return
    try:
        old = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        if unreadable_ok:
            return
        raise AnivisionError(f"{p}: not valid JSON ({exc.msg}); choose a new --out") from exc
    diff = config.differences(old, source=str(p))
    if diff:
        raise AnivisionError(f"{p.parent}: holds a run with different settings ({', '.join(diff)}); rerun with the original options or choose a new --out")


@dataclass
class BestTracker:
    """The best epoch so far, and early stopping after ``patience`` epochs without a new best.

    Attributes:
        mode: ``max`` (accuracies), ``min`` (losses) or ``last`` (no validation: every epoch is
            the newest best and nothing stops early).
        patience: epochs without improvement before stopping; None never stops.
    """

    mode: str = "max"
    patience: int | None = None
    best: float | None = None
    best_epoch: int = -1
    bad_epochs: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown tracker mode '{self.mode}' (choose {', '.join(MODES)})")

    def update(self, value: float | None, epoch: int) -> bool:
        """Record ``epoch``'s validation ``value``; True when it is the new best.

        ``None`` (no validation this epoch) counts as an improvement: the newest epoch is kept.
        NaN never improves on a number.
        """
        if self.mode == "last" or value is None:
            improved = True
        elif self.best is None or math.isnan(self.best):
            improved = not math.isnan(value)
        else:
            improved = value > self.best if self.mode == "max" else value < self.best
        if improved:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
        else:
            self.bad_epochs += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.mode != "last" and self.patience is not None and self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = state.get("best")
        self.best_epoch = int(state.get("best_epoch", self.best_epoch))
        self.bad_epochs = int(state.get("bad_epochs", 0))


@dataclass
class TrainState:
    """Where a run stands: the next epoch, the per-epoch history, the tracker and task extras."""

    next_epoch: int
    history: list[dict[str, Any]]
    tracker: BestTracker
    stopped: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def resumed(self) -> bool:
        return bool(self.history)

    def epochs(self, last: int) -> Iterator[int]:
        """Epochs still to run, up to ``last`` (exclusive), stopping early when the tracker says so."""
        epoch = self.next_epoch
        while epoch < last and not self.stopped:
            yield epoch
            epoch += 1


class RunFolder:
    """One run's folder and the bookkeeping every task shares.

    Args:
        path: the run folder (made when missing, by rank 0).
        config: the run's config; ``None`` for a sub-folder (a fold) whose config lives above.
        dist: this process's place in a torchrun job; writes happen on rank 0 only.
        metrics_log: per-epoch JSON-lines file kept in step with the checkpoint, or None.
        checkpoint: name of the checkpoint sub-folder.
    """

    def __init__(
        self,
        path: str | Path,
        config: RunConfig | None = None,
        dist: DistInfo | None = None,
        metrics_log: str | None = "metrics.jsonl",
        checkpoint: str = "checkpoint",
    ) -> None:
        self.path = Path(path)
        self.config = config
        self.dist = dist or DistInfo()
        self.metrics_log = metrics_log
        self.checkpoint = checkpoint
        self._lock: IO[str] | None = None
        if self.is_main:
            self.path.mkdir(parents=True, exist_ok=True)

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    def sub(self, name: str, metrics_log: str | None = "metrics.jsonl", checkpoint: str = "checkpoint") -> "RunFolder":
        """A sub-folder (a fold, a pre-training phase) with its own checkpoint and no config."""
        return RunFolder(self.path / name, None, self.dist, metrics_log, checkpoint)

    # ------------------------------------------------------------------ same run

    def check_config(self, name: str = "config.json") -> None:
        """Raise when the folder holds a run with a different config (runtime keys aside)."""
        if self.config is not None:
            check_same_config(self.path / name, self.config)

    def claim(self, name: str = "config.json") -> None:
        """Lock the folder (``.lock``, held until :meth:`release` or the process ends), check the
        same-run rule, then write this run's config (rank 0).

        Raises:
            AnivisionError: another process holds the folder, or it holds a different run.
        """
        if self.is_main:
            self._lock = _lock_folder(self.path) or self._lock
            sweep_temp_files(self.path, recursive=True)  # half-written files of a killed earlier run
            try:
                self.check_config(name)
            except AnivisionError:
                self.release()
                raise
            if self.config is not None:
                atomic_write_json(self.path / name, self.config.to_dict())
        self.barrier()

    def release(self) -> None:
        """Give up the folder's lock taken by :meth:`claim` (the process ending does it too)."""
        if self._lock is not None:
            for key in [k for k, fh in _HELD_LOCKS.items() if fh is self._lock]:
                del _HELD_LOCKS[key]
            self._lock.close()
            self._lock = None

    def finished(self, name: str) -> dict[str, Any] | None:
        """The results file ``name`` of a finished run with this config, else None.

        Raises:
            AnivisionError: the folder holds a different run.
        """
        p = self.path / name
        if not p.exists() or (self.config is not None and not (self.path / "config.json").exists()):
            return None
        self.check_config()
        log.info("%s: run already finished; reusing its %s", self.path, name)
        return json.loads(p.read_text())

    # ------------------------------------------------------------------ writes (rank 0)

    def write_json(self, name: str, obj: Any) -> None:
        if self.is_main:
            atomic_write_json(self.path / name, obj)

    def write_text(self, name: str, text: str) -> None:
        if self.is_main:
            atomic_write_text(self.path / name, text)

    def save_weights(self, model: nn.Module, name: str, metadata: dict[str, str] | None = None) -> None:
        if self.is_main:
            save_weights(model, self.path / name, metadata=metadata)

    def barrier(self) -> None:
        barrier(self.dist)

    def main_first(self, fn: Callable[[], T]) -> T:
        """``fn()`` on rank 0, a barrier, then ``fn()`` on the other ranks.

        For work whose first call fills a cache or writes a file (a split, decoded images, cached
        activations) that the later calls then read instead of computing again.
        """
        result = fn() if self.is_main else None
        self.barrier()
        return fn() if not self.is_main else result  # type: ignore[return-value]

    def alone(self) -> "RunFolder":
        """This folder for rank 0 working alone (no barriers): e.g. a head trained on cached
        features, which takes seconds and needs no other process."""
        return RunFolder(self.path, self.config, DistInfo(), self.metrics_log, self.checkpoint)

    # ------------------------------------------------------------------ epochs

    def resume(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        tracker: BestTracker | None = None,
        first_epoch: int = 0,
    ) -> TrainState:
        """Load the last checkpoint into ``model`` and ``optimizer`` (if any) and say where to go on.

        Keys of the checkpoint's state other than the standard ones are returned in ``extra``
        (a task's own counters, e.g. a plateau schedule's).
        """
        tracker = tracker or BestTracker("last")
        state = load_checkpoint(self.path / self.checkpoint, model, optimizer, recover=self.is_main) or {}
        tracker.load_state_dict(state)
        history = list(state.get("history", []))
        next_epoch = int(state["epoch"]) + 1 if "epoch" in state else first_epoch
        if state:
            log.info("%s: resuming after epoch %d", self.path, int(state["epoch"]))
        standard = {"epoch", "history", "stopped", "optimizer", "torch_rng", "best", "best_epoch", "bad_epochs"}
        extra = {k: v for k, v in state.items() if k not in standard}
        ts = TrainState(next_epoch, history, tracker, bool(state.get("stopped", False)), extra)
        self.rewrite_metrics_log(ts.history)
        return ts

    def rewrite_metrics_log(self, history: list[dict[str, Any]]) -> None:
        """Make the metrics log mirror ``history`` (drops lines of an epoch that did not finish)."""
        if self.metrics_log:
            self.write_text(self.metrics_log, "".join(json.dumps(h) + "\n" for h in history))

    def end_epoch(
        self,
        state: TrainState,
        epoch: int,
        row: dict[str, Any],
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Append ``row`` to the history and the metrics log, checkpoint (rank 0), then a barrier
        so that no rank starts the next epoch before the checkpoint exists."""
        state.history.append(row)
        state.next_epoch = epoch + 1
        state.stopped = state.tracker.should_stop
        if extra:
            state.extra.update(extra)
        if self.is_main:
            if self.metrics_log:
                with open(self.path / self.metrics_log, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(row) + "\n")
            save_checkpoint(
                self.path / self.checkpoint, model, optimizer,
                {"epoch": epoch, **state.tracker.state_dict(), "history": state.history, "stopped": state.stopped, **state.extra},
            )
        self.barrier()
