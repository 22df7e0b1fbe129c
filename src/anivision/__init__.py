"""anivision: recognise what is in anime and manga character images.

The Python API (the command line ``anivision`` calls the same functions)::

    import anivision as av
    clf = av.load("runs/emo-full")                   # any run folder anivision wrote
    preds = clf.predict(["a.png", pil_image, uint8_array], top_k=3)
    preds[0].label, preds[0].prob, preds[0].topk
    clf.embed("folder/")                             # (N, D) float32 features
    clf = av.train(data="data/emotions", strategy="full", epochs=6, out="runs/x")

Public names: :func:`load`, :func:`train`, :class:`ImageClassifier`, :class:`Prediction`,
:class:`AnivisionError`, ``__version__``.
"""

from anivision.api import ImageClassifier, Prediction, load, run_kind, train
from anivision.errors import AnivisionError
from anivision.version import __version__

__all__ = ["AnivisionError", "ImageClassifier", "Prediction", "__version__", "load", "run_kind", "train"]
