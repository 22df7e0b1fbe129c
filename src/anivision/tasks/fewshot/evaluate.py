"""Few-shot accuracy of a backbone on unseen classes, including the AniWho Table 8 grid.

A backbone is a :class:`BackboneSpec`: a meta-training run (``RUN``) or a timm name and
weights (``--backbone``/``--weights``). Its embeddings of the chosen classes are cached, then
every cell is seeded episodes on them (:func:`~anivision.tasks.fewshot.episodes.episode_accuracy`).

A run's data is the absolute ``data`` of its ``config.json`` (:func:`run_data`); when that
folder is gone (the data moved), ``data`` is given again. On the run's own dataset the default
classes are the run's held-out test classes; on another dataset, every class of it
(:func:`default_class_set`): a meta-trained embedding meets characters it has never seen.

``fewshot.json`` records what was evaluated (:func:`evaluation_key`); an output folder that
holds another evaluation's result is not overwritten unless asked (``force``).
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from torch import nn

from anivision.data.cache import default_cache_dir
from anivision.data.folder import LabeledImages, load_labeled
from anivision.data.transforms import DataConfig
from anivision.embeddings import embed_paths, pick_device
from anivision.errors import AnivisionError
from anivision.files import absolute_path, atomic_write_json, atomic_write_text, same_location
from anivision.models.backbone import DEFAULT_BACKBONE, DEFAULT_WEIGHTS, create_backbone, data_config, read_tensors_named
from anivision.models.protonet import check_distance
from anivision.models.transfer import TransferEmbedding, TransferSpec, parse_parts
from anivision.reports.fewshot import class_list, grid_markdown
from anivision.reports.html import write_html_report
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
    embedding: dict[str, Any] | None = None  # the transfer embedding's parts (TransferSpec.to_dict), None: pooled features


def backbone_spec(run: str | None, backbone: str | None, weights: str | None, img_size: int | None) -> BackboneSpec:
    """Resolve a run folder ``RUN`` or ``--backbone NAME --weights W`` into a :class:`BackboneSpec`.

    Raises:
        AnivisionError: both or neither given, or ``RUN`` is not a finished run.
    """
    if run and (backbone or weights):
        raise AnivisionError("give either RUN (a few-shot run) or --backbone/--weights (an untrained backbone), not both")
    if run:
        r = Path(run)
        for f in ("config.json", "model.safetensors", "classes.json"):
            if not (r / f).exists():
                raise AnivisionError(f"{r}: not a few-shot run ({f} missing; train with 'anivision fewshot train')")
        if isinstance(json.loads((r / "classes.json").read_text()), list):
            return classifier_run_spec(r, img_size)
        cfg = FewShotTrainConfig.load(r / "config.json")
        run_abs = absolute_path(r)
        parts = parse_parts(cfg.parts).to_dict() if cfg.embedding == "transfer" else None
        return BackboneSpec(cfg.backbone, str(Path(run_abs) / "model.safetensors"), int(img_size or cfg.img_size), run=run_abs,
                            distance=cfg.distance, crop_pct=cfg.crop_pct, embedding=parts)
    if not backbone:
        backbone = DEFAULT_BACKBONE
    w = weights or DEFAULT_WEIGHTS
    if Path(w).is_file():
        w = absolute_path(w)
    return BackboneSpec(backbone, w, int(img_size or 128))


def classifier_run_spec(run: Path, img_size: int | None) -> BackboneSpec:
    """The fine-tuned backbone of a classification run (``anivision train``) as an embedding.

    A classifier trained on the characters a user cares about embeds them far apart; its pooled
    features (the head dropped) enrol those characters and reject others (RESULTS section 18).
    The spec names the weights file, not the run, so a gallery rebuilds it like any backbone.

    Raises:
        AnivisionError: ``config.json`` is unreadable or names no backbone.
    """
    try:
        cfg = json.loads((run / "config.json").read_text())
        backbone, size, crop = str(cfg["backbone"]), int(img_size or cfg["img_size"]), float(cfg.get("crop_pct", 1.0))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AnivisionError(f"{run / 'config.json'}: not a classification run's config ({type(exc).__name__}: {exc})") from None
    return BackboneSpec(backbone, str(Path(absolute_path(run)) / "model.safetensors"), size, crop_pct=crop)


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
    """Create the embedding of ``spec`` in eval mode with its :class:`DataConfig`: the backbone, or
    its :class:`TransferEmbedding` with the means saved beside the weights."""
    model = create_backbone(spec.backbone, spec.weights, img_size=spec.img_size)
    base = data_config(model, spec.img_size)
    if spec.embedding is not None:
        model = TransferEmbedding(model, TransferSpec.from_dict(spec.embedding), base.mean, base.std, spec.img_size)
        model.load_means(read_tensors_named(spec.weights, ("part_mean", "concat_mean")), spec.weights)
    model.to(pick_device(device)).eval()
    return model, DataConfig(base.img_size, base.mean, base.std, crop_pct=spec.crop_pct)


# ------------------------------------------------------------------------ which classes


def is_run_dataset(run: str | Path, data: str | Path, classes: Sequence[str] | None = None) -> bool:
    """Whether ``data`` is the dataset ``run`` was meta-trained on.

    It is when it lies where the run's ``config.json`` says, or when it holds every class of the
    run's class split (the data moved or was copied: the run's test classes are there too).

    Args:
        classes: the class names of ``data`` when already known (else they are read).
    """
    recorded = FewShotTrainConfig.load(Path(run) / "config.json").data
    if recorded and same_location(recorded, str(data), moved_ok=False):
        return True
    names = set(classes if classes is not None else load_labeled(data).classes)
    return set(ClassSplit.load(run).part("all")) <= names


def default_class_set(spec: BackboneSpec, data: str | Path, classes: Sequence[str] | None = None) -> str:
    """The classes episodes draw from when none are asked for: ``test`` (the run's held-out classes)
    on a run's own dataset, ``all`` on any other dataset (characters the run has never seen) or
    without a run."""
    return "test" if spec.run and is_run_dataset(spec.run, data, classes) else "all"


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
        raise AnivisionError(f"--class-set {split} needs RUN or --class-split classes.json (which classes are {split} classes)")
    names = ClassSplit.load(source).part(split)
    if not names:
        raise AnivisionError(f"{source}: the class split has no {split} classes")
    return names


def _select(
    images: LabeledImages, split: str, spec: BackboneSpec, class_split: str | None, data: str | Path
) -> tuple[list[int], np.ndarray, list[str]]:
    """:func:`select_classes` of ``split``; a class missing from ``data`` is a one-line error that says which."""
    names = split_classes(images, split, spec.run, class_split)
    present = set(images.classes)
    missing = [c for c in names if c not in present]
    if missing:
        source = class_split or spec.run
        hint = "; without --class-set, a run is evaluated on every class of another dataset" if spec.run and not class_split else ""
        raise AnivisionError(
            f"{data}: {len(missing)} of the {len(names)} {split} classes of {source} are not in this dataset "
            f"({class_list(missing)}; it has {len(images.classes)} classes){hint}"
        )
    if spec.run and split == "all":
        seen = sorted(present & set(ClassSplit.load(spec.run).train))
        if seen:
            log.warning("%d class(es) have the names of the run's training classes (%s): their episodes are not on unseen characters",
                        len(seen), class_list(seen))
    return select_classes(images, names, str(data))


def cell_problem(labels: np.ndarray, n_way: int, k_shot: int, n_query: int, skip_small_classes: bool, names: Sequence[str]) -> str | None:
    """Why a grid cell cannot be filled, in the grid's own terms (the grid chooses N and K), or None.

    The same conditions as :class:`~anivision.data.samplers.EpisodeSampler`, checked first so that
    a cell is marked ``n/a`` with this reason instead of the sampler's advice about flags.
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(names))
    n_classes = int((counts > 0).sum())
    need = k_shot + n_query
    if n_classes < n_way:
        return f"{n_way}-way needs {n_way} classes; there are {n_classes}"
    small = [(names[c], int(n)) for c, n in enumerate(counts) if 0 < n < need]
    if skip_small_classes and n_classes - len(small) < n_way:
        return (f"{n_way}-way {k_shot}-shot needs {n_way} classes with {need} images ({k_shot} support + {n_query} query); "
                f"{n_classes - len(small)} have them")
    if small and not skip_small_classes:
        listed = class_list([f"{c} {n}" for c, n in small], 3)
        return (f"{k_shot}-shot needs {need} images in every class ({k_shot} support + {n_query} query); "
                f"{len(small)} of the {n_classes} classes have fewer: {listed}")
    return None


