"""A trained retrieval run as an object: embed any images, search a gallery of images by style.

``anivision retrieval search`` and the Python API (``anivision.retrieval.load(run).search(...)``)
both go through :class:`StyleRetriever`; queries go through the training pipeline's decoder
(:func:`~anivision.embeddings.embed_inputs`), so a path, a PIL image or a numpy array of the
same picture finds the same neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from anivision.data.inputs import ImageInput
from anivision.data.reid import ReidImages, load_reid
from anivision.deploy import EngineRunner, ExportSpec
from anivision.embeddings import InputFeatures, embed_inputs, model_fingerprint
from anivision.errors import AnivisionError
from anivision.files import absolute_path
from anivision.models.reid_head import EmbeddingModel
from anivision.tasks.retrieval.config import RetrievalConfig, load_run_config
from anivision.tasks.retrieval.model import load_fold_model
from anivision.tasks.retrieval.search import GalleryIndex, build_gallery_index, pick_search_fold, search



@dataclass
class SearchResult:
    """What one query image found.

    Attributes:
        source: the query's path, or ``<image i>`` for the i-th in-memory image.
        work: the work of the nearest gallery image.
        hits: the nearest gallery images, ``{"path", "work", "role", "dist"}``, nearest first.
        votes: ``(work, count)`` among the hits, most frequent first.
    """

    source: str
    work: str
    hits: list[dict[str, Any]] = field(default_factory=list)
    votes: list[tuple[str, int]] = field(default_factory=list)


class StyleRetriever:
    """One fold's re-ID model of a retrieval run: ``embed`` and ``search``.

    Build it with :meth:`load` (``anivision.retrieval.load(run)`` or ``anivision.load(run)``).
    """

    def __init__(self, run_dir: str | Path, fold: int, config: RetrievalConfig, device: str | None = None, engine: str = "torch") -> None:
        self.run_dir = Path(run_dir)
        self.fold = fold
        self.config = config
        model, self.data_config = load_fold_model(self.run_dir / f"fold{fold}", device)
        self.model = EmbeddingModel(model)
        # torch, or onnx: the fold's model exported once to RUN/onnx/ and run with ONNX Runtime.
        self.runner = EngineRunner(engine, lambda: ExportSpec(
            self.model, "retrieval", self.data_config, ["embeddings"], model_fingerprint(self.model), absolute_path(self.run_dir),
            extra={"retrieval": {"fold": fold, "metric": config.metric, "backbone": config.backbone}}, name=f"fold{fold}",
        ), self.run_dir / "onnx")

    @classmethod
    def load(cls, run_dir: str | Path, fold: int | None = None, device: str | None = None, engine: str = "torch") -> "StyleRetriever":
        """The model of ``fold`` (default: the first trained fold) of a retrieval run."""
        cfg = load_run_config(run_dir)
        return cls(run_dir, pick_search_fold(run_dir, fold), cfg, device, engine)

    def __repr__(self) -> str:
        return f"StyleRetriever({str(self.run_dir)!r}, fold={self.fold}, distance={self.config.metric!r})"

    def features(self, images: ImageInput | Iterable[ImageInput], batch_size: int = 64, progress: bool = False) -> InputFeatures:
        return embed_inputs(self.runner.pick(self.model, "embeddings"), images, self.data_config, batch_size, progress=progress, width=self.model.num_features)

    def embed(self, images: ImageInput | Iterable[ImageInput], batch_size: int = 64, skip_unreadable: bool = False, progress: bool = False) -> np.ndarray:
        """(N, D) float32 retrieval features (BNNeck output), one row per readable input."""
        return self.features(images, batch_size, progress).checked(skip_unreadable).values.astype(np.float32)

    def index(self, gallery: str | Path | ReidImages, progress: bool = False, kind: str = "exact") -> GalleryIndex:
        """The gallery embedded once (saved in ``RUN/search_index/`` and reused while current; a grown
        gallery embeds only its new images), with a search index of ``kind``: ``exact``, ``faiss`` or ``ivfpq``."""
        images = gallery if isinstance(gallery, ReidImages) else load_reid(gallery, strict=False)
        return build_gallery_index(self.model.model, self.data_config, images, self.run_dir / "search_index", progress=progress,
                                   index=kind, metric=self.config.metric)

    def search(
        self, images: ImageInput | Iterable[ImageInput], gallery: str | Path | ReidImages | GalleryIndex, top_k: int = 10,
        skip_unreadable: bool = False, progress: bool = False, index: str = "exact",
    ) -> list[SearchResult]:
        """The ``top_k`` gallery images nearest to each query, with their works.

        Args:
            images: query images (paths, folders, globs, PIL images, uint8 arrays).
            gallery: a ``<work>/<role>/<image>`` folder (or ``<work>/<image>``, or flat), a
                ``path,work,role`` CSV, or an index from :meth:`index`.
            index: the gallery's search index when ``gallery`` is not one already: ``exact``, ``faiss`` or ``ivfpq``.

        Raises:
            AnivisionError: ``top_k < 1``, an unreadable query (unless ``skip_unreadable``), no readable gallery image.
        """
        if top_k < 1:
            raise AnivisionError("top_k must be at least 1")
        index = gallery if isinstance(gallery, GalleryIndex) else self.index(gallery, progress, index)
        out = self.features(images, progress=progress).checked(skip_unreadable)
        hits = search(index, out.values, top_k, self.config.metric) if len(out.values) else []
        results = []
        for i, top in zip(out.rows, hits):
            votes: dict[str, int] = {}
            for t in top:
                votes[t["work"]] = votes.get(t["work"], 0) + 1
            ranked = sorted(votes.items(), key=lambda kv: -kv[1])
            results.append(SearchResult(out.decoded.paths[int(i)], top[0]["work"], top, ranked))
        return results
