"""Gallery search: embed a gallery once (index saved beside the run and reused), then rank it
for query features."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from anivision.data.cache import files_fingerprint
from anivision.data.reid import ReidImages
from anivision.data.transforms import DataConfig
from anivision.embeddings import embed_paths, model_fingerprint
from anivision.errors import AnivisionError
from anivision.index import VectorIndex, build_index
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
        stamps: (N,) ``size:mtime_ns`` of each file when it was embedded (what an append reuses).
        vectors: the search index over ``features`` (:mod:`anivision.index`; default: exact).
    """

    paths: list[str]
    works: list[str]
    roles: list[str]
    features: np.ndarray
    skipped: list[str]
    stamps: list[str] = field(default_factory=list)
    vectors: VectorIndex | None = None


def _stamp(path: str) -> str:
    try:
        st = os.stat(path)
        return f"{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        return "missing"


def _save_index(index: GalleryIndex, path: Path) -> None:
    """Write ``index`` as ``path`` (.npz) via a temporary file and rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(
        tmp, paths=np.array(index.paths), works=np.array(index.works), roles=np.array(index.roles),
        features=index.features, skipped=np.array(index.skipped, dtype=str), stamps=np.array(index.stamps, dtype=str),
    )
    tmp.replace(path)


def _read_index(path: Path) -> GalleryIndex:
    with np.load(path) as z:
        stamps = z["stamps"].tolist() if "stamps" in z.files else []
        return GalleryIndex(z["paths"].tolist(), z["works"].tolist(), z["roles"].tolist(), z["features"], z["skipped"].tolist(), stamps)


def _reusable(index_dir: Path, model_key: str, path: Path) -> tuple[GalleryIndex | None, Path | None]:
    """The newest earlier index of the same model and input config (another gallery file list), if any."""
    older = sorted((p for p in index_dir.glob(f"gallery-{model_key}-*.npz") if p != path and not p.name.endswith(".tmp.npz")),
                   key=lambda p: p.stat().st_mtime_ns)
    return (_read_index(older[-1]), older[-1]) if older else (None, None)


def _embed_new(model: ReidModel, dcfg: DataConfig, gallery: ReidImages, old: GalleryIndex | None, batch_size: int, progress: bool) -> tuple[GalleryIndex, int]:
    """The gallery's features: an earlier index's rows for unchanged files (same path, size and
    mtime), the model for the rest. Rows: the reused ones in their old order, then the new ones.
    Returns the index and how many leading rows are the old index's rows unchanged."""
    stamps = [_stamp(p) for p in gallery.paths]
    known = {} if old is None else {(p, st): i for i, (p, st) in enumerate(zip(old.paths, old.stamps))}
    reuse = [(known[(p, st)], j) for j, (p, st) in enumerate(zip(gallery.paths, stamps)) if (p, st) in known]
    reuse.sort()
    fresh = np.array(sorted(set(range(len(gallery.paths))) - {j for _, j in reuse}), dtype=np.int64)
    rows = [j for _, j in reuse]
    feats = [old.features[[i for i, _ in reuse]]] if reuse else []
    skipped: list[str] = []
    if len(fresh):
        emb = embed_paths(EmbeddingModel(model), gallery.paths, dcfg, batch_size=batch_size, cache_dir=None, progress=progress, indices=fresh)
        rows += [int(j) for j, ok in zip(fresh, emb.valid) if ok]
        feats.append(emb.features[emb.valid])
        skipped = list(emb.skipped)
    features = np.concatenate(feats) if feats else np.zeros((0, 0), np.float32)
    prefix = len(reuse) if old is not None and [i for i, _ in reuse] == list(range(len(old.paths))) else 0
    index = GalleryIndex([gallery.paths[j] for j in rows], [gallery.works[j] for j in rows], [gallery.roles[j] for j in rows],
                         features, skipped, [stamps[j] for j in rows])
    return index, prefix


