"""Checkpoints as safetensors (never pickle) plus JSON, written atomically.

A training checkpoint is three files in one folder:
``model.safetensors`` (weights), ``optimizer.safetensors`` (optimizer tensors, flattened) and
``state.json`` (epoch counters, best score, optimizer hyper-parameters, anything JSON-able).

The folder is one atomic unit: :func:`save_checkpoint` writes all three files into a sibling
``<folder>.new-<pid>`` (``state.json`` last, so a ``.new-*`` with it is complete), renames the
current folder to ``<folder>.old-<pid>``, renames the new one into place and removes the old.
A run killed (or out of disk) at any moment leaves either the previous checkpoint or the new
one, never a mix; killed between the two renames, ``<folder>`` is missing and the newest
complete sibling is used instead (:func:`recover_checkpoint` moves it into place).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from anivision.errors import AnivisionError
from anivision.files import atomic_write_json, read_tensors


def save_weights(model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Save a state dict as safetensors, atomically. Shared tensors are cloned (safetensors needs it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    save_file(sd, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def load_weights(model: nn.Module, path: str | Path, strict: bool = True) -> None:
    """Load safetensors weights into ``model``.

    Raises:
        AnivisionError: the file is missing, truncated or damaged, or holds another model's weights.
    """
    try:
        model.load_state_dict(read_tensors(path), strict=strict)
    except RuntimeError as exc:  # missing/unexpected keys or shapes: another model's file
        first = str(exc).strip().splitlines()[0]
        raise AnivisionError(f"{path}: these weights do not fit the model ({first})") from None


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


def _is_complete(folder: Path) -> bool:
    """True when ``folder`` holds a whole checkpoint (``state.json`` is written last)."""
    return (folder / "state.json").is_file() and (folder / "model.safetensors").is_file()


def _epoch(folder: Path) -> float:
    try:
        return float(json.loads((folder / "state.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return -math.inf


def _leftovers(folder: Path) -> list[Path]:
    """Siblings ``<folder>.new-*`` / ``<folder>.old-*`` that an interrupted save left behind."""
    if not folder.parent.is_dir():
        return []
    return sorted(p for p in folder.parent.iterdir() if p.name.startswith((f"{folder.name}.new-", f"{folder.name}.old-")) and p.is_dir())


def _source(folder: Path) -> Path | None:
    """The folder to read a checkpoint from: ``folder``, else its newest complete leftover."""
    if _is_complete(folder):
        return folder
    complete = [p for p in _leftovers(folder) if _is_complete(p)]
    return max(complete, key=_epoch) if complete else None


def recover_checkpoint(folder: str | Path) -> None:
    """Finish a save that was interrupted: when ``folder`` is missing (a kill between the two
    renames), move its newest complete ``.new-*``/``.old-*`` sibling into place; then remove
    every leftover sibling. Only the process that writes checkpoints (rank 0) may call this."""
    folder = Path(folder)
    if not folder.exists():
        best = _source(folder)
        if best is not None:
            os.replace(best, folder)
    for p in _leftovers(folder):
        shutil.rmtree(p, ignore_errors=True)


def save_checkpoint(
    folder: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    state: dict[str, Any],
) -> None:
    """Save model, optimizer and JSON ``state`` as the checkpoint ``folder``, atomically as a whole."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    recover_checkpoint(folder)
    new = folder.with_name(f"{folder.name}.new-{os.getpid()}")
    old = folder.with_name(f"{folder.name}.old-{os.getpid()}")
    new.mkdir()
    save_weights(model, new / "model.safetensors")
    full = dict(state)
    if optimizer is not None:
        tensors, meta = _flatten_optimizer(optimizer)
        save_file(tensors, str(new / "optimizer.safetensors"))
        full["optimizer"] = meta
    full["torch_rng"] = torch.get_rng_state().tolist()
    atomic_write_json(new / "state.json", full)
    if folder.exists():
        os.replace(folder, old)
    os.replace(new, folder)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(
    folder: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    recover: bool = False,
) -> dict[str, Any] | None:
    """Restore a checkpoint written by :func:`save_checkpoint`; ``None`` when there is none.

    With ``recover`` (the writing process only), an interrupted save is first finished by
    :func:`recover_checkpoint`; without it the newest complete leftover is read in place.
    """
    folder = Path(folder)
    if recover:
        recover_checkpoint(folder)
    for attempt in range(3):
        source = _source(folder)
        if source is None:
            return None
        try:
            return _load_from(source, model, optimizer)
        except FileNotFoundError:  # rank 0 moved a leftover into place meanwhile: look again
            if attempt == 2:
                raise
    return None


def _load_from(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
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
