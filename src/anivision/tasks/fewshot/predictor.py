"""Few-shot models as objects: embed any images, enrol characters, identify them.

``anivision identify`` and the Python API (``anivision.load(gallery).identify(...)``) both go
through :class:`Gallery`; images go through the training pipeline's decoder
(:func:`~anivision.embeddings.embed_inputs`), so paths, PIL images and numpy arrays of the same
picture give the same distances.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn

from anivision.data.inputs import ImageInput
from anivision.data.cache import default_cache_dir
from anivision.data.transforms import DataConfig
from anivision.deploy import EngineRunner, ExportSpec
from anivision.embeddings import InputFeatures, embed_inputs, model_fingerprint
from anivision.errors import AnivisionError
from anivision.files import absolute_path
from anivision.index import VectorIndex, read_meta, top_k_smallest
from anivision.models.protonet import PrototypicalNetwork
from anivision.models.tta import with_tta
from anivision.tasks.fewshot.evaluate import BackboneSpec, backbone_spec, build_backbone
from anivision.tasks.fewshot.gallery import DEFAULT_REJECT_RATE, enroll_gallery, gallery_weights, l2_normalise, load_gallery, prototype_index


UNKNOWN = "unknown"


@dataclass
class Identification:
    """Who one image shows.

    Attributes:
        label: the nearest enrolled character, or ``"unknown"`` when even the nearest is
            farther than the gallery's threshold.
        distance: the distance to the nearest prototype.
        topk: ``(character, distance)`` pairs, nearest first (``unknown`` first when it applies).
        source: the image's path, or ``<image i>`` for the i-th in-memory image.
    """

    label: str
    distance: float
    topk: list[tuple[str, float]] = field(default_factory=list)
    source: str = ""

    @property
    def known(self) -> bool:
        return self.label != UNKNOWN


class FewShotModel:
    """An embedding backbone for few-shot work: a meta-trained run, or any timm backbone.

    Build it with :meth:`load` (a run folder; ``anivision.load(run)``) or
    :meth:`from_backbone`.
    """

    def __init__(self, spec: BackboneSpec, device: str | None = None, engine: str = "torch") -> None:
        self.spec = spec
        self.device = device
        self.model, self.data_config = build_backbone(spec, device)
        # torch, or onnx: exported once to RUN/onnx/ (a bare backbone: the cache folder) and run with ONNX Runtime.
        folder = Path(spec.run) / "onnx" if spec.run else default_cache_dir() / "onnx"
        self.runner = EngineRunner(engine, lambda: ExportSpec(
            self.model, "fewshot", self.data_config, ["embeddings"], model_fingerprint(self.model), spec.run or spec.backbone,
            extra={"distance": spec.distance, "backbone": spec.backbone}, name="fewshot" if spec.run else f"fewshot-{spec.backbone}-{spec.img_size}",
        ), folder)

    @classmethod
    def load(cls, run: str | Path, device: str | None = None, engine: str = "torch") -> "FewShotModel":
        return cls(backbone_spec(str(run), None, None, None), device, engine)

    @classmethod
    def from_backbone(cls, backbone: str, weights: str | None = None, img_size: int = 128, device: str | None = None, engine: str = "torch") -> "FewShotModel":
        return cls(backbone_spec(None, backbone, weights, img_size), device, engine)

    def __repr__(self) -> str:
        return f"FewShotModel({self.spec.run or self.spec.backbone!r}, distance={self.spec.distance!r})"

    def embed(self, images: ImageInput | Iterable[ImageInput], batch_size: int = 64, skip_unreadable: bool = False, progress: bool = False) -> np.ndarray:
        """(N, D) float32 embeddings, one row per readable input."""
        net = self.runner.pick(self.model, "embeddings")
        return embed_inputs(net, images, self.data_config, batch_size, progress=progress).checked(skip_unreadable).values.astype(np.float32)

    def enroll(
        self, characters: str | Path, out: str | Path | None = None, k_shot: int | None = None, seed: int = 0,
        distance: str | None = None, reject_rate: float = DEFAULT_REJECT_RATE, cache_dir: str | None = None, progress: bool = False,
        index: str = "exact", tta: str = "none",
    ) -> "Gallery":
        """One prototype per character folder of ``characters`` (``anivision enroll``).

        Args:
            characters: a folder with one sub-folder of images per character.
            out: the gallery folder to write (default: a new temporary folder; pass ``out`` to keep it).
            k_shot: use K seeded-random images per character (default: all).
            seed: picks the K images.
            distance: default: the run's, else euclidean.
            reject_rate: target share of genuine images called ``unknown``: sets the threshold on the
                enrolment images' leave-one-out distances (``gallery.meta`` records the operating point).
            index: the prototypes' search index: ``exact``, ``faiss`` or ``ivfpq`` (saved in ``out/index/``).
            tta: ``flip``: embed every image (here and in ``identify``) as the mean of it and its mirror image.
        """
        out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="anivision-gallery-"))
        enroll_gallery(str(characters), out, self.spec, k_shot, seed, distance, reject_rate, cache_dir, self.device, progress, index, tta)
        return Gallery.load(out, self.device, self.runner.engine)


class Gallery:
    """An enrolled gallery: one prototype per character, ``unknown`` beyond a threshold.

    Build it with :meth:`load` (``anivision.load(gallery_dir)``) or :meth:`FewShotModel.enroll`.

    Attributes:
        path: the gallery folder.
        classes: the enrolled characters.
        threshold: the ``unknown`` distance threshold (None: never unknown), calibrated at
            enrolment for a target false-rejection rate (``meta["reject_rate"]``).
        normalize: embeddings are L2-normalised before distances (older galleries without the key: raw).
        distance: ``euclidean`` (squared) or ``cosine``.
        meta: everything ``gallery.json`` records.
    """

    def __init__(self, path: str | Path, meta: dict[str, Any], prototypes: np.ndarray, model: nn.Module, data_config: DataConfig, engine: str = "torch",
                 index: VectorIndex | None = None) -> None:
        self.path = Path(path)
        # torch, or onnx: the backbone exported once to GALLERY/onnx/ and run with ONNX Runtime.
        self.runner = EngineRunner(engine, self.export_spec, self.path / "onnx")
        self.meta = meta
        self.classes: list[str] = list(meta["classes"])
        self.threshold: float | None = meta.get("threshold")
        self.distance: str = meta["distance"]
        # Galleries enrolled before normalisation (no "normalize" key) keep raw embeddings.
        self.normalize: bool = bool(meta.get("normalize", False))
        self.model = model
        self.data_config = data_config
        self.net = PrototypicalNetwork.from_prototypes(torch.as_tensor(prototypes, dtype=torch.float64), self.distance)
        # The prototypes' search index (anivision.index): exact unless enrolled or loaded with another.
        self.index = index or prototype_index(prototypes, "exact", self.distance, str(meta.get("model_fingerprint", "")))

    @classmethod
    def load(cls, path: str | Path, device: str | None = None, engine: str = "torch", index: str | None = None) -> "Gallery":
        """Read a gallery folder and rebuild its backbone.

        Args:
            index: ``exact``, ``faiss`` or ``ivfpq`` (default: the one it was enrolled with); the
                saved ``GALLERY/index/`` is used when it is of that kind.

        Raises:
            AnivisionError: not a gallery, the backbone weights changed since enrolment, or its
                saved index was built with another model or dimension.
        """
        meta, protos = load_gallery(path)
        weights = gallery_weights(path, meta)
        spec = BackboneSpec(meta["backbone"], weights, int(meta["img_size"]), run=meta.get("run"), distance=meta["distance"], crop_pct=float(meta.get("crop_pct", 1.0)), embedding=meta.get("embedding"))
        model, dcfg = build_backbone(spec, device)
        if model_fingerprint(model) != meta.get("model_fingerprint"):
            raise AnivisionError(f"{path}: the backbone weights {weights} changed since enrolment; re-run 'anivision enroll'")
        # A flip gallery embeds queries as it embedded its characters (the mirror is in the ONNX graph too).
        model = with_tta(model, str(meta.get("tta", "none")))
        return cls(path, meta, protos, model, dcfg, engine, _gallery_index(Path(path), meta, protos, index))

    def __repr__(self) -> str:
        return f"Gallery({str(self.path)!r}, classes={len(self.classes)}, distance={self.distance!r})"

    def export_spec(self) -> ExportSpec:
        """The backbone's embeddings, with the prototypes, classes, distance and threshold in the sidecar."""
        record = {"prototypes": self.net.prototypes.tolist(), "distance": self.distance, "threshold": self.threshold, "normalize": self.normalize}
        key = str(self.meta.get("model_fingerprint") or model_fingerprint(self.model)) + ("" if self.meta.get("tta", "none") == "none" else f"+{self.meta['tta']}")
        return ExportSpec(self.model, "gallery", self.data_config, ["embeddings"], key,
                          absolute_path(self.path), self.classes, {"gallery": record}, name="gallery")

    def features(self, images: ImageInput | Iterable[ImageInput], batch_size: int = 64, progress: bool = False) -> tuple[np.ndarray, InputFeatures]:
        """(M, D) embeddings of the readable inputs as the gallery compares them, and the embedded inputs."""
        net = self.runner.pick(self.model, "embeddings")
        out = embed_inputs(net, images, self.data_config, batch_size, progress=progress, width=self.net.prototypes.shape[1])
        return (l2_normalise(out.values) if self.normalize else out.values), out

    def distances(self, images: ImageInput | Iterable[ImageInput], batch_size: int = 64, progress: bool = False) -> tuple[np.ndarray, InputFeatures]:
        """(M, C) distances of the readable inputs to every prototype, and the embedded inputs."""
        values, out = self.features(images, batch_size, progress)
        return self.net.distances(torch.as_tensor(values, dtype=torch.float64)).numpy(), out

    def nearest(self, values: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
        """(M, k) distances and prototype indices of the ``top_k`` nearest, through the gallery's index."""
        return self.index.search(values, min(top_k, len(self.classes)))

    def rank(self, dist: np.ndarray, out: InputFeatures, top_k: int = 3, threshold: float | None = None) -> list[Identification]:
        """Identifications from :meth:`distances`' output (``threshold`` overrides the gallery's)."""
        d, order = top_k_smallest(dist, min(top_k, len(self.classes)))
        return self.rank_nearest(d, order, out, top_k, threshold)

    def rank_nearest(self, d: np.ndarray, order: np.ndarray, out: InputFeatures, top_k: int = 3, threshold: float | None = None) -> list[Identification]:
        """Identifications from :meth:`nearest`' output (``threshold`` overrides the gallery's)."""
        thr = self.threshold if threshold is None else threshold
        k = min(top_k, len(self.classes))
        found = []
        for j, i in enumerate(out.rows):
            ranked = [(self.classes[int(c)], float(dc)) for c, dc in zip(order[j, :k], d[j, :k])]
            if thr is not None and ranked and ranked[0][1] > thr:
                ranked = [(UNKNOWN, ranked[0][1])] + ranked[: k - 1]
            found.append(Identification(ranked[0][0], ranked[0][1], ranked, out.decoded.paths[int(i)]))
        return found

    def identify(
        self, images: ImageInput | Iterable[ImageInput], top_k: int = 3, threshold: float | None = None,
        batch_size: int = 64, skip_unreadable: bool = False, progress: bool = False,
    ) -> list[Identification]:
        """The nearest enrolled characters of each image, ``unknown`` beyond the threshold.

        When the nearest distance exceeds the threshold, ``label`` is ``unknown`` and the
        characters follow in ``topk`` (nearest first), so the closest candidates stay visible.

        Raises:
            AnivisionError: an unreadable file (unless ``skip_unreadable``), a bad array, ``top_k < 1``.
        """
        if top_k < 1:
            raise AnivisionError("top_k must be at least 1")
        values, out = self.features(images, batch_size, progress)
        out.checked(skip_unreadable)
        return self.rank_nearest(*self.nearest(values, top_k), out, top_k, threshold)


def identify_paths(
    gallery: str | Path, inputs: list[str], top_k: int = 3, threshold: float | None = None,
    device: str | None = None, progress: bool = True, engine: str = "torch", index: str | None = None,
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """``anivision identify``: rows ``path, pred_1, dist_1, ..., pred_K, dist_K`` and the skipped files.

    Raises:
        AnivisionError: not a gallery, no input matches, ``top_k < 1``, or the weights changed.
    """
    if top_k < 1:
        raise AnivisionError("--top-k must be at least 1")
    g = Gallery.load(gallery, device, engine, index)
    values, out = g.features(inputs, progress=progress)
    rows = []
    for ident in g.rank_nearest(*g.nearest(values, top_k), out, top_k, threshold):
        row: dict[str, Any] = {"path": ident.source}
        for r, (name, d) in enumerate(ident.topk, 1):
            row[f"pred_{r}"], row[f"dist_{r}"] = name, d
        rows.append(row)
    return rows, out.skipped


def _gallery_index(path: Path, meta: dict[str, Any], protos: np.ndarray, kind: str | None) -> VectorIndex:
    """The gallery's saved index when it is of ``kind`` (default: the enrolled one), else one built from the prototypes.

    Raises:
        AnivisionError: the saved index was built with another model or dimension.
    """
    kind = kind or str(meta.get("index", "exact"))
    fingerprint = str(meta.get("model_fingerprint", ""))
    saved = path / "index"
    if kind != "exact" and (saved / "index.json").is_file() and read_meta(saved)["kind"] == kind:
        return VectorIndex.load(saved, dim=protos.shape[1], fingerprint=fingerprint)
    return prototype_index(protos, kind, meta["distance"], fingerprint)
