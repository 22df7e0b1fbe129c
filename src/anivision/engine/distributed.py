"""Multi-process training through torchrun and PyTorch DDP (no home-made process management).

Launch any training command under ``torchrun``; each process reads its rank from the
environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``...)::

    torchrun --nproc_per_node 4 -m anivision.cli train --data DIR --out RUN_DIR ...
    torchrun --nnodes 2 --node_rank 0 --master_addr HOST --nproc_per_node 8 -m anivision.cli train ...

Single-process runs (plain ``anivision train``) never touch ``torch.distributed``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from anivision.errors import AnivisionError


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> DistInfo:
    """Join the process group that torchrun describes in the environment (once), or stay single."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        # NCCL for GPUs, gloo for CPU-only machines (and CI).
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def torch_device(requested: str) -> torch.device:
    """The device ``--device`` names, checked: it exists and this machine has it.

    Raises:
        AnivisionError: not a device name, or a GPU this machine does not have.
    """
    try:
        device = torch.device(requested)
    except (RuntimeError, ValueError, TypeError):
        raise AnivisionError(f"--device {requested}: not a device; use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise AnivisionError(f"--device {requested}: this machine has no CUDA GPU that torch can use; use --device cpu")
        if device.index is not None and device.index >= count:
            raise AnivisionError(f"--device {requested}: this machine has {count} CUDA GPU(s) (cuda:0 to cuda:{count - 1})")
    elif device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise AnivisionError(f"--device {requested}: Apple's MPS is not available here; use --device cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise AnivisionError(f"--device {requested}: anivision runs on cpu, cuda or mps")
    return device


def device_for(info: DistInfo, requested: str | None) -> torch.device:
    """One GPU per process under torchrun; otherwise ``requested`` or the default device."""
    if requested:
        return torch_device(requested)
    if torch.cuda.is_available():
        return torch.device(f"cuda:{info.local_rank}" if info.enabled else "cuda")
    return torch.device("cpu")


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