# ------------------------------------------------------------------------ where results go


def evaluation_name(data: str | Path, class_set: str, cells: Sequence[tuple[int, int]], backbone: str | None = None) -> str:
    """The default output folder name: what was evaluated, e.g. ``fewshot-characters-test-5way-5shot``,
    ``fewshot-tf_efficientnet_lite0-other-all-grid`` (``backbone`` without a run)."""
    p = Path(absolute_path(data))
    name = p.stem if p.suffix.lower() == ".csv" else p.name
    what = "grid" if len(cells) > 1 else f"{cells[0][0]}way-{cells[0][1]}shot"
    parts = ["fewshot", backbone or "", name or "data", class_set, what]
    return re.sub(r"[^\w.+-]+", "_", "-".join(t for t in parts if t))


def evaluation_key(report: dict[str, Any]) -> dict[str, Any]:
    """What a ``fewshot.json`` is the result of (data, classes, model, cells, protocol), not its numbers."""
    cells = report.get("grid") or [report]
    return {
        "data": report.get("data"), "class set": report.get("split"), "class split": report.get("class_split"),
        "run": report.get("run"), "backbone": report.get("backbone"), "weights": None if report.get("run") else report.get("weights"),
        "img size": report.get("img_size"), "distance": report.get("distance"), "seed": report.get("seed"),
        "cells": ", ".join(f"{c.get('n_way')}-way {c.get('k_shot')}-shot" for c in cells),
        "queries": cells[0].get("n_query"), "episodes": cells[0].get("episodes"),
        "skip small classes": bool(report.get("skip_small_classes", False)),
    }


