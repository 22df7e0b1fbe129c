"""Extract and cache backbone features; shared by linear probing, few-shot and retrieval.

Frozen features are the expensive part of a linear probe, of few-shot evaluation and of
retrieval evaluation: they are computed once per (backbone, weights, input config, files) and
stored as ``.npy``, so later epochs, seeds, episodes and benchmark cells reuse them.
"""

from __future__ import annotations

import hashlib
import logging
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from anivision.data.cache import DecodedImages, decode_images, files_fingerprint
from anivision.data.datasets import CachedImageDataset
from anivision.data.inputs import ImageInput, check_unreadable, decode_inputs
from anivision.data.transforms import DataConfig, cache_size, eval_transform
from anivision.deploy.runtime import OnnxOutput
from anivision.engine.distributed import torch_device
from anivision.engine.loop import predict
from anivision.files import remove_quietly, sweep_temp_files

log = logging.getLogger(__name__)


@dataclass
class Embeddings:
    """Features of a list of images.

    Attributes:
        features: (N, D) float32; rows of invalid images are zeros.
        valid: (N,) bool, False where the image could not be decoded.
        skipped: paths of the invalid images.
    """

    features: np.ndarray
    valid: np.ndarray
    skipped: list[str]


def model_fingerprint(model: nn.Module) -> str:
    """sha1 over every parameter and buffer: changes whenever the weights change."""
    h = hashlib.sha1()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        t = v.detach().cpu().contiguous().reshape(-1)
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def pick_device(device: str | None = None) -> torch.device:
    """``device`` if given, else CUDA when available, else CPU."""
    if device:
        return torch_device(str(device))
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def forward_batches(
    model: nn.Module | OnnxOutput,
    dataset: CachedImageDataset,
    batch_size: int = 64,
    device: torch.device | None = None,
    desc: str = "embed",
    progress: bool = True,
) -> np.ndarray:
    """Run ``model`` in eval mode over ``dataset`` (the engine's :func:`predict`): (len(dataset), ...) float32."""
    if isinstance(model, OnnxOutput):  # --engine onnx: ONNX Runtime instead of torch (the one place that chooses)
        return model.forward_dataset(dataset, batch_size, desc, progress)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    return predict(model, loader, device, channels_last=True, desc=desc, progress=progress)[0]


@dataclass
class InputFeatures:
    """Outputs of a model for the readable images among some inputs.

    Attributes:
        values: (M, ...) float32 outputs, one row per readable input.
        rows: (M,) positions of those inputs in ``decoded.paths``.
        decoded: every input, decoded (``errors`` names the unreadable ones).
    """

    values: np.ndarray
    rows: np.ndarray
    decoded: DecodedImages

    @property
    def skipped(self) -> dict[str, str]:
        return dict(self.decoded.errors)

    def checked(self, skip_unreadable: bool = False) -> "InputFeatures":
        """Itself, after raising on the first unreadable input (unless ``skip_unreadable``: then
        each one is logged as skipped, never dropped silently).

        Raises:
            AnivisionError: an input could not be read, naming it.
        """
        check_unreadable(self.skipped, skip_unreadable)
        return self


def embed_inputs(
    model: nn.Module, images: ImageInput | Iterable[ImageInput], cfg: DataConfig, batch_size: int = 64,
    device: torch.device | None = None, progress: bool = False, width: int | None = None,
) -> InputFeatures:
    """Outputs of ``model`` for any mix of paths, folders, globs, PIL images and uint8 arrays.

    Images are decoded exactly as training data (:func:`~anivision.data.inputs.decode_inputs`),
    then the eval transform; nothing is cached. ``width`` sizes the empty result when no input
    is readable (default: ``model.num_features``).
    """
    decoded = decode_inputs(images, cache_size(cfg), progress=progress)
    ds = CachedImageDataset(decoded, np.arange(len(decoded.paths)), None, eval_transform(cfg))
    if len(ds) == 0:
        return InputFeatures(np.zeros((0, width or int(getattr(model, "num_features", 0))), np.float32), ds.indices, decoded)
    return InputFeatures(forward_batches(model, ds, batch_size, device, "predict", progress), ds.indices, decoded)


def embed_paths(
    backbone: nn.Module,
    paths: list[str],
    cfg: DataConfig,
    batch_size: int = 64,
    cache_dir: str | Path | None = None,
    device: torch.device | None = None,
    progress: bool = True,
    desc: str = "embed",
    indices: np.ndarray | None = None,
) -> Embeddings:
    """Features of ``paths`` from ``backbone`` (eval transform, no augmentation).

    Args:
        backbone: maps (B, 3, H, W) to (B, D), or to any (B, ...) activations (a frozen prefix).
        paths: image files.
        cfg: input size and normalisation.
        batch_size: images per forward pass.
        cache_dir: feature and decoded-image cache folder; ``None`` disables caching.
        device: where to run; default: the backbone's device.
        progress: show progress bars.
        desc: progress-bar label.
        indices: embed only ``paths[indices]`` (rows in this order); the images are still decoded
            through the cache of the whole ``paths`` list, so a subset reuses that cache.

    Returns:
        (N, D) (or (N, ...)) features with the validity mask; N = ``len(indices)`` when given.
        When no image is readable: (N, ``backbone.num_features``) zeros (0 columns without that
        attribute), every row invalid.
    """
    rows = np.arange(len(paths)) if indices is None else np.asarray(indices, dtype=np.int64)
    feat_path = None
    if cache_dir is not None:
        key_src = json.dumps(
            {
                "model": model_fingerprint(backbone),
                "cfg": [cfg.img_size, list(cfg.mean), list(cfg.std), cfg.crop_pct],
                "files": files_fingerprint(paths),
                **({} if indices is None else {"rows": hashlib.sha1(rows.tobytes()).hexdigest()}),
            }
        )
        key = hashlib.sha1(key_src.encode()).hexdigest()[:20]
        fdir = Path(cache_dir) / "features"
        fdir.mkdir(parents=True, exist_ok=True)
        sweep_temp_files(fdir)  # what a killed process left half-written
        feat_path = fdir / f"{key}.npz"
        if feat_path.exists():
            with np.load(feat_path) as z:
                valid = z["valid"]
                return Embeddings(z["features"], valid, [paths[i] for i, ok in zip(rows, valid) if not ok])
    decoded = decode_images(paths, cache_size(cfg), cache_dir=cache_dir, progress=progress)
    ds = CachedImageDataset(decoded, rows, None, eval_transform(cfg))
    valid = decoded.valid[rows]
    if len(ds) == 0:  # nothing readable: all rows invalid, nothing to run (nor to cache)
        features = np.zeros((len(rows), int(getattr(backbone, "num_features", 0))), dtype=np.float32)
        return Embeddings(features, valid.copy(), [paths[i] for i in rows])
    was_training = backbone.training
    feats_valid = forward_batches(backbone, ds, batch_size=batch_size, device=device, desc=desc, progress=progress)
    backbone.train(was_training)
    shape = feats_valid.shape[1:]
    features = np.zeros((len(rows), *shape), dtype=np.float32)
    features[valid] = feats_valid
    if feat_path is not None:
        tmp = feat_path.with_name(feat_path.name + f".{os.getpid()}.tmp.npz")
        try:
            np.savez(tmp, features=features, valid=valid)
            os.replace(tmp, feat_path)
        except BaseException:  # a full disk or Ctrl-C: no half-written feature file stays behind
            remove_quietly(tmp)
            raise
    return Embeddings(features, valid.copy(), [paths[i] for i, ok in zip(rows, valid) if not ok])