def _vector_index(index: GalleryIndex, kind: str, metric: str, fingerprint: str, folder: Path, previous: Path | None, prefix: int) -> VectorIndex:
    """The search index of ``index.features``: exact in memory; faiss kinds loaded from ``folder``,
    or the previous gallery's index with only the appended rows added, or built."""
    if kind == "exact":
        return build_index(index.features, "exact", metric, fingerprint)
    if (folder / "index.json").is_file():
        return VectorIndex.load(folder, dim=index.features.shape[1], fingerprint=fingerprint)
    old = None if previous is None else previous.with_suffix(f".{kind}-{metric}")
    if prefix and old is not None and (old / "index.json").is_file():
        vi = VectorIndex.load(old, dim=index.features.shape[1], fingerprint=fingerprint)
        if len(vi) == prefix:
            vi.add(index.features[prefix:], np.arange(prefix, len(index.paths)))
            vi.save(folder)
            return vi
    vi = build_index(index.features, kind, metric, fingerprint)
    vi.save(folder)
    return vi


def build_gallery_index(
    model: ReidModel,
    dcfg: DataConfig,
    gallery: ReidImages,
    index_dir: str | Path,
    batch_size: int = 64,
    progress: bool = True,
    index: str = "exact",
    metric: str = "cosine",
) -> GalleryIndex:
    """Embed ``gallery`` once and save it as ``index_dir/gallery-<model>-<files>.npz``; reuse it when current.

    The keys cover the model weights and input config, then the gallery files (paths, sizes,
    modification times), so a retrained model builds a new index. A changed gallery reuses
    the features of its unchanged files from the newest index of the same model and embeds
    only the new ones; a faiss index (``index`` ``faiss``/``ivfpq``, saved beside it as
    ``gallery-....<kind>-<metric>/``) of a gallery that only grew gets the new vectors added
    (an IVF-PQ index is not retrained).

    Raises:
        AnivisionError: no gallery image could be read; an unknown ``index``.
    """
    fingerprint = model_fingerprint(model)
    model_key = hashlib.sha1(json.dumps([fingerprint, asdict(dcfg)]).encode()).hexdigest()[:12]
    files_key = hashlib.sha1(json.dumps([files_fingerprint(gallery.paths), gallery.works, gallery.roles]).encode()).hexdigest()[:12]
    path = Path(index_dir) / f"gallery-{model_key}-{files_key}.npz"
    previous = None
    if path.exists():
        log.info("reusing gallery index %s", path)
        found, prefix = _read_index(path), 0
    else:
        old, previous = _reusable(Path(index_dir), model_key, path)
        found, prefix = _embed_new(model, dcfg, gallery, old, batch_size, progress)
        if not found.paths:
            raise AnivisionError(f"no readable gallery image ({len(found.skipped)} unreadable)")
        _save_index(found, path)
    found.vectors = _vector_index(found, index, metric, fingerprint, path.with_suffix(f".{index}-{metric}"), previous, prefix)
    return found


def search(index: GalleryIndex, query_features: np.ndarray, top_k: int = 10, metric: str = "cosine") -> list[list[dict[str, Any]]]:
    """Top-``top_k`` gallery items for each query, through ``index.vectors`` (default: an exact index).

    Args:
        index: the gallery.
        query_features: (Q, D) features from the same model.
        top_k: results per query.
        metric: ``cosine`` or ``euclidean`` (of the exact index built when ``index.vectors`` is None).

    Returns:
        Per query, a list of ``{"path", "work", "role", "dist"}``, nearest first.

    Raises:
        AnivisionError: query features of another dimension than the gallery's.
    """
    vectors = index.vectors if index.vectors is not None else build_index(index.features, "exact", metric)
    dist, rows = vectors.search(query_features, top_k)
    return [[{"path": index.paths[j], "work": index.works[j], "role": index.roles[j], "dist": float(d)} for d, j in zip(dr, jr) if j >= 0]
            for dr, jr in zip(dist, rows)]


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
