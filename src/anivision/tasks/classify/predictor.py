"""A trained classification run as an object: predict, probabilities and embeddings of any images.

``anivision predict`` and the Python API (``anivision.load(run).predict(...)``) both go through
:class:`ImageClassifier`, and images go through :func:`~anivision.data.inputs.decode_inputs`,
the training pipeline's decoder: the same picture gives the same probabilities whichever way it
comes in (a path, a PIL image or a numpy array).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from anivision.data.cache import files_fingerprint
from anivision.data.inputs import ImageInput
from anivision.data.transforms import DataConfig
from anivision.deploy import ClassifierOutputs, EngineRunner, ExportSpec
from anivision.embeddings import InputFeatures, embed_inputs, model_fingerprint
from anivision.engine.loop import softmax_np
from anivision.errors import AnivisionError
from anivision.explain import Explanation, explain_images
from anivision.files import absolute_path, atomic_write_json, read_json
from anivision.models.classifier import Classifier
from anivision.tasks.classify.config import TrainConfig
from anivision.tasks.classify.data import split_paths
from anivision.tasks.classify.model import load_run

#: Where :meth:`ImageClassifier.unknown_threshold` keeps the validation images' top logits.
CALIBRATION_FILE = "unknown_calibration.json"


@dataclass
class Prediction:
    """The prediction for one image.

    Attributes:
        label: the most probable class.
        prob: its probability.
        topk: ``(label, probability)`` pairs, most probable first.
        source: the image's path, or ``<image i>`` for the i-th in-memory image.
    """

    label: str
    prob: float
    topk: list[tuple[str, float]] = field(default_factory=list)
    source: str = ""


class ImageClassifier:
    """A trained classifier run: ``predict``, ``predict_proba``, ``embed`` and ``evaluate``.

    Build it with :meth:`load` (or ``anivision.load(run_dir)``). Calls are batched, show no
    progress bar unless asked and print nothing.

    Attributes:
        model: the :class:`~anivision.models.classifier.Classifier` in eval mode.
        classes: class names in output order.
        data_config: input size and normalisation.
        config: the run's :class:`TrainConfig`.
        run_dir: the run folder.
        metrics: the run's test metrics (``metrics.json``), or ``{}``.
    """

    def __init__(
        self, model: Classifier, classes: list[str], data_config: DataConfig, config: TrainConfig, run_dir: str | Path,
        metrics: dict[str, Any] | None = None, engine: str = "torch",
    ) -> None:
        self.model = model
        # torch, or onnx: the run exported once to RUN/onnx/ and run with ONNX Runtime.
        self.runner = EngineRunner(engine, lambda: classifier_spec(self.model, self.classes, self.data_config, self.run_dir), Path(run_dir) / "onnx")
        self.classes = list(classes)
        self.data_config = data_config
        self.config = config
        self.run_dir = Path(run_dir)
        self.metrics = dict(metrics or {})

    @classmethod
    def load(cls, run_dir: str | Path, device: str | None = None, engine: str = "torch") -> "ImageClassifier":
        """Rebuild a finished run from its folder (no hub access: the run's own weights); ``engine``: torch or onnx."""
        model, cfg, classes, dcfg = load_run(run_dir, device)
        metrics_path = Path(run_dir) / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
        return cls(model, classes, dcfg, cfg, run_dir, metrics, engine)

    def __repr__(self) -> str:
        return f"ImageClassifier({str(self.run_dir)!r}, backbone={self.config.backbone!r}, classes={len(self.classes)})"

    # ------------------------------------------------------------------ outputs

    def outputs(self, images: ImageInput | Iterable[ImageInput], what: str = "logits", batch_size: int = 64, progress: bool = False) -> InputFeatures:
        """Logits (M, C) or backbone features (M, D) of the readable images, and which inputs they are."""
        module = self.runner.pick(self.model, "logits") if what == "logits" else self.runner.pick(self.model.backbone, "embeddings")
        width = len(self.classes) if what == "logits" else int(self.model.backbone.num_features)
        return embed_inputs(module, images, self.data_config, batch_size, progress=progress, width=width)

    def predict_proba(self, images: ImageInput | Iterable[ImageInput], batch_size: int = 64, skip_unreadable: bool = False, progress: bool = False) -> np.ndarray:
        """(N, C) class probabilities (float64, softmax of the logits), one row per readable input.

        Raises:
            AnivisionError: an unreadable file (unless ``skip_unreadable``), or a bad array.
        """
        out = self.outputs(images, "logits", batch_size, progress).checked(skip_unreadable)
        return softmax_np(out.values.astype(np.float64)) if len(out.values) else np.zeros((0, len(self.classes)))

    def predict(self, images: ImageInput | Iterable[ImageInput], top_k: int = 5, batch_size: int = 64, skip_unreadable: bool = False,
                progress: bool = False, reject_rate: float | None = None) -> list[Prediction]:
        """The top-``k`` classes of each image (paths, folders, globs, PIL images, uint8 arrays).

        ``reject_rate``: label ``unknown`` the images whose top logit is below the threshold of
        :meth:`unknown_threshold` (about that share of images of the run's classes is rejected).

        Returns:
            One :class:`Prediction` per readable input, in input order (folders sorted).

        Raises:
            AnivisionError: an unreadable file (unless ``skip_unreadable``), a bad array, or ``top_k < 1``.
        """
        if top_k < 1:
            raise AnivisionError("top_k must be at least 1")
        out = self.outputs(images, "logits", batch_size, progress).checked(skip_unreadable)
        preds = self.rank(out, top_k)[0] if len(out.values) else []
        if reject_rate is not None and preds:
            preds = mark_unknown(preds, out.values, self.unknown_threshold(reject_rate, batch_size)["threshold"])
        return preds

    def rank(self, out: InputFeatures, top_k: int = 5) -> tuple[list[Prediction], np.ndarray]:
        """Predictions from :meth:`outputs`' logits, with the (M, C) probabilities."""
        probs = softmax_np(out.values.astype(np.float64))
        k = max(1, min(top_k, len(self.classes)))
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        preds = []
        for j, i in enumerate(out.rows):
            top = [(self.classes[int(c)], float(probs[j, c])) for c in order[j]]
            preds.append(Prediction(top[0][0], top[0][1], top, out.decoded.paths[int(i)]))
        return preds, probs

    def unknown_threshold(self, reject_rate: float, batch_size: int = 64, progress: bool = False, data_root: str | Path | None = None) -> dict[str, Any]:
        """Open set for a classifier: the max-logit threshold below which an image is ``unknown``.

        The threshold is the ``reject_rate`` quantile of the top logit over the run's validation
        images (never trained on), so about that share of images of the run's own classes is
        called ``unknown``; images of other classes score lower and are rejected more often
        (RESULTS.md section 18). The top logit separates unknown characters better than
        distances to prototypes of the same backbone's features.

        Returns:
            ``{"threshold", "reject_rate", "calibration_images", "score": "max_logit"}``.

        Raises:
            AnivisionError: ``reject_rate`` outside [0, 1), or a run without validation images.
        """
        if not 0 <= reject_rate < 1:
            raise AnivisionError(f"--reject-rate must be in [0, 1), got {reject_rate}")
        paths = split_paths(self.run_dir, self.config, "val", data_root)
        if not paths:
            raise AnivisionError(f"{self.run_dir}: no validation images to calibrate the 'unknown' threshold on")
        top = self._validation_top_logits(paths, batch_size, progress)
        return {"threshold": float(np.quantile(top, reject_rate)), "reject_rate": reject_rate,
                "calibration_images": int(len(top)), "score": "max_logit"}

    def _validation_top_logits(self, paths: list[str], batch_size: int, progress: bool) -> np.ndarray:
        """The top logit of each readable validation image, kept in ``RUN/unknown_calibration.json``
        under a key of the weights and the image files (paths, sizes, modification times, as the
        feature cache), so later calls skip the pass over them."""
        cache = self.run_dir / CALIBRATION_FILE
        key = hashlib.sha1(json.dumps([model_fingerprint(self.model), files_fingerprint(paths)]).encode()).hexdigest()[:16]
        try:
            saved = read_json(cache, expect=dict) if cache.is_file() else {}
        except AnivisionError:
            saved = {}  # a damaged cache is recomputed and replaced
        if saved.get("key") == key and isinstance(saved.get("top_logits"), list):
            return np.asarray(saved["top_logits"], dtype=np.float64)
        out = self.outputs(paths, "logits", batch_size, progress)
        if not len(out.values):
            raise AnivisionError(f"{self.run_dir}: none of its {len(paths)} validation images is readable")
        top = out.values.max(1).astype(np.float64)
        try:
            atomic_write_json(cache, {"key": key, "score": "max_logit", "top_logits": top.tolist()})
        except OSError:
            pass  # a read-only run folder: the next call computes them again
        return top

    def embed(self, images: ImageInput | Iterable[ImageInput], batch_size: int = 64, skip_unreadable: bool = False, progress: bool = False) -> np.ndarray:
        """(N, D) float32 backbone features (before the head), one row per readable input."""
        return self.outputs(images, "features", batch_size, progress).checked(skip_unreadable).values.astype(np.float32)

    def explain(self, images: ImageInput | Iterable[ImageInput], method: str = "gradcam++", class_name: str | None = None, batch_size: int = 16, skip_unreadable: bool = False) -> list[Explanation]:
        """Grad-CAM(++) heat maps of the predicted class (or ``class_name``) for each readable image.

        Returns:
            One :class:`~anivision.explain.Explanation` per readable input, in input order.

        Raises:
            AnivisionError: an unknown ``method`` or ``class_name``, an unreadable file (unless
                ``skip_unreadable``), or pytorch-grad-cam missing (``pip install "anivision[explain]"``).
        """
        return explain_images(self.model, self.classes, self.data_config, images, method, class_name, batch_size, skip_unreadable)


def classifier_spec(model: Classifier, classes: list[str], dcfg: DataConfig, run_dir: str | Path) -> ExportSpec:
    """What a classifier run exports: logits and backbone embeddings, with its class names."""
    return ExportSpec(ClassifierOutputs(model), "classifier", dcfg, ["logits", "embeddings"], model_fingerprint(model), absolute_path(run_dir), list(classes))


def mark_unknown(preds: list[Prediction], logits: np.ndarray, threshold: float) -> list[Prediction]:
    """Predictions whose top logit is below ``threshold`` become ``unknown`` (with the top class's
    probability), the most probable classes following, as ``identify`` reports its unknowns."""
    out = []
    for p, top in zip(preds, logits.max(1)):
        if top < threshold:
            p = Prediction("unknown", p.prob, [("unknown", p.prob)] + p.topk[: max(0, len(p.topk) - 1)], p.source)
        out.append(p)
    return out


def predict_paths(
    run_dir: str | Path, inputs: list[str], top_k: int = 5, batch_size: int = 64, progress: bool = True, engine: str = "torch",
    reject_rate: float | None = None,
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """``anivision predict``: top-k predictions of a run for image files, folders or globs.

    ``reject_rate``: call images ``unknown`` below the max-logit threshold of
    :meth:`ImageClassifier.unknown_threshold` (``pred_1`` is then ``unknown`` with the top
    class's probability, and the top classes follow, as ``identify`` does).

    Returns:
        (rows, skipped): one row per readable image with ``path``, ``pred_i``, ``prob_i``;
        ``skipped`` maps unreadable paths to their reason.
    """
    clf = ImageClassifier.load(run_dir, engine=engine)
    out = clf.outputs(inputs, "logits", batch_size, progress)
    preds = clf.rank(out, top_k)[0] if len(out.values) else []
    if reject_rate is not None and preds:
        preds = mark_unknown(preds, out.values, clf.unknown_threshold(reject_rate, batch_size, progress)["threshold"])
    rows = []
    for p in preds:
        row: dict[str, Any] = {"path": p.source}
        for r, (label, prob) in enumerate(p.topk, 1):
            row[f"pred_{r}"], row[f"prob_{r}"] = label, prob
        rows.append(row)
    return rows, out.skipped
