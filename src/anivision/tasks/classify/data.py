"""What a classification run trains on, decided once.

The split comes first (:func:`prepare_split`): a run always keeps its own ``split.csv``, with
the absolute data root in a ``root`` column and every image path relative to it (see
:mod:`anivision.data.splits`). Everything after the first start reads that copy, never the
``--split`` file the user gave, so the run folder is self-contained: it works from any working
directory and wherever it is moved. When the recorded root is gone (the data moved), the root
of ``--data`` (train) or ``data_root`` (evaluate) replaces it, and the sha1s prove the images
are the same.

A run trains one of three things, and :func:`training_sets` picks it a single time:

- ``features``: a linear probe on cached frozen-backbone features (the backbone runs once per
  image, ever; the head trains in seconds);
- ``prefix``: partial fine-tuning on cached activations of the frozen bottom of the backbone
  (``--prefix-cache``: the top trains, the bottom runs once per image);
- ``images``: everything else, through the decoded-image cache with augmentation.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from anivision.data.cache import DecodedImages, decode_images, default_cache_dir
from anivision.data.datasets import CachedImageDataset
from anivision.data.folder import LabeledImages, data_root, images_root, load_labeled, read_manifest
from anivision.data.splits import parse_ratios, read_split, split_indices, split_root, stratified_split, write_split
from anivision.data.transforms import DataConfig, cache_size, eval_transform, train_transform
from anivision.embeddings import embed_paths
from anivision.engine.run import RunFolder
from anivision.errors import AnivisionError
from anivision.models.classifier import Classifier
from anivision.models.split import split_frozen_prefix
from anivision.strategies import Strategy
from anivision.tasks.classify.config import TrainConfig
from anivision.tasks.classify.model import classifier_optimizer

log = logging.getLogger(__name__)

KINDS = ("features", "prefix", "images")


#: The run's own split file (always written: a copy of ``--split``, a manifest's split, or a new one).
RUN_SPLIT = "split.csv"
#: What a run whose data moved needs (appended to missing-image errors).
MOVED_HINT_TRAIN = "; if the data moved, rerun with --data pointing at its new folder"
#: What an evaluation whose data moved needs (appended to missing-image errors).
MOVED_HINT_EVALUATE = "; if the data moved, pass its new folder as data_root (anivision evaluate RUN --data-root DIR)"


def run_split(run_dir: Path, cfg: TrainConfig, data_root: str | Path | None) -> LabeledImages:
    """The run's split: its own ``split.csv``; for a run made before runs kept one, ``cfg.split``
    or the ``split`` column of a ``cfg.data`` manifest."""
    saved = run_dir / RUN_SPLIT
    if saved.exists() or not (cfg.split or cfg.data):
        return read_split(saved, root=data_root, hint=MOVED_HINT_EVALUATE)
    if cfg.split:
        return read_split(cfg.split, root=data_root, hint=MOVED_HINT_EVALUATE)
    images = load_labeled(cfg.data)
    if images.splits is None:
        raise AnivisionError(f"{run_dir}: no {RUN_SPLIT} (the run's test split is unknown)")
    return images


def split_paths(run_dir: str | Path, cfg: TrainConfig, name: str, data_root: str | Path | None = None) -> list[str]:
    """Paths of one part (``train``/``val``/``test``) of a run's split (see :func:`run_split`)."""
    split = run_split(Path(run_dir), cfg, data_root)
    return [split.paths[i] for i in split_indices(split.splits or []).get(name, [])]


def prepare_split(cfg: TrainConfig, run_dir: Path) -> LabeledImages:
    """The labelled images with their train/val/test assignment, from the run's own ``split.csv``.

    On the first start the split is ``cfg.split`` (a frozen split CSV), a CSV manifest's
    ``split`` column, or a stratified split with ``cfg.ratios`` and ``cfg.seed``;
    :func:`keep_split` saves it as ``run_dir/split.csv`` once training starts, so a run that
    failed before (bad images, no test image) leaves no split that a rerun on fixed data would
    silently reuse. A resumed run reads that copy; when its recorded root is gone, the images
    are looked for under the root of ``cfg.data`` (``--data NEW``) instead.

    Raises:
        AnivisionError: no split can be made, or an image is missing or changed.
    """
    saved = run_dir / RUN_SPLIT
    if saved.exists():
        moved = cfg.data and not Path(split_root(saved)).is_dir()
        return read_split(saved, root=data_root(cfg.data) if moved else None, hint=MOVED_HINT_TRAIN)
    if cfg.split:
        images = read_split(cfg.split)
    else:
        images = load_labeled(cfg.data)
        if images.splits is None:
            images.splits = stratified_split(images.labels, images.classes, parse_ratios(cfg.ratios), cfg.seed)
    return images


