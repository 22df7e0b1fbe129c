"""The Python API: load any run folder, predict on any images, train as the CLI does.

::

    import anivision as av
    clf = av.load("runs/emo-full")                     # a classification run
    clf.predict(["a.png", pil_image, uint8_array], top_k=3)
    clf.embed("more_images/")                          # (N, D) float32
    clf = av.train(data="data/emotions", strategy="full", epochs=6, out="runs/x")
    gallery = av.enroll("runs/proto", "my_characters/", k_shot=5)   # a few-shot run or a backbone
    gallery.identify(images)
    av.retrieval.load("runs/style").search(images, gallery="data/style", top_k=5)

Every call goes through the same functions as the ``anivision`` command line, with the same
preprocessing, batched, silent (no progress bars unless ``progress=True``, no printing).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from anivision.api import fewshot, retrieval
from anivision.api.fewshot import enroll
from anivision.api.onnx_export import DEFAULT_CALIBRATION, best_fold, check_weights_files, export_loaded
from anivision.errors import AnivisionError
from anivision.tasks.embed import EmbeddedCollection, embed_collection, embedding_source, load_collection
from anivision.tasks.classify import (
    TRAIN_OPTION_KEYS,
    Explanation,
    ImageClassifier,
    Prediction,
    resolve_train_config,
    train_classifier,
    train_option_defaults,
)

#: Keyword arguments :func:`train` accepts besides the ``TrainConfig`` fields of the CLI.
TRAIN_SWITCHES = ("config", "no_feature_cache", "prefix_cache", "amp")


def run_kind(path: str | Path) -> str:
    """What a folder holds: ``classifier``, ``fewshot``, ``gallery`` or ``retrieval``.

    Raises:
        AnivisionError: not a folder anivision wrote.
    """
    p = Path(path)
    if not p.is_dir():
        raise AnivisionError(f"{p}: no such run folder")
    if (p / "gallery.json").exists():
        return "gallery"
    if (p / "folds.json").exists():
        return "retrieval"
    classes = p / "classes.json"
    if (p / "config.json").exists() and classes.exists():
        try:
            saved = json.loads(classes.read_text())
        except json.JSONDecodeError as exc:
            raise AnivisionError(f"{classes}: not valid JSON ({exc.msg})") from exc
        return "classifier" if isinstance(saved, list) else "fewshot"
    raise AnivisionError(f"{p}: not an anivision run or gallery folder (no config.json + classes.json, gallery.json or folds.json)")


def load(path: str | Path, device: str | None = None, engine: str = "torch") -> Any:
    """Load any folder anivision wrote, ready to use.

    ``engine="onnx"`` runs inference with ONNX Runtime: the model is exported once into the
    folder's ``onnx/`` (again when the weights change); needs ``pip install "anivision[export]"``.

    Returns:
        :class:`ImageClassifier` for a classification run (``predict``, ``predict_proba``,
        ``embed``, ``evaluate``); :class:`~anivision.api.fewshot.FewShotModel` for a few-shot
        run (``embed``, ``enroll``); :class:`~anivision.api.fewshot.Gallery` for an enrolled
        gallery (``identify``); :class:`~anivision.api.retrieval.StyleRetriever` for a
        retrieval run (``embed``, ``search``).

    Raises:
        AnivisionError: not a run folder, or an unfinished run.
    """
    kind = run_kind(path)
    if kind == "classifier":
        return ImageClassifier.load(path, device, engine)
    if kind == "fewshot":
        return fewshot.load(path, device, engine)
    if kind == "gallery":
        return fewshot.Gallery.load(path, device, engine)
    return retrieval.load(path, device=device, engine=engine)


def export(
    run: str | Path, out: str | Path | None = None, int8: bool = False, opset: int | None = None,
    calibration: int = DEFAULT_CALIBRATION, fold: int | None = None,
) -> Path:
    """Export a run or gallery to ONNX, as ``anivision export`` does; returns the ``.onnx`` path.

    Beside it, a JSON sidecar (same name, ``.json``) records the input size, mean, std, resize
    rule, output names, class names (a gallery: prototypes and threshold), the anivision
    version and the source run's weights fingerprint. The batch axis is dynamic.

    Args:
        run: a classification, few-shot or retrieval run, or a gallery.
        out: the ``.onnx`` file (default ``RUN/export/model.onnx``, ``model-int8.onnx`` with INT8;
            a retrieval run: ``fold<k>.onnx``).
        int8: quantize (static with ``calibration`` training images for CNNs, dynamic for ViTs).
        opset: ONNX opset (default 18).
        fold: a retrieval run's fold (default: the trained fold with the best test mAP).

    Raises:
        AnivisionError: not a run, a missing or corrupted weights file, INT8 without readable
            calibration images, ``out`` not writable; nothing is overwritten then.
    """
    check_weights_files(path := Path(run))
    kind = run_kind(path)
    obj = retrieval.load(path, fold=fold if fold is not None else best_fold(path)) if kind == "retrieval" else load(path)
    return export_loaded(obj, path, out, int8, opset, calibration)


def train(progress: bool = False, **options: Any) -> ImageClassifier:
    """Train (or resume, or reuse) a classifier exactly as ``anivision train`` does.

    Keyword arguments are the CLI's options with underscores (``data``, ``out``, ``strategy``,
    ``epochs``, ``backbone``, ``weights``, ``img_size``, ``recipe``, ``lr_head``, ...; switches
    ``prefix_cache=True``, ``no_feature_cache=True``, ``amp=True``; ``config`` a YAML file),
    merged defaults < recipe < YAML < arguments.

    Returns:
        The trained :class:`ImageClassifier`; its ``metrics`` are the test metrics.

    Raises:
        AnivisionError: an unknown option, bad data or values, or ``out`` holds another run.
    """
    unknown = sorted(set(options) - set(TRAIN_OPTION_KEYS) - set(TRAIN_SWITCHES))
    if unknown:
        raise AnivisionError(f"train: unknown option(s) {', '.join(unknown)} (see help(anivision.train))")
    cfg = resolve_train_config(train_option_defaults() | options)
    metrics = train_classifier(cfg, progress=progress)
    clf = ImageClassifier.load(cfg.out)
    clf.metrics = metrics or clf.metrics
    return clf


def embed(
    data: str | Path | list[str], run: str | Path | None = None, backbone: str | None = None, weights: str | None = None,
    out: str | Path = "embeddings", img_size: int | None = None, shard_size: int = 1024, batch_size: int = 64,
    device: str | None = None, progress: bool = False,
) -> EmbeddedCollection:
    """Embed a whole collection as ``anivision embed`` does (resumable shards, merged in order).

    Args:
        data: image files, folders (recursively) or glob patterns.
        run: a classification, few-shot or retrieval run: its embedding model; or
        backbone: a timm model name, with ``weights`` (default: the offline ImageNet Lite0 weights).
        out: the folder of ``embeddings.npy`` + ``paths.csv`` (rerun to resume).

    Returns:
        The merged collection: ``embeddings`` (N, D) memory-mapped, ``paths``, ``valid``, ``fingerprint``.
    """
    source = embedding_source(str(run) if run else None, backbone, weights, img_size, device)
    embed_collection(data if isinstance(data, list) else str(data), out, source, shard_size, batch_size, progress=progress)
    return load_collection(out)


FewShotModel = fewshot.FewShotModel
Gallery = fewshot.Gallery
Identification = fewshot.Identification
StyleRetriever = retrieval.StyleRetriever
SearchResult = retrieval.SearchResult

__all__ = [
    "Explanation", "FewShotModel", "Gallery", "Identification", "ImageClassifier", "Prediction", "SearchResult", "StyleRetriever",
    "embed", "enroll", "export", "fewshot", "load", "retrieval", "run_kind", "train",
]
