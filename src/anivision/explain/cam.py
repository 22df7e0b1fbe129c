"""Grad-CAM and Grad-CAM++ heat maps of a classifier, for CNNs and vision transformers.

The maths is pytorch-grad-cam's (the ``[explain]`` extra); this module picks the layer to
explain and turns its output into a (B, C, h, w) map: a CNN's last feature stage as it is, a
transformer's tokens (class/register tokens dropped) reshaped to the patch grid, channels-last
stages (Swin, some ConvNeXt variants) permuted.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from anivision.errors import AnivisionError
from anivision.extras import require

#: ``--method`` choices and the pytorch-grad-cam class each one uses.
METHODS = {"gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus"}

Reshape = Callable[[torch.Tensor], torch.Tensor]


def _grad_cam():
    return require("pytorch_grad_cam", "explain", "explanations")


def _features(model: nn.Module) -> nn.Module:
    """The feature extractor of a model: a :class:`Classifier`'s backbone, or the model itself."""
    return getattr(model, "backbone", model)


def candidate_layers(model: nn.Module) -> list[nn.Module]:
    """The default target layer first, then (CNNs) the earlier feature stages, deepest first."""
    first = default_target_layer(model)
    net = _features(model)
    rest = []
    for entry in reversed(list(getattr(net, "feature_info", None) or [])):
        try:
            layer = net.get_submodule(entry["module"])
        except (AttributeError, KeyError, TypeError):
            continue
        if layer is not first:
            rest.append(layer)
    return [first, *rest]


def default_target_layer(model: nn.Module) -> nn.Module:
    """The layer to explain: a ViT's last block's first norm, else the last feature stage.

    timm models: transformers with ``blocks`` and ``patch_embed`` use ``blocks[-1].norm1``
    (the standard choice: the norm before the last attention sees every token); EfficientNets
    their final ``bn2`` (after ``conv_head``); other CNNs the module of their last
    ``feature_info`` entry. Any other model: its last module with a 4-D output is found by
    the caller (:func:`resolve_target_layer`).
    """
    net = _features(model)
    blocks = getattr(net, "blocks", None)
    if isinstance(blocks, nn.Sequential) and hasattr(net, "patch_embed") and len(blocks) and hasattr(blocks[-1], "norm1"):
        return blocks[-1].norm1
    if hasattr(net, "conv_head") and isinstance(getattr(net, "bn2", None), nn.Module):
        return net.bn2
    info = getattr(net, "feature_info", None)
    if info is not None:
        try:
            return net.get_submodule(info[-1]["module"])
        except (AttributeError, KeyError, IndexError, TypeError):
            pass
    raise LookupError("no known target layer")


def _probe(model: nn.Module, batch: torch.Tensor, layers: Sequence[nn.Module]) -> list[torch.Tensor | None]:
    """The output of each of ``layers`` on the first image of ``batch`` (no gradients)."""
    outs: list[torch.Tensor | None] = [None] * len(layers)
    hooks = []
    for i, layer in enumerate(layers):
        def hook(_m, _inp, out, i=i):
            if isinstance(out, torch.Tensor):
                outs[i] = out.detach()
        hooks.append(layer.register_forward_hook(hook))
    _forward_first_image(model, batch, hooks)
    return outs


def _forward_first_image(model: nn.Module, batch: torch.Tensor, hooks: list[Any]) -> None:
    """Run ``model`` on the first image of ``batch`` (no gradients), then remove ``hooks``."""
    try:
        with torch.no_grad():
            model(batch[:1])
    finally:
        for h in hooks:
            h.remove()


def _last_spatial_layer(model: nn.Module, batch: torch.Tensor) -> nn.Module:
    """The last module (in execution order) whose output is a (1, C, h, w) map with h, w > 1."""
    order: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda m, _i, out: order.append(m) if isinstance(out, torch.Tensor) and out.ndim == 4 and min(out.shape[2:]) > 1 else None)
             for m in _features(model).modules()]
    _forward_first_image(model, batch, hooks)
    if not order:
        raise AnivisionError(f"{type(model).__name__}: no layer with a spatial output to explain; pass target_layer")
    return order[-1]