def keep_split(cfg: TrainConfig, run: RunFolder, images: LabeledImages) -> None:
    """Save the split of a run that starts training as the run's own ``split.csv`` (rank 0; a
    resumed run has it already). Called right before the first epoch: only a run that started
    training keeps its split."""
    saved = run.path / RUN_SPLIT
    if run.is_main and not saved.exists():
        write_split(images, images.splits or [], saved, root=images_root(images.paths, cfg.data or None))


def check_new_data(cfg: TrainConfig, run_dir: Path) -> None:
    """Before a new run claims its folder, the cheap checks of its data source (no image is read):
    a ``--split`` file or a manifest ``--data`` must parse (no repeated image, no blank split
    cell), and a ``--split`` given with ``--data`` must be a split of that data
    (:func:`check_split_in_data`). A run that has its own ``split.csv`` is not checked: there
    ``--data`` says where moved images now lie.
    """
    if (run_dir / RUN_SPLIT).exists():
        return
    if cfg.split:
        images = read_split(cfg.split, verify=False)
        if cfg.data:
            check_split_in_data(images, cfg.split, cfg.data)
    elif cfg.data and Path(cfg.data).suffix.lower() == ".csv":
        read_manifest(cfg.data)


def check_split_in_data(images: LabeledImages, split: str, data: str) -> None:
    """Refuse a ``--split`` whose images are not those of ``--data`` (else the split silently
    wins and ``config.json`` records another dataset).

    Every image must lie under the ``--data`` folder, or, for a manifest, be one of its rows.

    Raises:
        AnivisionError: naming the first image that is not part of ``--data``.
    """
    if Path(data).suffix.lower() == ".csv":
        rows = {os.path.realpath(p) for p in load_labeled(data).paths}
        inside = [os.path.realpath(p) in rows for p in images.paths]
        where = f"a row of the manifest {data}"
    else:
        root = os.path.realpath(data_root(data)).rstrip(os.sep) + os.sep
        inside = [os.path.realpath(p).startswith(root) for p in images.paths]
        where = f"under the --data folder {data}"
    bad = next((p for p, ok in zip(images.paths, inside) if not ok), None)
    if bad is not None:
        raise AnivisionError(f"--split {split}: image {bad} is not {where}; give the split of this dataset, or only one of --split and --data")


@dataclass
class RunData:
    """The run's images, decoded once, and the readable indices of each split part."""

    images: LabeledImages
    decoded: DecodedImages
    parts: dict[str, np.ndarray]

    @property
    def labels(self) -> np.ndarray:
        return np.asarray(self.images.labels, dtype=np.int64)


def load_data(cfg: TrainConfig, run: RunFolder, dcfg: DataConfig, images: LabeledImages, progress: bool) -> RunData:
    """Decode every image once (listing unreadable ones in ``skipped.txt``) and index the parts.

    Raises:
        AnivisionError: no readable training image, or no test image.
    """
    decoded = decode_images(images.paths, cache_size(dcfg), cache_dir=cfg.cache_dir or default_cache_dir(), progress=progress)
    parts = {k: np.asarray([i for i in v if decoded.valid[i]], dtype=np.int64) for k, v in split_indices(images.splits or []).items()}
    skipped = {**images.unreadable, **decoded.errors}  # dangling links, then files that failed to decode
    if skipped:
        run.write_text("skipped.txt", "\n".join(skipped.values()) + "\n")
    if len(parts["train"]) == 0:
        raise AnivisionError(f"{cfg.data}: no readable training images")
    if len(parts["test"]) == 0:
        raise AnivisionError(f"{cfg.split or cfg.data}: the split has no test images")
    return RunData(images, decoded, parts)


@dataclass
class TrainingSets:
    """What the epochs train, on what.

    Attributes:
        kind: one of :data:`KINDS`.
        train_set: training examples ``(x, y)``.
        val_set: validation examples (may be empty).
        trained: the module the loop calls (the head, the backbone's suffix + head, or the
            whole classifier); it shares its parameters with the classifier.
        optimizer: over every parameter ``trained`` may ever train.
        features: (N, D) cached features of every image (``features`` only), for the test pass.
    """

    kind: str
    train_set: Dataset
    val_set: Dataset
    trained: nn.Module
    optimizer: torch.optim.Optimizer
    features: torch.Tensor | None = None


