"""Gallery indexes: the nearest stored vectors of query vectors, for galleries of any size.

Three kinds, one interface (``add``, ``search``, ``save``, ``load``):

- ``exact``: numpy matrix products, chunked over the queries so that a chunk's distance block
  stays under :data:`CHUNK_BYTES`, and ``np.argpartition`` top-k: only the k best of each row
  are sorted (a full ``argsort`` of a million-wide row is most of the work otherwise).
- ``faiss``: faiss-cpu's exact flat index: ``IndexFlatIP`` on L2-normalised vectors for cosine,
  ``IndexFlatL2`` for euclidean. Same results as ``exact``, faster on big galleries (``[index]`` extra).
- ``ivfpq``: faiss ``IndexIVFPQ`` (inverted lists + product quantisation) for collections of
  about a million vectors and more, trained on a sample of the first vectors added; by default
  its shortlist (``rerank`` x k candidates) is re-ranked with the exact vectors
  (``IndexRefineFlat``), which lifts recall@10 from the PQ codes' ~0.5 to the inverted lists'
  ~0.95+ at the memory cost of the float vectors; ``rerank=0`` keeps only the codes
  (``m`` bytes per vector). Approximate: ``benchmarks/RESULTS.md`` reports its recall.

Distances: ``cosine`` = ``1 - cos``; ``euclidean`` = L2 distance; ``sqeuclidean`` = squared L2
(the few-shot prototypes' distance). Smaller is nearer; ties keep the lower index first, as a
stable full sort would.

An index folder holds ``index.json`` (kind, metric, dim, fingerprint of the model that made
the vectors, count, parameters), ``ids.npy`` and ``vectors.npy`` (exact) or ``index.faiss``
(``faiss.write_index``, not pickle). Loading checks the fingerprint and dimension, so vectors
of one backbone are never searched with queries of another.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from anivision.errors import AnivisionError
from anivision.extras import require
from anivision.files import atomic_write_json, read_json

KINDS = ("exact", "faiss", "ivfpq")
METRICS = ("cosine", "euclidean", "sqeuclidean")
#: Largest (queries x gallery) distance block the exact search holds at once.
CHUNK_BYTES = 256 << 20
META = "index.json"
FORMAT = 1


def _faiss() -> Any:
    return require("faiss", "index", "--index faiss/ivfpq")


def top_k_smallest(d: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` smallest values of each row of ``d`` (Q, N), sorted, ties by lower column first.

    Only the k selected by ``np.argpartition`` are sorted: O(N + k log k) per row instead of a
    full sort's O(N log N).

    Returns:
        (Q, k) values and (Q, k) int64 column indices.
    """
    n = d.shape[1]
    k = min(k, n)
    if k <= 0:
        return np.zeros((d.shape[0], 0), d.dtype), np.zeros((d.shape[0], 0), np.int64)
    cols = np.argpartition(d, k - 1, axis=1)[:, :k] if k < n else np.broadcast_to(np.arange(n), d.shape).copy()
    vals = np.take_along_axis(d, cols, axis=1)
    order = np.lexsort((cols, vals), axis=1)  # by value, then by column (a stable sort's tie order)
    return np.take_along_axis(vals, order, axis=1), np.take_along_axis(cols, order, axis=1).astype(np.int64)


def _normalise(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, np.finfo(x.dtype).tiny)


