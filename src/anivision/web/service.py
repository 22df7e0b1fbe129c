"""What the web app does with an upload, without any web framework: find the faces, then ask
every loaded model about each face.

:func:`load_models` loads the runs once, through the Python API (:func:`anivision.api.load`).
:class:`Analyzer` turns decoded images into the JSON the page renders: per face, the top-k
labels of every classifier with a Grad-CAM++ overlay, who it is among the gallery's enrolled
characters (or ``unknown``), and the most similar images by style with thumbnails. Images travel
as data URIs, so the page needs nothing but this one answer.

Model calls hold one lock: torch already spreads one call over the CPU cores, and two calls
at once would only fight over them (and over the autograd state Grad-CAM needs).
"""

from __future__ import annotations

import base64
import io
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from anivision.api import Gallery, ImageClassifier, StyleRetriever, load, run_kind
from anivision.data.faces import Box, FaceDetector, crop_region, detect_faces
from anivision.data.images import load_image
from anivision.data.reid import load_reid
from anivision.errors import AnivisionError
from anivision.tasks.faces import load_detector
from anivision.tasks.retrieval.evaluate import run_data_source
from anivision.tasks.retrieval.search import GalleryIndex, build_gallery_index

#: Faces smaller than this (pixels, either side) are not looked for.
MIN_FACE = 32
#: At most this many faces per image are analysed (best detector score first).
MAX_FACES = 8
#: Images whose shorter side is under this are taken as one face, without detection.
DETECT_MIN_SIDE = 96
#: Longest side of the thumbnails in the answer.
THUMB_SIDE = 160
#: Longest side of the Grad-CAM++ overlays in the answer.
OVERLAY_SIDE = 256


def face_detector() -> FaceDetector:
    """The face detector of the app (the packaged learned detector, as ``faces crop``'s default)."""
    return load_detector("learned")


def data_uri(img: Image.Image, fmt: str = "JPEG", max_side: int | None = THUMB_SIDE) -> str:
    """``img`` (shrunk to ``max_side``) as a ``data:image/...;base64,`` URI."""
    if max_side is not None and max(img.size) > max_side:
        img = img.copy()
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.convert("RGB").save(buf, "JPEG", quality=85)
    else:
        img.save(buf, fmt, optimize=False)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


@dataclass
class Models:
    """The models the app answers with; any of them may be missing.

    Attributes:
        classifiers: ``(name, ImageClassifier)`` per ``--run``, in the order given.
        gallery: an enrolled gallery (``--gallery``), or None.
        retriever: a style-retrieval run's model (``--retrieval``), or None.
        index: the retrieval gallery, embedded once at start.
    """

    classifiers: list[tuple[str, ImageClassifier]] = field(default_factory=list)
    gallery: Gallery | None = None
    retriever: StyleRetriever | None = None
    index: GalleryIndex | None = None

    @property
    def empty(self) -> bool:
        return not self.classifiers and self.gallery is None and self.retriever is None

    def describe(self) -> dict[str, Any]:
        """What is loaded, for the page's header (``/api/info``)."""
        return {
            "classifiers": [{"name": n, "run": str(c.run_dir), "classes": len(c.classes), "backbone": c.config.backbone} for n, c in self.classifiers],
            "gallery": None if self.gallery is None else {"path": str(self.gallery.path), "characters": len(self.gallery.classes)},
            "retrieval": None if self.retriever is None or self.index is None else {
                "run": str(self.retriever.run_dir), "gallery_images": len(self.index.paths), "works": len(set(self.index.works)),
            },
        }


def _expect(path: str | Path, kind: str, flag: str) -> None:
    found = run_kind(path)
    if found != kind:
        raise AnivisionError(f"{flag} {path}: a {found} folder, expected a {kind} (see 'anivision serve --help')")


def load_models(
    runs: list[str | Path] | tuple[str | Path, ...] = (),
    gallery: str | Path | None = None,
    retrieval: str | Path | None = None,
    retrieval_gallery: str | Path | None = None,
    workdir: str | Path | None = None,
    device: str | None = None,
) -> Models:
    """Load the runs once (``anivision.load``), and embed the retrieval gallery.

    Args:
        runs: classification run folders.
        gallery: an enrolled gallery folder (``anivision enroll``).
        retrieval: a style-retrieval run folder.
        retrieval_gallery: the images to search (``<work>/<role>/<image>``); default the data
            the retrieval run was trained on (its ``data.json``).
        workdir: where the retrieval gallery's index is written (the app's temporary folder);
            the run folder itself is never written to.
        device: torch device (default: CUDA if available).

    Raises:
        AnivisionError: a folder is missing, of the wrong kind or unfinished.
    """
    models = Models()
    names: set[str] = set()
    for run in runs:
        _expect(run, "classifier", "--run")
        name = Path(run).resolve().name
        base, i = name, 2
        while name in names:
            name, i = f"{base} ({i})", i + 1
        names.add(name)
        models.classifiers.append((name, load(run, device)))
    if gallery is not None:
        _expect(gallery, "gallery", "--gallery")
        models.gallery = load(gallery, device)
    if retrieval is not None:
        _expect(retrieval, "retrieval", "--retrieval")
        models.retriever = load(retrieval, device)
        images = load_reid(run_data_source(retrieval, retrieval_gallery), strict=False)
        if workdir is None:
            raise AnivisionError("load_models: a retrieval run needs a workdir for its gallery index")
        r = models.retriever
        models.index = build_gallery_index(r.model.model, r.data_config, images, Path(workdir) / "search_index", progress=False)
    return models


