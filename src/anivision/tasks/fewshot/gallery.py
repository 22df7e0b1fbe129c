"""Enrolment and open-set identification: a gallery is one prototype per character folder.

Enrolling is :meth:`PrototypicalNetwork.process_support_set` on the gallery's embeddings;
identifying is the distances of new images to those prototypes, with ``unknown`` beyond a
threshold learnt from the enrolment images. Adding a character is adding a folder: no
retraining.

A gallery folder is self-contained: ``prototypes.safetensors``, ``gallery.json`` and, when the
backbone's weights are a file (a few-shot run's ``model.safetensors``, or ``--weights FILE``),
its own copy of them (``backbone.safetensors``: a hard link where the file system allows, a
copy otherwise). Identification reads only the gallery folder, so it works from any working
directory, after the gallery and the run are moved anywhere, and even after the run is
retrained or deleted: the prototypes always meet the weights they were made with, and the
recorded ``model_fingerprint`` checks that. ``run`` and ``gallery`` in ``gallery.json`` are
absolute paths kept for the record only.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from safetensors.torch import save_file

from anivision.data.cache import default_cache_dir
from anivision.data.folder import scan_class_folders
from anivision.embeddings import embed_paths, model_fingerprint
from anivision.engine.checkpoint import save_weights
from anivision.errors import AnivisionError
from anivision.files import absolute_path, atomic_write_json, read_json, read_tensors
from anivision.index import VectorIndex, build_index
from anivision.models.backbone import LITE0_WEIGHTS
from anivision.models.protonet import PrototypicalNetwork, check_distance, episode_distances
from anivision.models.tta import check_tta, with_tta
from anivision.tasks.fewshot.evaluate import BackboneSpec, build_backbone

log = logging.getLogger(__name__)


def loo_own_and_other(features: np.ndarray, labels: np.ndarray, protos: np.ndarray, distance: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Leave-one-out distances of enrolment images to their own and to the other prototypes.

    The own prototype of image i is recomputed without i (``(n * p - x_i) / (n - 1)``), so the
    distance is what a new, unseen image of that character would get.

    Args:
        features: (M, D); labels: (M,) in 0..C-1; protos: (C, D) means over all images.

    Returns:
        own (M,) distances (NaN for classes with a single image), other (M,) distance to the
        nearest other prototype, and correct (M,) bool, whether the leave-one-out nearest
        prototype is the right one.
    """
    f = torch.as_tensor(features, dtype=torch.float64)
    p = torch.as_tensor(protos, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.int64)
    counts = torch.bincount(y, minlength=p.shape[0]).to(torch.float64)
    n = counts[y].unsqueeze(1)  # (M, 1)
    loo = (n * p[y] - f) / (n - 1).clamp_min(1.0)  # (M, D)
    own = episode_distances(f.unsqueeze(1), loo.unsqueeze(1), distance).reshape(-1)  # (M,): each image to its own LOO prototype
    own[counts[y] < 2] = float("nan")
    d_all = PrototypicalNetwork.from_prototypes(p, distance).distances(f)  # (M, C)
    d_all[torch.arange(len(y)), y] = float("inf")
    other = d_all.min(1).values
    return own.numpy(), other.numpy(), (own < other).numpy()


#: Default target false-rejection rate: the share of genuine images of enrolled characters that
#: may be called ``unknown``. Chosen in ``benchmarks/open_set.py`` (RESULTS.md): on 16 real
#: characters, 0.10 keeps known images accepted while rejecting most unknown characters.
DEFAULT_REJECT_RATE: float = 0.10