def ivfpq_params(n: int, dim: int) -> dict[str, int]:
    """Sensible IVF-PQ settings for ``n`` vectors of ``dim``.

    ``nlist`` = the power of two nearest sqrt(n), at most n / 39 (faiss wants 39 training points
    per list; the faiss wiki's 4-16 sqrt(n) costs 4-16x the k-means time on a CPU); ``m`` = the
    largest divisor of ``dim`` up to 64 that leaves at least 2 dimensions per sub-quantiser
    (1,280-d: 64 bytes per vector); 8-bit codes; ``nprobe`` = nlist / 16 lists searched (at least 16);
    the training sample: 64 points per list, at least 256 * 39 for the PQ codebooks.
    """
    if n < 256:
        raise AnivisionError(f"--index ivfpq needs at least 256 vectors to train, got {n}; use --index exact or faiss for a small gallery")
    nlist = max(1, min(2 ** round(math.log2(math.sqrt(n))), n // 39))
    m = max(d for d in range(1, min(64, max(1, dim // 2)) + 1) if dim % d == 0)
    nprobe = min(nlist, max(16, nlist // 16))  # 16 of 64 lists: recall@10 0.96 on real embeddings (RESULTS.md 14)
    return {"nlist": int(nlist), "m": int(m), "nbits": 8, "nprobe": int(nprobe), "train_size": int(min(n, max(64 * nlist, 256 * 39)))}


class VectorIndex:
    """Nearest-neighbour search over stored vectors (see the module docstring for the kinds).

    Args:
        dim: vector dimension.
        metric: ``cosine``, ``euclidean`` or ``sqeuclidean``.
        kind: ``exact``, ``faiss`` or ``ivfpq``.
        fingerprint: what made the vectors (a model fingerprint, a backbone name); loading with
            another one is an error.
        params: ``ivfpq`` overrides: ``nlist``, ``m``, ``nbits``, ``nprobe``, ``train_size``,
            ``rerank`` (shortlist factor for exact re-ranking, 0: none; default 10).
    """

    def __init__(self, dim: int, metric: str = "cosine", kind: str = "exact", fingerprint: str = "", **params: Any) -> None:
        if kind not in KINDS:
            raise AnivisionError(f"--index must be one of {', '.join(KINDS)}, got {kind!r}")
        if metric not in METRICS:
            raise AnivisionError(f"index metric must be one of {', '.join(METRICS)}, got {metric!r}")
        self.dim, self.metric, self.kind, self.fingerprint = int(dim), metric, kind, fingerprint
        self.params: dict[str, Any] = dict(params)
        self.ids = np.zeros(0, np.int64)
        self._vectors: np.ndarray | None = None  # exact: (N, D), normalised for cosine
        self._sq: np.ndarray | None = None  # exact euclidean: (N,) squared norms
        self._faiss: Any = None
        if kind == "faiss":
            faiss = _faiss()
            self._faiss = faiss.IndexFlatIP(self.dim) if metric == "cosine" else faiss.IndexFlatL2(self.dim)

    def __len__(self) -> int:
        return int(len(self.ids))

    def __repr__(self) -> str:
        return f"VectorIndex(kind={self.kind!r}, metric={self.metric!r}, dim={self.dim}, count={len(self)})"

    def _check(self, x: np.ndarray, what: str) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.dim:
            got = x.shape[1] if x.ndim == 2 else f"shape {x.shape}"
            raise AnivisionError(f"{what} have dimension {got}, the index holds {self.dim}-d vectors"
                                 f"{f' of {self.fingerprint}' if self.fingerprint else ''}; embed them with the same model")
        if not np.issubdtype(x.dtype, np.floating):
            x = x.astype(np.float32)
        return x

    def add(self, vectors: np.ndarray, ids: np.ndarray | None = None) -> None:
        """Append (N, D) vectors, with ids (default: their positions, following the ones stored).

        Nothing stored is recomputed: ``exact`` concatenates, ``faiss`` and a trained ``ivfpq``
        add to the faiss index; the first ``add`` to an ``ivfpq`` index trains it on a sample.
        """
        x = self._check(vectors, "vectors")
        new_ids = np.arange(len(self), len(self) + len(x), dtype=np.int64) if ids is None else np.asarray(ids, np.int64).reshape(-1)
        if len(new_ids) != len(x):
            raise AnivisionError(f"add: {len(x)} vectors but {len(new_ids)} ids")
        if len(x) == 0:
            return
        if self.kind == "exact":
            dtype = np.result_type(x.dtype, np.float32) if self._vectors is None else self._vectors.dtype
            y = x.astype(dtype, copy=False)
            y = _normalise(y) if self.metric == "cosine" else y
            y = y.copy() if y is x or y.base is x else y  # never keep a view of the caller's array
            self._vectors = y if self._vectors is None else np.concatenate([self._vectors, y])
            x = y
            if self.metric != "cosine":
                sq = np.einsum("ij,ij->i", x, x)
                self._sq = sq if self._sq is None else np.concatenate([self._sq, sq])
        else:
            x = np.ascontiguousarray(x, dtype=np.float32)
            x = _normalise(x) if self.metric == "cosine" else x
            if self.kind == "ivfpq" and self._faiss is None:
                self._train_ivfpq(x)
            self._faiss.add(x)
        self.ids = np.concatenate([self.ids, new_ids])

    def _train_ivfpq(self, x: np.ndarray) -> None:
        faiss = _faiss()
        p = ivfpq_params(len(x), self.dim) | {"rerank": 10} | self.params
        self.params = p
        inner = faiss.METRIC_INNER_PRODUCT if self.metric == "cosine" else faiss.METRIC_L2
        quantizer = faiss.IndexFlatIP(self.dim) if self.metric == "cosine" else faiss.IndexFlatL2(self.dim)
        ivf = faiss.IndexIVFPQ(quantizer, self.dim, int(p["nlist"]), int(p["m"]), int(p["nbits"]), inner)
        sample = x if len(x) <= p["train_size"] else x[np.sort(np.random.default_rng(0).choice(len(x), int(p["train_size"]), replace=False))]
        ivf.train(sample)
        ivf.nprobe = int(p["nprobe"])
        if p["rerank"]:
            index = faiss.IndexRefineFlat(ivf)
            index.k_factor = float(p["rerank"])
            self._faiss = index
        else:
            self._faiss = ivf
        self._keep = (quantizer, ivf)  # the faiss objects wrapped above live as long as the index

    def search(self, queries: np.ndarray, k: int, nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest stored vectors of each query.

        Args:
            queries: (Q, D) vectors from the same model as the stored ones.
            k: neighbours per query (at most the number stored).
            nprobe: ``ivfpq`` only: inverted lists to visit (default: the index's).

        Returns:
            (Q, k) distances (float32, float64 for a float64 exact index), nearest first, and
            (Q, k) int64 ids.

        Raises:
            AnivisionError: queries of another dimension.
        """
        q = self._check(queries, "query vectors")
        k = min(int(k), len(self))
        if k <= 0 or len(q) == 0:
            return np.zeros((len(q), max(k, 0)), np.float32), np.zeros((len(q), max(k, 0)), np.int64)
        if self.kind == "exact":
            dist, pos = self._search_exact(q, k)
        else:
            dist, pos = self._search_faiss(q, k, nprobe)
        return dist, np.where(pos >= 0, self.ids[np.maximum(pos, 0)], -1)

    def _search_exact(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        g = self._vectors
        assert g is not None
        q = q.astype(g.dtype, copy=False)
        q = _normalise(q) if self.metric == "cosine" else q
        rows = max(1, CHUNK_BYTES // max(1, len(g) * g.dtype.itemsize))
        dists, poss = [], []
        for s in range(0, len(q), rows):
            qc = q[s:s + rows]
            if self.metric == "cosine":  # one sgemm per chunk, negated in place (no second (Q, N) block)
                block = qc @ g.T
                np.negative(block, out=block)
                vals, pos = top_k_smallest(block, k)
                vals = 1.0 + vals
            else:  # ||q||^2 is the same along a row: select on ||g||^2 - 2 q.g, add it after
                block = qc @ g.T
                block *= -2.0
                block += self._sq[None, :]
                vals, pos = top_k_smallest(block, k)
                vals = np.maximum(vals + np.einsum("ij,ij->i", qc, qc)[:, None], 0.0)
                vals = np.sqrt(vals) if self.metric == "euclidean" else vals
            dists.append(vals)
            poss.append(pos)
        return np.concatenate(dists), np.concatenate(poss)

    def _search_faiss(self, q: np.ndarray, k: int, nprobe: int | None) -> tuple[np.ndarray, np.ndarray]:
        faiss = _faiss()
        q = np.ascontiguousarray(q, dtype=np.float32)
        q = _normalise(q) if self.metric == "cosine" else q
        if self.kind == "ivfpq":
            faiss.extract_index_ivf(self._faiss).nprobe = int(nprobe or self.params["nprobe"])
        d, pos = self._faiss.search(q, k)
        if self.metric == "cosine":
            d = 1.0 - d
        elif self.metric == "euclidean":
            d = np.sqrt(np.maximum(d, 0.0))
        return d.astype(np.float32, copy=False), pos.astype(np.int64, copy=False)

    # ------------------------------------------------------------------ files

    def meta(self) -> dict[str, Any]:
        dtype = str(self._vectors.dtype) if self._vectors is not None else "float32"
        return {"format": FORMAT, "kind": self.kind, "metric": self.metric, "dim": self.dim, "fingerprint": self.fingerprint,
                "count": len(self), "dtype": dtype, "params": self.params}

    def save(self, folder: str | Path) -> Path:
        """Write the index into ``folder`` (each file via a temporary name and rename; ``index.json`` last)."""
        d = Path(folder)
        d.mkdir(parents=True, exist_ok=True)
        tag = f".{os.getpid()}.tmp"
        _save_npy(d / "ids.npy", self.ids, tag)
        if self.kind == "exact":
            _save_npy(d / "vectors.npy", self._vectors if self._vectors is not None else np.zeros((0, self.dim), np.float32), tag)
        elif self._faiss is not None:
            tmp = d / f"index.faiss{tag}"
            _faiss().write_index(self._faiss, str(tmp))
            os.replace(tmp, d / "index.faiss")
        atomic_write_json(d / META, self.meta())
        return d

    @classmethod
    def load(cls, folder: str | Path, dim: int | None = None, fingerprint: str | None = None, mmap: bool = False) -> "VectorIndex":
        """Read an index folder; ``dim`` and ``fingerprint``, when given, must match the recorded ones.

        Raises:
            AnivisionError: not an index folder, an incomplete one, or one built with another
                model or dimension.
        """
        d = Path(folder)
        meta = read_meta(d)
        made_by = f"{meta.get('fingerprint') or 'an unnamed model'} ({meta['dim']}-d)"
        if fingerprint is not None and meta.get("fingerprint") != fingerprint:
            raise AnivisionError(f"{d}: index built with {made_by}, not with this model ({fingerprint}); rebuild it")
        if dim is not None and int(meta["dim"]) != int(dim):
            raise AnivisionError(f"{d}: index holds {meta['dim']}-d vectors of {made_by}, this model gives {dim}-d; rebuild it")
        index = cls(int(meta["dim"]), meta["metric"], meta["kind"], meta.get("fingerprint", ""), **meta.get("params", {}))
        index.ids = np.load(d / "ids.npy")
        if meta["kind"] == "exact":
            v = np.load(d / "vectors.npy", mmap_mode="r" if mmap else None)
            index._vectors = v if len(v) else None
            if v.dtype.kind != "f" or v.shape[1:] != (index.dim,):
                raise AnivisionError(f"{d / 'vectors.npy'}: not {index.dim}-d float vectors; rebuild the index")
            if index.metric != "cosine" and len(v):
                index._sq = np.einsum("ij,ij->i", v, v)
            n = len(v)
        else:
            if not (d / "index.faiss").is_file():
                raise AnivisionError(f"{d}: index.faiss is missing; rebuild the index")
            index._faiss = _faiss().read_index(str(d / "index.faiss"))
            n = int(index._faiss.ntotal)
        if n != len(index.ids) or n != int(meta["count"]):
            raise AnivisionError(f"{d}: index files disagree ({n} vectors, {len(index.ids)} ids, index.json says {meta['count']}); rebuild the index")
        return index


def read_meta(folder: str | Path) -> dict[str, Any]:
    """``index.json`` of an index folder.

    Raises:
        AnivisionError: missing or unreadable.
    """
    p = Path(folder) / META
    if not p.is_file():
        raise AnivisionError(f"{folder}: not an index folder (no {META})")
    meta = read_json(p, expect=dict)
    if meta.get("kind") not in KINDS or meta.get("metric") not in METRICS or "dim" not in meta:
        raise AnivisionError(f"{p}: not an anivision index description; rebuild the index")
    return meta


def _save_npy(path: Path, array: np.ndarray, tag: str) -> None:
    tmp = path.with_name(path.name + tag)
    with open(tmp, "wb") as fh:
        np.save(fh, np.asarray(array), allow_pickle=False)
    os.replace(tmp, path)


def build_index(vectors: np.ndarray, kind: str = "exact", metric: str = "cosine", fingerprint: str = "", ids: np.ndarray | None = None, **params: Any) -> VectorIndex:
    """A :class:`VectorIndex` of ``kind`` holding ``vectors`` (N, D)."""
    v = np.asarray(vectors)
    if v.ndim != 2:
        raise AnivisionError(f"vectors must be (N, D), got shape {v.shape}")
    index = VectorIndex(v.shape[1], metric, kind, fingerprint, **params)
    index.add(v, ids)
    return index
