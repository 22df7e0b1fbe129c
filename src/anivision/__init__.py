"""anivision: recognise what is in anime and manga character images.

The Python API (the command line ``anivision`` calls the same functions)::

    import anivision as av
    clf = av.load("runs/emo-full")                   # any folder anivision wrote
    preds = clf.predict(["a.png", pil_image, uint8_array], top_k=3)
    preds[0].label, preds[0].prob, preds[0].topk
    clf.embed("folder/")                             # (N, D) float32 features
    clf = av.train(data="data/emotions", strategy="full", epochs=6, out="runs/x")
    gallery = av.enroll("runs/proto", "my_characters/", k_shot=5)    # few-shot run or backbone name
    gallery.identify(["new.png"], top_k=3)           # -> [Identification(label, distance, topk, source)]
    av.retrieval.load("runs/style").search(["q.png"], gallery="data/style", top_k=5)

Public names: :func:`load`, :func:`train`, :func:`enroll`, the namespaces :mod:`fewshot`
(``train``, ``load``, ``model``, ``enroll``) and :mod:`retrieval` (``load``), the classes they
return (:class:`ImageClassifier`, :class:`Prediction`, :class:`Explanation`, :class:`FewShotModel`, :class:`Gallery`,
:class:`Identification`, :class:`StyleRetriever`, :class:`SearchResult`),
:class:`AnivisionError` and ``__version__``. Images may be paths, folders, glob patterns, PIL
images of any mode or uint8 numpy arrays, and are preprocessed exactly as for training.
"""

from anivision.errors import quiet_interrupts_while_starting

quiet_interrupts_while_starting()  # Ctrl-C while the command line imports torch: one line, no traceback

from anivision.api import (  # noqa: E402 - after the hook above
    Explanation,
    FewShotModel,
    Gallery,
    Identification,
    ImageClassifier,
    Prediction,
    SearchResult,
    StyleRetriever,
    embed,
    enroll,
    export,
    fewshot,
    load,
    retrieval,
    run_kind,
    train,
)
from anivision.errors import AnivisionError
from anivision.version import __version__

__all__ = [
    "AnivisionError", "Explanation", "FewShotModel", "Gallery", "Identification", "ImageClassifier", "Prediction", "SearchResult",
    "StyleRetriever", "__version__", "embed", "enroll", "export", "fewshot", "load", "retrieval", "run_kind", "train",
]