@dataclass
class Face:
    """One face to analyse: its crop, and its box in the uploaded image (None: the whole image)."""

    crop: Image.Image
    box: Box | None


class Analyzer:
    """Faces and model answers for decoded images; one instance serves every request.

    Args:
        models: what :func:`load_models` loaded.
        top_k: labels, characters and similar images listed per face.
        detector: a face detector (default :func:`face_detector`).
        max_faces: faces analysed per image.
    """

    def __init__(self, models: Models, top_k: int = 5, detector: FaceDetector | None = None, max_faces: int = MAX_FACES) -> None:
        if top_k < 1:
            raise AnivisionError(f"--top-k must be at least 1, got {top_k}")
        self.models = models
        self.top_k = top_k
        self.detector = detector if detector is not None else face_detector()
        self.max_faces = max_faces
        self.lock = threading.Lock()
        self._thumbs: OrderedDict[str, str] = OrderedDict()

    def faces(self, img: Image.Image) -> list[Face]:
        """The faces of ``img`` (best first), or the whole image as one face when none is found."""
        if min(img.size) >= DETECT_MIN_SIDE:
            boxes = [b for b in detect_faces(img, self.detector) if b.w >= MIN_FACE and b.h >= MIN_FACE][: self.max_faces]
            if boxes:
                return [Face(img.crop(crop_region(b, img.width, img.height, 0.25, square=True)), b) for b in boxes]
        return [Face(img, None)]

    def thumbnail(self, path: str) -> str | None:
        """A gallery image as a small data URI (kept for the next request), or None when unreadable."""
        if path in self._thumbs:
            self._thumbs.move_to_end(path)
            return self._thumbs[path]
        try:
            uri = data_uri(load_image(path))
        except AnivisionError:
            return None
        self._thumbs[path] = uri
        while len(self._thumbs) > 512:
            self._thumbs.popitem(last=False)
        return uri

    def analyse(self, images: list[tuple[str, Image.Image]]) -> dict[str, Any]:
        """The answer for ``(name, RGB image)`` pairs: per image its faces, per face every model's view.

        Returns:
            ``{"images": [{"name", "width", "height", "faces": [...]}], "timings": {...}}``; each
            face has ``box`` (``[x, y, w, h]`` or None), ``crop`` (data URI), ``classifiers``
            (``[{"name", "top": [{"label", "prob"}], "overlay"}]``), ``identity``
            (``{"label", "distance", "known", "top"}`` or None) and ``similar``
            (``[{"path", "work", "role", "dist", "thumb"}]``).
        """
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        with self.lock:
            t = time.perf_counter()
            per_image = [self.faces(img) for _, img in images]
            timings["detect"] = time.perf_counter() - t
            crops = [f.crop for faces in per_image for f in faces]
            answers = self._ask_models(crops, timings)
        out, j = [], 0
        for (name, img), faces in zip(images, per_image):
            rows = []
            for f in faces:
                rows.append({"box": None if f.box is None else [f.box.x, f.box.y, f.box.w, f.box.h],
                             "crop": data_uri(f.crop), **answers[j]})
                j += 1
            out.append({"name": name, "width": img.width, "height": img.height, "faces": rows})
        timings["total"] = time.perf_counter() - t0
        return {"images": out, "timings": {k: round(v, 4) for k, v in timings.items()}}

    def _ask_models(self, crops: list[Image.Image], timings: dict[str, float]) -> list[dict[str, Any]]:
        """Per crop: ``classifiers``, ``identity`` and ``similar``, every model called once on all crops."""
        m, k = self.models, self.top_k
        answers: list[dict[str, Any]] = [{"classifiers": [], "identity": None, "similar": []} for _ in crops]
        t = time.perf_counter()
        for name, clf in m.classifiers:
            preds = clf.predict(crops, top_k=k)
            cams = clf.explain(crops, method="gradcam++")  # the predicted class of each crop
            for a, p, cam in zip(answers, preds, cams):
                a["classifiers"].append({"name": name, "top": [{"label": lab, "prob": pr} for lab, pr in p.topk],
                                         "overlay": data_uri(cam.overlay, "PNG", OVERLAY_SIDE), "overlay_label": cam.label})
        timings["classify"] = time.perf_counter() - t
        if m.gallery is not None:
            t = time.perf_counter()
            for a, ident in zip(answers, m.gallery.identify(crops, top_k=min(k, len(m.gallery.classes)))):
                a["identity"] = {"label": ident.label, "distance": ident.distance, "known": ident.known,
                                 "top": [{"label": lab, "distance": d} for lab, d in ident.topk]}
            timings["identify"] = time.perf_counter() - t
        if m.retriever is not None and m.index is not None:
            t = time.perf_counter()
            for a, found in zip(answers, m.retriever.search(crops, m.index, top_k=k)):
                a["similar"] = [{"path": Path(h["path"]).name, "work": h["work"], "role": h["role"], "dist": h["dist"],
                                 "thumb": self.thumbnail(h["path"])} for h in found.hits]
            timings["similar"] = time.perf_counter() - t
        return answers