def _same(a: Any, b: Any) -> bool:
    """Equal values; paths (absolute in ``fewshot.json``) as locations, a gone one as moved."""
    if isinstance(a, str) and isinstance(b, str) and (os.path.isabs(a) or os.path.isabs(b)):
        return same_location(a, b)
    return bool(a == b)


def check_out(out: str | Path, key: dict[str, Any], force: bool = False) -> None:
    """Refuse to overwrite ``out/fewshot.json`` written by a different evaluation (the same one again is fine).

    Raises:
        AnivisionError: ``out`` holds the result of another evaluation (the message names the
            differences) or an unreadable ``fewshot.json``, and not ``force``.
    """
    f = Path(out) / "fewshot.json"
    if force or not f.is_file():
        return
    try:
        old = evaluation_key(json.loads(f.read_text()))
    except (OSError, ValueError, AttributeError, TypeError, IndexError):
        raise AnivisionError(f"{f}: not a few-shot result; pass --force to overwrite it, or another --out DIR") from None
    diffs = [f"{k} {old[k]}, not {key[k]}" for k in key if not _same(old[k], key[k])]
    if diffs:
        more = f"; {len(diffs) - 2} more" if len(diffs) > 2 else ""
        raise AnivisionError(f"{out}: holds fewshot.json of another evaluation ({'; '.join(diffs[:2])}{more}); "
                             "pass --force to overwrite it, or another --out DIR")


