"""``anivision.fewshot``: meta-train, load, enrol and identify from Python.

::

    import anivision as av
    model = av.fewshot.train(data="data/characters", classes="10/3/3", epochs=6, out="runs/proto")
    gallery = av.enroll("runs/proto", "my_characters/", k_shot=5)     # or a classifier run, or a backbone name
    gallery.identify(["new.png", pil_image], top_k=3)                 # -> [Identification(label, distance, topk, source)]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from anivision.errors import AnivisionError
from anivision.tasks.fewshot import DEFAULT_REJECT_RATE, FewShotModel, FewShotTrainConfig, Gallery, Identification, train_fewshot


def load(run: str | Path, device: str | None = None, engine: str = "torch") -> FewShotModel:
    """A meta-trained run's backbone (``embed``, ``enroll``); ``engine="onnx"``: through ONNX Runtime."""
    return FewShotModel.load(run, device, engine)


def model(source: str | Path, weights: str | None = None, img_size: int | None = None, device: str | None = None) -> FewShotModel:
    """A few-shot run folder, a classification run folder (its fine-tuned backbone, head dropped),
    or a timm backbone name (with ``weights``: ``efficientnet_lite0_imagenet``,
    ``imagenet``, ``none`` or a file; default the offline ImageNet Lite0 weights)."""
    if Path(source).is_dir():
        if weights is not None:
            raise AnivisionError(f"{source}: a run brings its own weights; weights= is for a backbone name")
        return FewShotModel.load(source, device)
    return FewShotModel.from_backbone(str(source), weights, img_size or 128, device)


def enroll(
    source: str | Path | FewShotModel, characters: str | Path, out: str | Path | None = None, k_shot: int | None = None,
    weights: str | None = None, seed: int = 0, distance: str | None = None, reject_rate: float = DEFAULT_REJECT_RATE, progress: bool = False,
    index: str = "exact", tta: str = "none",
) -> Gallery:
    """One prototype per character folder of ``characters``, as ``anivision enroll`` does.

    Args:
        source: a few-shot or classification run folder, a timm backbone name, or a :class:`FewShotModel`.
        characters: a folder with one sub-folder of images per character.
        out: the gallery folder (default: a new temporary folder; pass ``out`` to keep it).
        k_shot: K seeded-random images per character (default: all).
        weights: with a backbone name: its weights.
        reject_rate: target share of genuine images called ``unknown`` (sets the threshold; default 0.10).
        index: the prototypes' search index: ``exact``, ``faiss`` or ``ivfpq`` (``Gallery.load(path, index=...)`` overrides it).
        tta: ``flip``: embed every image (at enrolment and when identifying) as the mean of it and its mirror image.
    """
    m = source if isinstance(source, FewShotModel) else model(source, weights)
    return m.enroll(characters, out, k_shot, seed, distance, reject_rate, progress=progress, index=index, tta=tta)


def train(progress: bool = False, **options: Any) -> FewShotModel:
    """Meta-train (or resume, or reuse) a prototypical network as ``anivision fewshot train`` does.

    Keyword arguments are :class:`FewShotTrainConfig` fields (``data``, ``out``, ``classes``,
    ``epochs``, ``episodes_per_epoch``, ``n_way``, ``k_shot``, ``backbone``, ``weights``, ...).
    """
    cfg = FewShotTrainConfig.from_dict(options, source="fewshot.train")
    train_fewshot(cfg, progress=progress)
    return FewShotModel.load(cfg.out)


__all__ = ["FewShotModel", "Gallery", "Identification", "enroll", "load", "model", "train"]
