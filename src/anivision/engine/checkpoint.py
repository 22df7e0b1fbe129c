"""Checkpoints as safetensors (never pickle) plus JSON, written atomically.

A training checkpoint is three files in one folder:
``model.safetensors`` (weights), ``optimizer.safetensors`` (optimizer tensors, flattened) and
``state.json`` (epoch counters, best score, optimizer hyper-parameters, anything JSON-able).
Each file is written to a temporary name and renamed, and ``state.json`` is written last, so a
run killed at any moment leaves either the previous checkpoint or the new one, never a mix.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from anivision.errors import AnivisionError
from anivision.files import atomic_write_json


def save_weights(model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Save a state dict as safetensors, atomically. Shared tensors are cloned (safetensors needs it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    save_file(sd, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def load_weights(model: nn.Module, path: str | Path, strict: bool = True) -> None:
    """Load safetensors weights into ``model``."""
    model.load_state_dict(load_file(str(path)), strict=strict)


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{pid}.{k}"] = v.detach().cpu().contiguous().clone()
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, v in list(tensors.items()) + list(meta["scalars"].items()):
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    folder: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    state: dict[str, Any],
) -> None:
    """Save model, optimizer and JSON ``state`` into ``folder`` (state.json last)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(model, folder / "model.safetensors")
    full = dict(state)
    if optimizer is not None:
        tensors, meta = _flatten_optimizer(optimizer)
        tmp = folder / f"optimizer.safetensors.{os.getpid()}.tmp"
        save_file(tensors, str(tmp))
        os.replace(tmp, folder / "optimizer.safetensors")
        full["optimizer"] = meta
    full["torch_rng"] = torch.get_rng_state().tolist()
    atomic_write_json(folder / "state.json", full)


def load_checkpoint(
    folder: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
) -> dict[str, Any] | None:
    """Restore a checkpoint written by :func:`save_checkpoint`; ``None`` when there is none."""
    folder = Path(folder)
    if not (folder / "state.json").exists():
        return None
    state = json.loads((folder / "state.json").read_text())
    load_weights(model, folder / "model.safetensors")
    if optimizer is not None and "optimizer" in state and (folder / "optimizer.safetensors").exists():
        # Keys a group has now but the saved groups lack (e.g. ``base_lr`` for a checkpoint of an
        # older version) are kept rather than dropped by ``load_state_dict``.
        current = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
        try:
            optimizer.load_state_dict(_unflatten_optimizer(load_file(str(folder / "optimizer.safetensors")), state["optimizer"]))
        except ValueError as exc:  # another parameter-group layout: an older anivision wrote it
            raise AnivisionError(
                f"{folder}: the optimizer state does not fit this version's parameter groups ({exc}); "
                "delete the checkpoint folder to restart this run"
            ) from exc
        for group, before in zip(optimizer.param_groups, current):
            for k, v in before.items():
                group.setdefault(k, v)
    if "torch_rng" in state:
        torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
    return state
