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
from anivision.errors import AnivisionError
from anivision.tasks.classify import (
    TRAIN_OPTION_KEYS,
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


def load(path: str | Path, device: str | None = None) -> Any:
    """Load any folder anivision wrote, ready to use.

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
        return ImageClassifier.load(path, device)
    if kind == "fewshot":
        return fewshot.load(path, device)
    if kind == "gallery":
        return fewshot.Gallery.load(path, device)
    return retrieval.load(path, device=device)


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


FewShotModel = fewshot.FewShotModel
Gallery = fewshot.Gallery
Identification = fewshot.Identification
StyleRetriever = retrieval.StyleRetriever
SearchResult = retrieval.SearchResult

__all__ = [
    "FewShotModel", "Gallery", "Identification", "ImageClassifier", "Prediction", "SearchResult", "StyleRetriever",
    "enroll", "fewshot", "load", "retrieval", "run_kind", "train",
]
