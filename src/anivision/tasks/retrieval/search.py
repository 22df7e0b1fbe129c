"""Gallery search: embed a gallery once (index saved beside the run and reused), then rank it
for query features."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from anivision.data.cache import files_fingerprint
from anivision.data.reid import ReidImages
from anivision.data.transforms import DataConfig
from anivision.embeddings import embed_paths, model_fingerprint
from anivision.errors import AnivisionError
from anivision.metrics.retrieval import pairwise_distances
from anivision.models.reid_head import EmbeddingModel, ReidModel

log = logging.getLogger(__name__)


@dataclass
class GalleryIndex:
    """Embedded gallery images.

    Attributes:
        paths: (N,) image paths (readable ones only).
        works: (N,) work of each image (``"-"`` when the folder does not say).
        roles: (N,) role of each image.
        features: (N, D) float32 retrieval features.
        skipped: gallery files that could not be read.
    """

    paths: list[str]
    works: list[str]
    roles: list[str]
    features: np.ndarray
    skipped: list[str]


def _save_index(index: GalleryIndex, path: Path) -> None:
    """Write ``index`` as ``path`` (.npz) via a temporary file and rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(
        tmp, paths=np.array(index.paths), works=np.array(index.works), roles=np.array(index.roles),
        features=index.features, skipped=np.array(index.skipped, dtype=str),
    )
    tmp.replace(path)


def build_gallery_index(
    model: ReidModel,
    dcfg: DataConfig,
    gallery: ReidImages,
    index_dir: str | Path,
    batch_size: int = 64,
    progress: bool = True,
) -> GalleryIndex:
    """Embed ``gallery`` once and save the index as ``index_dir/gallery-<key>.npz``; reuse it when current.

    The key covers the model weights, the input config and the gallery files (paths, sizes,
    modification times), so a retrained model or a changed gallery builds a new index.

    Raises:
        AnivisionError: no gallery image could be read.
    """
    key = hashlib.sha1(
        json.dumps([model_fingerprint(model), asdict(dcfg), files_fingerprint(gallery.paths), gallery.works, gallery.roles]).encode()
    ).hexdigest()[:20]
    path = Path(index_dir) / f"gallery-{key}.npz"
    if path.exists():
        with np.load(path) as z:
            log.info("reusing gallery index %s", path)
            return GalleryIndex(z["paths"].tolist(), z["works"].tolist(), z["roles"].tolist(), z["features"], z["skipped"].tolist())
    emb = embed_paths(EmbeddingModel(model), gallery.paths, dcfg, batch_size=batch_size, cache_dir=None, progress=progress)
    v = emb.valid
    index = GalleryIndex(
        [p for p, ok in zip(gallery.paths, v) if ok],
        [w for w, ok in zip(gallery.works, v) if ok],
        [r for r, ok in zip(gallery.roles, v) if ok],
        emb.features[v],
        list(emb.skipped),
    )
    if not index.paths:
        raise AnivisionError(f"no readable gallery image ({len(emb.skipped)} unreadable)")
    _save_index(index, path)
    return index


def search(index: GalleryIndex, query_features: np.ndarray, top_k: int = 10, metric: str = "cosine") -> list[list[dict[str, Any]]]:
    """Top-``top_k`` gallery items for each query.

    Args:
        index: the gallery.
        query_features: (Q, D) features from the same model.
        top_k: results per query.
        metric: ``cosine`` or ``euclidean``.

    Returns:
        Per query, a list of ``{"path", "work", "role", "dist"}``, nearest first.
    """
    dist = pairwise_distances(query_features, index.features, metric)
    k = min(top_k, dist.shape[1])
    out = []
    for row in dist:
        order = np.argsort(row, kind="stable")[:k]
        out.append([{"path": index.paths[j], "work": index.works[j], "role": index.roles[j], "dist": float(row[j])} for j in order])
    return out


def pick_search_fold(run_dir: str | Path, fold: int | None = None) -> int:
    """``fold`` if it has a model, else the lowest-numbered fold with one.

    Raises:
        AnivisionError: ``fold`` has no model, or no fold has one.
    """
    run_dir = Path(run_dir)
    have = sorted(int(p.parent.name[4:]) for p in run_dir.glob("fold*/model.safetensors") if p.parent.name[4:].isdigit())
    if fold is not None:
        if fold not in have:
            raise AnivisionError(f"{run_dir}: fold {fold} has no trained model (trained folds: {have or 'none'})")
        return fold
    if not have:
        raise AnivisionError(f"{run_dir}: no trained fold model; run 'anivision retrieval train' first")
    return have[0]