def _write(out: str | Path, report: dict[str, Any], results: list[dict[str, Any]], common: dict[str, Any]) -> None:
    """``fewshot.json``, ``fewshot.md`` (the N-way x K-shot table; one cell for a single
    evaluation) and ``report.html``."""
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "fewshot.json", report)
    atomic_write_text(out_dir / "fewshot.md", grid_markdown(results, common))
    write_html_report(out_dir / "fewshot.md", title="Few-shot evaluation")


# ------------------------------------------------------------------------ the evaluation


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
    force: bool = False,
) -> dict[str, Any]:
    """Few-shot accuracy ± 95% CI on cached embeddings of unseen classes.

    Args:
        data: class-per-folder dataset (or CSV manifest).
        spec: the backbone (a run or a timm name and weights).
        cells: (n_way, k_shot) pairs; one pair is a single evaluation, several a grid. A grid
            cell that the classes cannot fill is marked ``n/a`` with the reason, not an error.
        n_query: Q per class.
        episodes: T per cell.
        seed: episode seed (cells use the same seed).
        split: the class set, ``train``/``val``/``test``/``unseen``/``all``; default
            :func:`default_class_set` (``test`` on a run's own dataset, else ``all``).
        class_split: ``classes.json`` or run folder defining the split when ``spec`` has no run.
        distance: default: the run's distance, else euclidean.
        skip_small_classes: leave out classes with fewer than K + Q images (else an error).
        out: folder for ``fewshot.json`` (and ``fewshot.md`` for a grid).
        force: overwrite an ``out`` that holds another evaluation's ``fewshot.json`` (else an error).

    Returns:
        With one cell: that cell's result (``accuracy``, ``ci95``, ...) plus common keys; with
        several: ``{"grid": [cells...], ...}``. Either way ``classes`` is the class set
        evaluated on (``excluded_classes`` of a cell: those too small for it). Accuracies are fractions.
    """
    distance = distance or spec.distance
    check_distance(distance)
    images = load_labeled(data)
    split = split or default_class_set(spec, data, images.classes)
    idx, labels, names = _select(images, split, spec, class_split, data)
    common: dict[str, Any] = {
        "data": absolute_path(data), "split": split, "class_split": absolute_path(class_split) if class_split else None,
        "backbone": spec.backbone, "weights": spec.weights, "run": spec.run, "img_size": spec.img_size, "distance": distance,
        "seed": seed, "skip_small_classes": skip_small_classes,
    }
    if out is not None:
        planned = [{"n_way": n, "k_shot": k, "n_query": n_query, "episodes": episodes} for n, k in cells]
        check_out(out, evaluation_key({**common, "grid": planned}), force)
    model, dcfg = build_backbone(spec, device)
    emb = embed_paths(model, [images.paths[i] for i in idx], dcfg, cache_dir=cache_dir or default_cache_dir(), progress=progress)
    if emb.skipped:
        log.warning("skipped %d unreadable image(s), e.g. %s", len(emb.skipped), emb.skipped[0])
    feats, labs = emb.features[emb.valid], labels[emb.valid]
    results = []
    for n_way, k_shot in cells:
        problem = cell_problem(labs, n_way, k_shot, n_query, skip_small_classes, names) if len(cells) > 1 else None
        if problem:
            results.append({"n_way": n_way, "k_shot": k_shot, "n_query": n_query, "episodes": episodes,
                            "accuracy": None, "ci95": None, "note": problem})
        else:
            results.append(episode_accuracy(feats, labs, n_way, k_shot, n_query, episodes, seed, distance, skip_small_classes, names))
    common |= {"img_size": dcfg.img_size, "n_classes": len(names), "classes": names, "n_images": int(len(feats)),
               "n_skipped": len(emb.skipped), "skipped": emb.skipped}
    report: dict[str, Any] = {**results[0], **common} if len(cells) == 1 else {"grid": results, **common}
    if out is not None:
        _write(out, report, results, common)
        report["out"] = str(out)
    return report
