"""The learned anime-face detector: data, training, evaluation and the detector object.

``read_face_boxes`` (``data.py``) reads a face-box folder; ``train_detector`` (``train.py``)
trains a run; ``evaluate_detector`` (``evaluate.py``) measures any detector; ``load_detector``
(``predictor.py``) gives ``learned``, ``lbp`` or a file as an object with ``detect``, for
:func:`anivision.data.faces.detect_faces` and ``crop_faces``.
"""

from anivision.tasks.faces.config import FaceTrainConfig
from anivision.tasks.faces.data import FaceBoxes, FaceImage, read_face_boxes
from anivision.tasks.faces.evaluate import evaluate_detector
from anivision.tasks.faces.predictor import LearnedFaceDetector, load_detector, load_learned, packaged_weights_path
from anivision.tasks.faces.train import train_detector

__all__ = [
    "FaceBoxes",
    "FaceImage",
    "FaceTrainConfig",
    "LearnedFaceDetector",
    "evaluate_detector",
    "load_detector",
    "load_learned",
    "packaged_weights_path",
    "read_face_boxes",
    "train_detector",
]