def l2_normalise(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), float32.

    Galleries embed on the unit sphere: raw embedding norms vary with contrast and content far
    more than directions do, which made unnormalised distances useless for ``unknown``.
    """
    x = np.asarray(features, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def calibrate_threshold(features: np.ndarray, labels: np.ndarray, protos: np.ndarray, distance: str, reject_rate: float) -> dict[str, Any]:
    """The ``unknown`` threshold and its operating point, from leave-one-out on the enrolment images.

    Each enrolment image stands for a new image of its character: its distance to its own
    prototype re-averaged without it (:func:`loo_own_and_other`). The threshold is the
    ``1 - reject_rate`` quantile of these distances, so about ``reject_rate`` of genuine images
    fall beyond it. Each image's distance to the nearest *other* prototype stands for an image
    of a character that is not enrolled: the share of those beyond the threshold estimates how
    many unknown characters are rejected.

    Args:
        features: (M, D) enrolment embeddings (normalised as the gallery uses them).
        labels: (M,) in 0..C-1.
        protos: (C, D) prototypes.
        distance: ``euclidean`` (squared) or ``cosine``.
        reject_rate: target false-rejection rate in [0, 1).

    Returns:
        ``threshold`` (None when every character has a single image), ``reject_rate``,
        ``loo_false_rejection`` (share of own distances beyond the threshold), ``loo_accuracy``,
        ``impostor_within_threshold`` and ``est_unknown_rejection`` (1 minus it).
    """
    if not 0 <= reject_rate < 1:
        raise AnivisionError(f"--reject-rate must be in [0, 1), got {reject_rate}")
    own, other, correct = loo_own_and_other(features, labels, protos, distance)
    has_own = ~np.isnan(own)
    if not has_own.any():
        log.warning("every character has a single image: no leave-one-out distances, so no 'unknown' threshold")
        return {"threshold": None, "reject_rate": reject_rate, "loo_false_rejection": None, "loo_accuracy": None,
                "impostor_within_threshold": None, "est_unknown_rejection": None}
    thr = float(np.quantile(own[has_own], 1.0 - reject_rate, method="linear"))
    within = float((other <= thr).mean())
    return {"threshold": thr, "reject_rate": reject_rate, "loo_false_rejection": float((own[has_own] > thr).mean()),
            "loo_accuracy": float(correct[has_own].mean()), "impostor_within_threshold": within,
            "est_unknown_rejection": 1.0 - within}


def _enrolment_images(labels: np.ndarray, valid: np.ndarray, classes: list[str], k_shot: int | None, seed: int, gallery: str) -> np.ndarray:
    """Indices of the images to enrol, class by class: all readable ones, or K seeded-random ones.

    Raises:
        AnivisionError: a character with no readable image, or fewer than K.
    """
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for c, name in enumerate(classes):
        ok = np.flatnonzero((labels == c) & valid)
        if len(ok) == 0:
            raise AnivisionError(f"{gallery}/{name}: no readable image to enrol")
        if k_shot is not None:
            if len(ok) < k_shot:
                raise AnivisionError(f"{gallery}/{name}: {len(ok)} readable image(s); --k-shot {k_shot} needs {k_shot}")
            ok = np.sort(rng.choice(ok, size=k_shot, replace=False))
        keep.extend(int(i) for i in ok)
    return np.asarray(keep, dtype=np.int64)


def _save_prototypes(out_dir: Path, protos: np.ndarray) -> None:
    """``out_dir/prototypes.safetensors`` with ``prototypes`` (C, D) float32, written atomically."""
    tmp = out_dir / f"prototypes.safetensors.{os.getpid()}.tmp"
    save_file({"prototypes": torch.from_numpy(protos)}, str(tmp))
    os.replace(tmp, out_dir / "prototypes.safetensors")


#: Weights that are names, not files (rebuilt by name at identification).
NAMED_WEIGHTS = ("none", "imagenet", LITE0_WEIGHTS)


def _keep_weights(weights: str, out_dir: Path, model: nn.Module) -> str | None:
    """The gallery's own copy of a weights file (hard link, else copy), by its name in
    ``out_dir``; None for named weights. Randomly initialised weights (``none``) are saved too:
    no later build could give the same network."""
    src = Path(weights)
    if weights == "none":
        save_weights(model, out_dir / "backbone.safetensors")
        return "backbone.safetensors"
    if weights in NAMED_WEIGHTS or not src.is_file():
        return None
    dest = out_dir / f"backbone{src.suffix or '.safetensors'}"
    tmp = out_dir / f"{dest.name}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)  # the run replaces its weights by rename, so a link never changes under us
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dest)
    return dest.name


def gallery_weights(gallery: str | Path, meta: dict[str, Any]) -> str:
    """The weights a gallery's backbone is rebuilt with: its own copy, else (a gallery made by
    an older anivision) the recorded name or file.

    Raises:
        AnivisionError: the weights file is missing.
    """
    if meta.get("weights_file"):
        w = Path(gallery) / meta["weights_file"]
        if not w.is_file():
            raise AnivisionError(f"{w}: the gallery's backbone weights are missing; re-run 'anivision enroll'")
        return str(w)
    w = str(meta["weights"])
    if w not in NAMED_WEIGHTS and not Path(w).is_file():
        raise AnivisionError(f"{w}: the backbone weights of gallery {gallery} are not there any more (the run moved?); re-run 'anivision enroll'")
    return w


def enroll_gallery(
    gallery: str, out: str | Path, spec: BackboneSpec, k_shot: int | None = None, seed: int = 0, distance: str | None = None,
    reject_rate: float = DEFAULT_REJECT_RATE, cache_dir: str | None = None, device: str | None = None, progress: bool = True,
    index: str = "exact", tta: str = "none",
) -> dict[str, Any]:
    """Enrol one prototype per character folder of ``gallery``.

    Embeddings are L2-normalised and each prototype is the mean of its character's unit
    vectors. Open-set threshold rule (:func:`calibrate_threshold`): for every enrolment image,
    the leave-one-out distance to its own character's prototype is computed (prototype
    re-averaged without that image); the threshold is the ``1 - reject_rate`` quantile of these
    distances, so a query farther than that from every prototype is ``unknown`` and about
    ``reject_rate`` of genuine images of enrolled characters are expected to be rejected.
    ``gallery.json`` records the rule and the operating point: the leave-one-out accuracy and
    false rejection, and the estimated share of unknown characters rejected.

    Writes ``out/prototypes.safetensors`` ((C, D) float32), ``out/gallery.json`` and, for weights
    from a file, ``out/backbone.safetensors`` (see the module docstring).

    Args:
        gallery: class-per-folder images, one folder per character.
        out: gallery folder to write.
        spec: backbone to embed with.
        k_shot: use K seeded-random readable images per character (default: all).
        seed: seed for picking the K images.
        distance: default: the run's distance, else euclidean.
        reject_rate: target share of genuine images called ``unknown`` (sets the threshold).
        index: the prototypes' search index (``exact``, ``faiss``, ``ivfpq``), saved in ``out/index/``.
        tta: ``flip``: every image (here and in ``identify``) is the mean of it and its mirror image.

    Raises:
        AnivisionError: no images, a character with no readable image or fewer than K.
    """
    distance = distance or spec.distance
    check_distance(distance)
    check_tta(tta)  # before any image is read or the backbone built
    if not 0 <= reject_rate < 1:
        raise AnivisionError(f"--reject-rate must be in [0, 1), got {reject_rate}")
    images = scan_class_folders(gallery)
    model, dcfg = build_backbone(spec, device)
    emb = embed_paths(with_tta(model, tta), images.paths, dcfg, cache_dir=cache_dir or default_cache_dir(), progress=progress)
    labels = np.asarray(images.labels, dtype=np.int64)
    keep = _enrolment_images(labels, emb.valid, images.classes, k_shot, seed, gallery)
    feats, labs = l2_normalise(emb.features[keep]), labels[keep]
    protos = PrototypicalNetwork(distance=distance).process_support_set(torch.from_numpy(feats), torch.from_numpy(labs)).numpy().astype(np.float32)
    point = calibrate_threshold(feats, labs, protos, distance, reject_rate)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    prototype_index(protos, index, distance, model_fingerprint(model)).save(out_dir / "index")  # a bad --index fails before any write
    _save_prototypes(out_dir, protos)
    meta = {
        "classes": images.classes,
        "counts": [int((labs == c).sum()) for c in range(len(images.classes))],
        "backbone": spec.backbone,
        "weights": spec.weights,
        "weights_file": _keep_weights(spec.weights, out_dir, model),
        "run": absolute_path(spec.run) if spec.run else None,
        "model_fingerprint": model_fingerprint(model),
        "img_size": dcfg.img_size,
        "crop_pct": dcfg.crop_pct,
        "embedding": spec.embedding,  # the transfer embedding's parts; None: pooled features
        "distance": distance,
        "normalize": True,  # absent in older galleries: raw embeddings, their threshold as recorded
        "index": index,
        "tta": tta,  # absent in older galleries: none
        **point,
        "threshold_rule": f"{1 - reject_rate:.4g} quantile of leave-one-out distances of enrolment images to their own prototype "
                          f"(L2-normalised embeddings; target false-rejection rate {reject_rate:g})",
        "k_shot": k_shot, "seed": seed, "gallery": absolute_path(gallery),
        "skipped": emb.skipped,
        "trained_on_enrolled": sorted(trained_on(spec) & set(images.classes)),  # their est_unknown_rejection is optimistic
    }
    atomic_write_json(out_dir / "gallery.json", meta)
    return meta | {"out": str(out_dir)}


def trained_on(spec: BackboneSpec) -> set[str]:
    """Characters the embedding was trained on: a classification run's classes, a few-shot run's
    meta-training classes (read from ``classes.json`` beside the weights); empty for other weights.

    For those characters a gallery's leave-one-out estimate of unknown rejection is optimistic:
    other enrolled characters stand in for unknown ones, and the embedding learned to separate them.
    """
    w = Path(spec.run) / "model.safetensors" if spec.run else Path(spec.weights)
    try:
        classes = json.loads((w.parent / "classes.json").read_text()) if w.is_file() else None
    except (OSError, ValueError):
        return set()
    if isinstance(classes, dict):
        classes = classes.get("train")
    return {str(c) for c in classes} if isinstance(classes, list) else set()


def load_gallery(gallery: str | Path) -> tuple[dict[str, Any], np.ndarray]:
    """``(gallery.json contents, (C, D) prototypes)`` of a gallery folder."""
    g = Path(gallery)
    if not (g / "gallery.json").is_file() or not (g / "prototypes.safetensors").is_file():
        raise AnivisionError(f"{g}: not a gallery folder (make one with 'anivision enroll')")
    meta = read_json(g / "gallery.json", expect=dict)
    protos = read_tensors(g / "prototypes.safetensors").get("prototypes")
    if protos is None or protos.ndim != 2 or "classes" not in meta or len(meta["classes"]) != protos.shape[0]:
        raise AnivisionError(f"{g}: gallery.json and prototypes.safetensors do not match; enrol the gallery again")
    return meta, protos.numpy()


def prototype_index(protos: np.ndarray, kind: str, distance: str, fingerprint: str) -> VectorIndex:
    """The search index of a gallery's (C, D) prototypes: ``kind`` (``exact`` keeps float64, as
    :class:`PrototypicalNetwork` computes), with the gallery's distance (euclidean = squared)."""
    metric = "sqeuclidean" if distance == "euclidean" else "cosine"
    return build_index(np.asarray(protos, np.float64 if kind == "exact" else np.float32), kind, metric, fingerprint)