def training_sets(
    cfg: TrainConfig, model: Classifier, dcfg: DataConfig, data: RunData, strategy: Strategy,
    run: RunFolder, device: torch.device, progress: bool,
) -> TrainingSets:
    """Choose the training source once (see the module docstring) and build its datasets."""
    if cfg.strategy == "linear_probe" and cfg.feature_cache:
        return _feature_sets(cfg, model, dcfg, data, device, progress)
    if cfg.strategy == "partial" and cfg.prefix_cache:
        return _prefix_sets(cfg, model, dcfg, data, strategy, run, device, progress)
    labels = data.labels
    return TrainingSets(
        "images",
        CachedImageDataset(data.decoded, data.parts["train"], labels, train_transform(dcfg, cfg.aug)),
        CachedImageDataset(data.decoded, data.parts["val"], labels, eval_transform(dcfg)),
        model,
        classifier_optimizer(cfg, model.head, model.backbone),
    )


def _feature_sets(cfg: TrainConfig, model: Classifier, dcfg: DataConfig, data: RunData, device: torch.device, progress: bool) -> TrainingSets:
    # Linear probe on cached frozen features: the backbone runs once per image, ever.
    feats = embed_paths(model.backbone, data.images.paths, dcfg, batch_size=64, cache_dir=cfg.cache_dir or default_cache_dir(), device=device, progress=progress)
    feats_t = torch.from_numpy(feats.features)
    labels = torch.from_numpy(data.labels)

    def part(name: str) -> TensorDataset:
        idx = data.parts[name]
        return TensorDataset(feats_t[idx], labels[idx])

    return TrainingSets("features", part("train"), part("val"), model.head, classifier_optimizer(cfg, model.head, None), feats_t)


def _prefix_sets(
    cfg: TrainConfig, model: Classifier, dcfg: DataConfig, data: RunData, strategy: Strategy,
    run: RunFolder, device: torch.device, progress: bool,
) -> TrainingSets:
    # Partial fine-tuning without augmentation: the frozen bottom of the backbone gives every
    # image the same activation in every epoch, so it runs once (cached on disk like features)
    # and each epoch trains only the top. Rank 0 fills the cache; the other ranks read it.
    strategy.apply(model, 0)
    prefix, suffix, n_prefix = split_frozen_prefix(model.backbone, model.head)
    # Only training and validation images need activations: the test split is scored once by
    # the whole network with the best weights.
    tv = np.concatenate([data.parts["train"], data.parts["val"]])
    check_prefix_memory(prefix, dcfg, len(tv), device)
    cache = cfg.cache_dir or default_cache_dir()
    acts = run.main_first(lambda: embed_paths(
        prefix, data.images.paths, dcfg, batch_size=64, cache_dir=cache, device=device,
        progress=progress and run.is_main, desc="frozen prefix", indices=tv,
    ))
    acts_t = torch.from_numpy(acts.features)
    log.info("partial: %d frozen stage(s) cached, activations %s per image", n_prefix, tuple(acts_t.shape[1:]))
    n_train = len(data.parts["train"])
    labels = data.labels
    return TrainingSets(
        "prefix",
        TensorDataset(acts_t[:n_train], torch.from_numpy(labels[data.parts["train"]])),
        TensorDataset(acts_t[n_train:], torch.from_numpy(labels[data.parts["val"]])),
        suffix,
        classifier_optimizer(cfg, model.head, model.backbone),
    )


def memory_budget_bytes() -> int | None:
    """Half the machine's physical memory (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (AttributeError, ValueError, OSError):
        return None


def check_prefix_memory(prefix: nn.Module, dcfg: DataConfig, n_images: int, device: torch.device) -> None:
    """Refuse a prefix cache that would not fit in memory, before computing any of it.

    The activations are held as float32 (N, ...) in RAM: tiny for a high cut of a small CNN
    (Lite0 at 128 px: 12 KB per image) but large for a low cut or a ViT at 224 px
    (197 x 768 floats = 0.6 MB per image for ViT-B/16).
    """
    budget = memory_budget_bytes()
    if budget is None:
        return
    was_training = prefix.training
    prefix.eval()
    with torch.inference_mode():
        shape = prefix(torch.zeros(1, 3, dcfg.img_size, dcfg.img_size, device=device)).shape[1:]
    prefix.train(was_training)
    need = n_images * math.prod(shape) * 4
    if need > budget:
        raise AnivisionError(
            f"--prefix-cache: the frozen prefix's activations {tuple(shape)} would take {need / 2**30:.1f} GiB for "
            f"{n_images} images, more than half this machine's memory; train without --prefix-cache, with fewer "
            "--partial-groups or at a smaller --img-size"
        )
