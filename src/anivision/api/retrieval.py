"""``anivision.retrieval``: style retrieval from Python.

::

    import anivision as av
    retriever = av.retrieval.load("runs/style")                       # a trained retrieval run
    for r in retriever.search(["query.png"], gallery="data/style", top_k=5):
        print(r.source, r.work, r.votes)
"""

from __future__ import annotations

from pathlib import Path

from anivision.tasks.retrieval import SearchResult, StyleRetriever


def load(run: str | Path, fold: int | None = None, device: str | None = None, engine: str = "torch") -> StyleRetriever:
    """The model of ``fold`` (default: the first trained one) of a retrieval run (``embed``, ``search``);
    ``engine="onnx"``: queries through ONNX Runtime."""
    return StyleRetriever.load(run, fold, device, engine)


__all__ = ["SearchResult", "StyleRetriever", "load"]
