"""Checkpoints as safetensors (never pickle) plus JSON, written atomically.

A training checkpoint is three files in one folder:
``model.safetensors`` (weights), ``optimizer.safetensors`` (optimizer tensors, flattened) and
``state.json`` (epoch counters, best score, optimizer hyper-parameters, anything JSON-able).
Each file is written to a temporary name and renamed, and ``state.json`` is written last, so a
run killed at any moment leaves either the previous checkpoint or the new one, never a mix.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def atomic_write_csv(path: str | Path, rows: list[dict[str, Any]], fields: list[str], float_format: str = "{:.6f}") -> None:
    """Write ``rows`` (dicts keyed by ``fields``) as CSV, atomically; floats use ``float_format``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: (float_format.format(v) if isinstance(v, float) else v) for k, v in r.items()})
    os.replace(tmp, path)


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


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
        optimizer.load_state_dict(_unflatten_optimizer(load_file(str(folder / "optimizer.safetensors")), state["optimizer"]))
    if "torch_rng" in state:
        torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
    return state
