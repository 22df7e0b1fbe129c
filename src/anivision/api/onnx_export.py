"""``anivision export`` / ``av.export``: a run or gallery as an ONNX file with its sidecar JSON.

What each folder exports (one ``.onnx`` with a dynamic batch axis; input ``image``, a float32
(batch, 3, S, S) NCHW batch, preprocessed as the sidecar says):

- a classification run: ``logits`` (batch, C) and ``embeddings`` (batch, D); class names;
- a few-shot run: ``embeddings``; the run's distance;
- a gallery: ``embeddings``; the characters, prototypes, distance and ``unknown`` threshold;
- a retrieval run: ``embeddings`` of one fold's model (``fold``, default the best by mAP).

INT8 (``int8=True``): static QDQ for convolutional networks, calibrated on ``calibration``
images drawn (seeded) from the run's training split (a gallery: its enrolment images); dynamic
for transformers (see :mod:`anivision.deploy.quantize`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
from safetensors import safe_open
from torch.utils.data import Dataset

from anivision.data.cache import decode_images
from anivision.data.datasets import CachedImageDataset
from anivision.data.folder import load_labeled, scan_class_folders
from anivision.data.reid import load_reid
from anivision.data.splits import read_split, split_indices
from anivision.data.transforms import DataConfig, cache_size, eval_transform
from anivision.deploy import ExportSpec, int8_mode, write_export
from anivision.errors import AnivisionError
from anivision.tasks.classify import ImageClassifier
from anivision.tasks.classify.data import RUN_SPLIT
from anivision.tasks.classify.predictor import classifier_spec
from anivision.tasks.fewshot import FewShotModel, FewShotTrainConfig, Gallery
from anivision.tasks.fewshot.splits import ClassSplit
from anivision.tasks.retrieval import StyleRetriever
from anivision.tasks.retrieval.evaluate import run_data_source
from anivision.tasks.retrieval.search import pick_search_fold

#: Calibration images for static INT8 when none is asked for.
DEFAULT_CALIBRATION = 200


def check_weights_files(folder: str | Path) -> None:
    """Every ``*.safetensors`` weights file of a run (and of its folds) opens and holds whole tensors.

    Raises:
        AnivisionError: a truncated or corrupted file, naming it.
    """
    root = Path(folder)
    for f in sorted([*root.glob("*.safetensors"), *root.glob("fold*/model.safetensors")]):
        try:
            with safe_open(str(f), framework="pt") as fh:
                for key in fh.keys():
                    fh.get_slice(key)
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            raise AnivisionError(f"{f}: corrupted weights file ({str(exc).strip().splitlines()[0][:160]}); retrain or restore it") from exc


def best_fold(run_dir: str | Path) -> int:
    """The trained fold of a retrieval run with the best test mAP (``metrics.json``), else the first trained fold."""
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.json"
    trained = {int(p.parent.name[4:]) for p in run_dir.glob("fold*/model.safetensors") if p.parent.name[4:].isdigit()}
    try:
        folds = json.loads(metrics.read_text()).get("folds", []) if metrics.is_file() else []
        scored = [(float(f["mAP"]), -int(f["fold"])) for f in folds if int(f.get("fold", -1)) in trained and "mAP" in f]
    except (json.JSONDecodeError, TypeError, ValueError):
        scored = []
    return -max(scored)[1] if scored else pick_search_fold(run_dir)


def _pick(paths: list[str], n: int, seed: int = 0) -> list[str]:
    """``n`` seeded-random paths (all when fewer), in their original order."""
    if len(paths) <= n:
        return list(paths)
    keep = np.sort(np.random.default_rng(seed).choice(len(paths), size=n, replace=False))
    return [paths[i] for i in keep]


def training_images(obj: Any) -> tuple[list[str], str]:
    """The images a run (or gallery) was trained on, and where they come from (for messages).

    Raises:
        AnivisionError: the run does not record them, or they are not there any more.
    """
    if isinstance(obj, ImageClassifier):
        split = read_split(obj.run_dir / RUN_SPLIT, verify=False)
        return [split.paths[i] for i in split_indices(split.splits or [])["train"]], f"the training split of {obj.run_dir}"
    if isinstance(obj, Gallery):
        return scan_class_folders(obj.meta["gallery"]).paths, f"the enrolment images {obj.meta['gallery']}"
    if isinstance(obj, FewShotModel):
        if not obj.spec.run:
            raise AnivisionError(f"{obj.spec.backbone}: a bare backbone has no training images to calibrate INT8 with; export a run or a gallery")
        cfg = FewShotTrainConfig.load(Path(obj.spec.run) / "config.json")
        images = load_labeled(cfg.data)
        train = set(ClassSplit.load(obj.spec.run).part("train"))
        return [p for p, y in zip(images.paths, images.labels) if images.classes[y] in train], f"the training classes of {cfg.data}"
    if isinstance(obj, StyleRetriever):
        data = load_reid(run_data_source(obj.run_dir), strict=False)
        works = set(json.loads((obj.run_dir / f"fold{obj.fold}" / "model.json").read_text())["train_works"])
        return [p for p, w in zip(data.paths, data.works) if w in works], f"the fold {obj.fold} training works of {obj.run_dir}"
    raise AnivisionError(f"cannot export a {type(obj).__name__}")


def calibration_set(obj: Any, dcfg: DataConfig, n: int) -> Dataset:
    """Up to ``n`` decoded, normalised training images of ``obj`` (seeded pick).

    Raises:
        AnivisionError: ``n < 1``, or no training image is there and readable.
    """
    if n < 1:
        raise AnivisionError(f"--calibration {n}: static INT8 needs at least 1 calibration image")
    try:
        paths, where = training_images(obj)
    except (AnivisionError, OSError, KeyError) as exc:
        raise AnivisionError(f"--int8 needs calibration images from the run's training data: {exc}") from exc
    present = [p for p in paths if os.path.isfile(p)]  # moved data: one error below, not a warning per file
    decoded = decode_images(_pick(present, n), cache_size(dcfg), cache_dir=None, progress=False)
    rows = np.flatnonzero(decoded.valid)
    if len(rows) == 0:
        raise AnivisionError(f"--int8 needs calibration images: none of {where} is readable ({len(paths)} listed); is the data still there?")
    return CachedImageDataset(decoded, rows, None, eval_transform(dcfg))


def export_spec(obj: Any) -> ExportSpec:
    """What ``obj`` (a loaded run or gallery) exports."""
    if isinstance(obj, ImageClassifier):
        return classifier_spec(obj.model, obj.classes, obj.data_config, obj.run_dir)
    if isinstance(obj, (FewShotModel, StyleRetriever)):
        return obj.runner.spec()
    if isinstance(obj, Gallery):
        return obj.export_spec()
    raise AnivisionError(f"cannot export a {type(obj).__name__}")


def default_out(folder: Path, spec: ExportSpec, int8: bool) -> Path:
    """``RUN/export/<name>.onnx`` (``<name>-int8.onnx`` for INT8)."""
    return folder / "export" / f"{spec.name}{'-int8' if int8 else ''}.onnx"


def export_loaded(
    obj: Any, folder: str | Path, out: str | Path | None = None, int8: bool = False, opset: int | None = None,
    calibration: int = DEFAULT_CALIBRATION,
) -> Path:
    """Export a loaded run or gallery (see :func:`anivision.export`); returns the ``.onnx`` path."""
    spec = export_spec(obj)
    path = Path(out) if out else default_out(Path(folder), spec, int8)
    if opset is not None and not 7 <= opset <= 30:
        raise AnivisionError(f"--opset {opset}: expected an ONNX opset between 7 and 30 (default 18)")
    calib: Callable[[], Dataset] | None = None
    if int8 and int8_mode(spec.module) == "static":
        data = calibration_set(obj, spec.data_config, calibration)  # before the export: a missing data set fails fast
        calib = lambda: data  # noqa: E731
    write_export(spec, path, opset, int8, calib)
    return path
