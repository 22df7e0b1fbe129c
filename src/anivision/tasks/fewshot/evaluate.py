"""Few-shot accuracy of a backbone on unseen classes, including the AniWho Table 8 grid.

A backbone is a :class:`BackboneSpec`: a meta-training run (``--run``) or a timm name and
weights (``--backbone``/``--weights``). Its embeddings of the chosen classes are cached, then
every cell is seeded episodes on them (:func:`~anivision.tasks.fewshot.episodes.episode_accuracy`).

A run's data is the absolute ``data`` of its ``config.json`` (:func:`run_data`); when that
folder is gone (the data moved), ``data`` is given again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from torch import nn

from anivision.data.cache import default_cache_dir
from anivision.data.folder import LabeledImages, absolute_path, load_labeled
from anivision.data.transforms import DataConfig
from anivision.embeddings import embed_paths, pick_device
from anivision.errors import AnivisionError
from anivision.files import atomic_write_json, atomic_write_text
from anivision.models.backbone import DEFAULT_BACKBONE, DEFAULT_WEIGHTS, create_backbone, data_config
from anivision.models.protonet import check_distance
from anivision.reports.fewshot import grid_markdown
from anivision.tasks.fewshot.config import FewShotTrainConfig
from anivision.tasks.fewshot.episodes import episode_accuracy
from anivision.tasks.fewshot.splits import ClassSplit, select_classes

log = logging.getLogger(__name__)

#: The AniWho Table 8 layout: {5, 20}-way x {1, 5}-shot.
GRID_WAYS = (5, 20)
GRID_SHOTS = (1, 5)


@dataclass
class BackboneSpec:
    """A backbone to embed with: a timm name, its weights, and its input config.

    ``weights`` is a weights name or an absolute file path, so that a gallery made with it
    can rebuild the same network later.
    """

    backbone: str
    weights: str
    img_size: int
    run: str | None = None
    distance: str = "euclidean"
    crop_pct: float = 1.0


def backbone_spec(run: str | None, backbone: str | None, weights: str | None, img_size: int | None) -> BackboneSpec:
    """Resolve ``--run RUN`` or ``--backbone NAME --weights W`` into a :class:`BackboneSpec`.

    Raises:
        AnivisionError: both or neither given, or ``RUN`` is not a finished run.
    """
    if run and (backbone or weights):
        raise AnivisionError("give either --run RUN_DIR or --backbone/--weights, not both")
    if run:
        r = Path(run)
        for f in ("config.json", "model.safetensors", "classes.json"):
            if not (r / f).exists():
                raise AnivisionError(f"{r}: not a few-shot run ({f} missing; train with 'anivision fewshot train')")
        cfg = FewShotTrainConfig.load(r / "config.json")
        run_abs = absolute_path(r)
        return BackboneSpec(cfg.backbone, str(Path(run_abs) / "model.safetensors"), int(img_size or cfg.img_size), run=run_abs, distance=cfg.distance, crop_pct=cfg.crop_pct)
    if not backbone:
        backbone = DEFAULT_BACKBONE
    w = weights or DEFAULT_WEIGHTS
    if Path(w).is_file():
        w = absolute_path(w)
    return BackboneSpec(backbone, w, int(img_size or 128))


def run_data(run: str | Path, data: str | Path | None = None) -> str:
    """The dataset a few-shot run is evaluated on: ``data`` when given, else the one it was trained on.

    Raises:
        AnivisionError: the recorded dataset is not there any more (the message says to pass
            ``--data``), or ``data`` does not exist.
    """
    if data:
        if not Path(data).exists():
            raise AnivisionError(f"{data}: no such dataset folder or manifest")
        return str(data)
    recorded = FewShotTrainConfig.load(Path(run) / "config.json").data
    if not recorded or not Path(recorded).exists():
        raise AnivisionError(f"{recorded or run}: the dataset of the run {run} is not there any more; pass its new location with --data DIR")
    return absolute_path(recorded)


def build_backbone(spec: BackboneSpec, device: str | None = None) -> tuple[nn.Module, DataConfig]:
    """Create the backbone of ``spec`` in eval mode with its :class:`DataConfig`."""
    model = create_backbone(spec.backbone, spec.weights, img_size=spec.img_size)
    base = data_config(model, spec.img_size)
    model.to(pick_device(device)).eval()
    return model, DataConfig(base.img_size, base.mean, base.std, crop_pct=spec.crop_pct)


def split_classes(images: LabeledImages, split: str, run: str | None, class_split: str | None) -> list[str]:
    """Class names of ``split`` (``all`` without a class split: every class of ``images``).

    Raises:
        AnivisionError: a split other than ``all`` with neither a run nor a class-split file,
            or a split with no classes.
    """
    if split == "all" and not class_split:
        return list(images.classes)
    source = class_split or run
    if not source:
        raise AnivisionError(f"--split {split} needs --run RUN_DIR or --class-split classes.json (which classes are {split} classes)")
    names = ClassSplit.load(source).part(split)
    if not names:
        raise AnivisionError(f"{source}: the class split has no {split} classes")
    return names


def evaluate_fewshot(
    data: str,
    spec: BackboneSpec,
    cells: Sequence[tuple[int, int]],
    n_query: int = 10,
    episodes: int = 1000,
    seed: int = 0,
    split: str | None = None,
    class_split: str | None = None,
    distance: str | None = None,
    skip_small_classes: bool = False,
    out: str | Path | None = None,
    cache_dir: str | None = None,
    device: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Few-shot accuracy ± 95% CI on cached embeddings of unseen classes.

    Args:
        data: class-per-folder dataset (or CSV manifest).
        spec: the backbone; with a run, its held-out test classes are the default.
        cells: (n_way, k_shot) pairs; one pair is a single evaluation, several a grid. A cell
            that the classes cannot fill is marked ``n/a`` with the reason, not an error.
        n_query: Q per class.
        episodes: T per cell.
        seed: episode seed (cells use the same seed).
        split: ``train``/``val``/``test``/``all`` classes; default ``test`` with a run, else ``all``.
        class_split: ``classes.json`` or run folder defining the split when ``spec`` has no run.
        distance: default: the run's distance, else euclidean.
        skip_small_classes: leave out classes with fewer than K + Q images (else an error).
        out: folder for ``fewshot.json`` (and ``fewshot.md`` for a grid).

    Returns:
        With one cell: that cell's result (``accuracy``, ``ci95``, ...) plus common keys; with
        several: ``{"grid": [cells...], ...}``. Accuracies are fractions.
    """
    distance = distance or spec.distance
    check_distance(distance)
    images = load_labeled(data)
    split = split or ("test" if spec.run else "all")
    idx, labels, names = select_classes(images, split_classes(images, split, spec.run, class_split), data)
    model, dcfg = build_backbone(spec, device)
    emb = embed_paths(model, [images.paths[i] for i in idx], dcfg, cache_dir=cache_dir or default_cache_dir(), progress=progress)
    if emb.skipped:
        log.warning("skipped %d unreadable image(s), e.g. %s", len(emb.skipped), emb.skipped[0])
    feats, labs = emb.features[emb.valid], labels[emb.valid]
    results = []
    for n_way, k_shot in cells:
        try:
            r = episode_accuracy(feats, labs, n_way, k_shot, n_query, episodes, seed, distance, skip_small_classes, names)
        except AnivisionError as exc:
            if len(cells) == 1:
                raise
            r = {"n_way": n_way, "k_shot": k_shot, "n_query": n_query, "episodes": episodes, "accuracy": None, "ci95": None, "note": str(exc)}
        results.append(r)
    common = {
        "data": str(data), "split": split, "backbone": spec.backbone, "weights": spec.weights, "run": spec.run,
        "img_size": dcfg.img_size, "distance": distance, "seed": seed, "n_classes": len(names), "n_images": int(len(feats)),
        "n_skipped": len(emb.skipped), "skipped": emb.skipped,
    }
    report: dict[str, Any] = {**results[0], **common} if len(cells) == 1 else {"grid": results, **common, "classes": names}
    if out is not None:
        out_dir = Path(out)
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out_dir / "fewshot.json", report)
        if len(cells) > 1:
            atomic_write_text(out_dir / "fewshot.md", grid_markdown(results, common))
        report["out"] = str(out_dir)
    return report