def token_reshape(prefix: int, grid: tuple[int, int] | None = None) -> Reshape:
    """(B, N, C) tokens -> (B, C, h, w): drop ``prefix`` class/register tokens, fold the rest."""

    def reshape(x: torch.Tensor) -> torch.Tensor:
        tokens = x[:, prefix:, :]
        n = tokens.shape[1]
        h, w = grid if grid and grid[0] * grid[1] == n else (math.isqrt(n), n // max(1, math.isqrt(n)))
        if h * w != n:
            raise AnivisionError(f"cannot fold {n} tokens into a grid; pass reshape=")
        return tokens.reshape(x.shape[0], h, w, x.shape[2]).permute(0, 3, 1, 2)

    return reshape


def channels_last_reshape(x: torch.Tensor) -> torch.Tensor:
    """(B, h, w, C) -> (B, C, h, w)."""
    return x.permute(0, 3, 1, 2)


def auto_reshape(model: nn.Module, out: torch.Tensor) -> Reshape | None:
    """How to turn the target layer's output ``out`` into (B, C, h, w), or None if it already is."""
    net = _features(model)
    width = int(getattr(net, "num_features", 0) or 0)
    if out.ndim == 3:
        prefix = int(getattr(net, "num_prefix_tokens", 1 if getattr(net, "cls_token", None) is not None else 0))
        grid = getattr(getattr(net, "patch_embed", None), "grid_size", None)
        return token_reshape(prefix, tuple(grid) if grid is not None else None)
    if out.ndim == 4 and width and out.shape[-1] == width and out.shape[1] != width:
        return channels_last_reshape
    if out.ndim == 4:
        return None
    raise AnivisionError(f"target layer output of shape {tuple(out.shape)}: expected (B, C, h, w) or (B, N, C) tokens")


def _grid(out: torch.Tensor | None, fold: Reshape | None) -> int:
    """The smaller side of a layer output's spatial grid (0 when it has none)."""
    if out is None:
        return 0
    try:
        x = fold(out) if fold is not None else out
    except AnivisionError:
        return 0
    return int(min(x.shape[2:])) if x.ndim == 4 else 0


def resolve_target_layer(model: nn.Module, batch: torch.Tensor, target_layer: nn.Module | None, reshape: Reshape | None) -> tuple[nn.Module, Reshape | None]:
    """The layer to explain and the reshape of its output (both found automatically when None).

    Automatically: the default layer, unless its grid is 1 x 1 at this input size (a CNN on a
    small input), then the deepest earlier feature stage with at least 2 x 2 cells.
    """
    if target_layer is not None:
        if reshape is None:
            out = _probe(model, batch, [target_layer])[0]
            if out is None:
                raise AnivisionError(f"target layer {type(target_layer).__name__} gave no tensor output on this model")
            reshape = auto_reshape(model, out)
        return target_layer, reshape
    try:
        layers = candidate_layers(model)
    except LookupError:
        layers = [_last_spatial_layer(model, batch)]
    outs = _probe(model, batch, layers)
    folds = [auto_reshape(model, o) if o is not None and o.ndim in (3, 4) else None for o in outs]
    for layer, out, fold in zip(layers, outs, folds):
        if _grid(out, reshape or fold) >= 2:
            return layer, reshape or fold
    if outs[0] is None:
        raise AnivisionError(f"target layer {type(layers[0]).__name__} gave no tensor output on this model")
    return layers[0], reshape or folds[0]


def explain_batch(
    model: nn.Module, batch: torch.Tensor, targets: Sequence[int], method: str = "gradcam++",
    target_layer: nn.Module | None = None, reshape: Reshape | None = None,
) -> np.ndarray:
    """Class-activation maps of ``model`` for a batch of normalised images.

    Args:
        model: maps (N, 3, H, W) to (N, C) logits (e.g. a :class:`~anivision.models.classifier.Classifier`).
        batch: (N, 3, H, W) float input, as the model sees it (normalised).
        targets: the class index to explain for each image (N ints).
        method: ``"gradcam"`` or ``"gradcam++"``.
        target_layer: the layer whose activations are weighted; found automatically for timm
            CNNs and ViTs (see :func:`default_target_layer`) and any model with a spatial layer.
        reshape: turns that layer's output into (N, C, h, w); automatic for tokens and NHWC.

    Returns:
        (N, H, W) float32 maps in [0, 1] (each normalised to its own maximum), at input resolution.

    Raises:
        AnivisionError: unknown method, a target count that does not match the batch, or
            pytorch-grad-cam not installed (``pip install "anivision[explain]"``).
    """
    if method not in METHODS:
        raise AnivisionError(f"--method {method}: expected one of {', '.join(METHODS)}")
    if batch.ndim != 4 or len(targets) != batch.shape[0]:
        raise AnivisionError(f"explain_batch: {len(targets)} targets for a batch of shape {tuple(batch.shape)}")
    gc = _grad_cam()
    target_cls = require("pytorch_grad_cam.utils.model_targets", "explain", "explanations").ClassifierOutputTarget

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    batch = batch.to(device=device, dtype=torch.float32).contiguous()
    try:
        layer, fold = resolve_target_layer(model, batch, target_layer, reshape)
        cam_cls = getattr(gc, METHODS[method])
        with torch.enable_grad(), cam_cls(model=model, target_layers=[layer], reshape_transform=fold) as cam:
            cam.compute_input_gradient = True  # gradients reach the layer even when the weights are frozen
            maps = cam(input_tensor=batch, targets=[target_cls(int(t)) for t in targets])
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    maps = np.nan_to_num(np.asarray(maps, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(maps, 0.0, 1.0).astype(np.float32)
