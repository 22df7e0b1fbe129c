"""Gallery index speed, recall and memory (anivision.index).

Parts (run one per command; each prints a JSON line and writes it under --out):

- ``exact100k``: today's retrieval search (full distance matrix + a full stable argsort per
  row, as ``tasks/retrieval/search.py`` did) against the ``exact`` index (argpartition top-k)
  on a 100,000 x 1,280 gallery, contenders alternated.
- ``million``: a 1,000,000 x 1,280 float32 gallery of clustered synthetic vectors (5 GB):
  the exact numpy index, faiss flat, IVF-PQ (parameters sized for the whole gallery) with exact
  re-ranking, swept over nprobe and over the re-ranked shortlist (``--k-factors``; 1 = the PQ
  codes' own top k); build time, search time per query (batches of 100 and single queries),
  recall@10 against exact, the index's bytes and the process's peak memory (``ru_maxrss``).
  On a shared CPU run it with ``OMP_WAIT_POLICY=PASSIVE`` (faiss's spinning OpenMP threads
  otherwise make single queries and the build several times slower: RESULTS.md section 16).
- ``real``: recall@10 and time of IVF-PQ against exact on real embeddings
  (``anivision embed`` output: embeddings.npy); 500 held-out images are the queries.

Usage::

    nice -n 5 python benchmarks/index_speed.py exact100k --threads 2
    OMP_WAIT_POLICY=PASSIVE nice -n 5 python benchmarks/index_speed.py million --threads 2 [--n 1000000]
    anivision embed ../shared/data/characters --backbone tf_efficientnet_lite0 --out /tmp/emb/characters
    nice -n 5 python benchmarks/index_speed.py real --threads 2 --embeddings /tmp/emb/characters /tmp/emb/anime-vs-photo
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from anivision.index import VectorIndex, build_index, ivfpq_params
from anivision.metrics.retrieval import pairwise_distances


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def recall(truth: np.ndarray, found: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(truth, found)]))


def clustered(n: int, dim: int, clusters: int, seed: int, draw_seed: int | None = None, chunk: int = 50_000) -> np.ndarray:
    """(n, dim) float32: unit centres (from ``seed``) plus noise of about the same norm (from
    ``draw_seed``, default ``seed``), built in chunks: a mixture of ``clusters`` Gaussians."""
    centres = np.random.default_rng(seed).standard_normal((clusters, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    rng = np.random.default_rng(seed if draw_seed is None else draw_seed + 10**6)
    out = np.empty((n, dim), np.float32)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        out[s:e] = rng.standard_normal((e - s, dim), dtype=np.float32)
        out[s:e] *= 1.0 / np.sqrt(dim)
        out[s:e] += centres[rng.integers(0, clusters, e - s)]
    return out


def timed(fn, repeat: int = 1):
    best, result = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def index_bytes(index: VectorIndex) -> int:
    if index.kind == "exact":
        return int(index._vectors.nbytes)
    import faiss  # the [index] extra: only for the faiss kinds

    return int(faiss.serialize_index(index._faiss).nbytes)


def part_exact100k(args: argparse.Namespace) -> dict:
    g = clustered(args.n or 100_000, args.dim, 1000, seed=1)
    q = clustered(args.queries, args.dim, 1000, seed=1, draw_seed=2)
    k = 10

    def today() -> np.ndarray:
        dist = pairwise_distances(q, g, "cosine")
        return np.stack([np.argsort(row, kind="stable")[:k] for row in dist])

    index = build_index(g, "exact", "cosine")
    rounds = {"full_argsort": [], "exact_index": [], "matmul_only": [], "argsort_only": [], "argpartition_only": []}
    dist = pairwise_distances(q, g, "cosine")
    qn, gn = q / np.linalg.norm(q, axis=1, keepdims=True), index._vectors  # the product both paths do: the floor
    for _ in range(args.repeat):  # alternate the contenders
        t, a = timed(today)
        rounds["full_argsort"].append(t)
        t, (_, b) = timed(lambda: index.search(q, k))
        rounds["exact_index"].append(t)
        rounds["matmul_only"].append(timed(lambda: qn @ gn.T)[0])
        rounds["argsort_only"].append(timed(lambda: np.argsort(dist, axis=1, kind="stable")[:, :k])[0])
        rounds["argpartition_only"].append(timed(lambda: np.argpartition(dist, k - 1, axis=1)[:, :k])[0])
    med = {name: float(np.median(v)) for name, v in rounds.items()}
    return {
        "part": "exact100k", "n": len(g), "dim": args.dim, "queries": len(q), "same_top10": bool((a == b).all()),
        "ms_per_query": {name: 1000 * v / len(q) for name, v in med.items()},
        "speedup_search": med["full_argsort"] / med["exact_index"], "speedup_selection": med["argsort_only"] / med["argpartition_only"],
        "peak_gib": peak_gib(),
    }


def measure(index: VectorIndex, q: np.ndarray, truth: np.ndarray | None, singles: int, **kw) -> dict:
    t_batch, (_, found) = timed(lambda: index.search(q, 10, **kw))
    t_single = [timed(lambda i=i: index.search(q[i:i + 1], 10, **kw))[0] for i in range(min(singles, len(q)))]
    return {
        "ms_per_query_batch": 1000 * t_batch / len(q), "ms_single_query": 1000 * float(np.median(t_single)) if t_single else None,
        "recall_at_10": recall(truth, found) if truth is not None else 1.0, "index_mib": index_bytes(index) / 2**20,
        "peak_gib_so_far": peak_gib(),
    }


def write_exact_folder(folder: Path, n: int, dim: int, clusters: int, chunk: int = 50_000) -> None:
    """The million-vector gallery as an ``exact`` index folder, generated and L2-normalised chunk
    by chunk straight into ``vectors.npy`` (so the 5 GB never sit in this process twice)."""
    folder.mkdir(parents=True, exist_ok=True)
    v = np.lib.format.open_memmap(folder / "vectors.npy", mode="w+", dtype=np.float32, shape=(n, dim))
    centres = np.random.default_rng(1).standard_normal((clusters, dim), dtype=np.float32)  # as clustered(seed=1)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    rng = np.random.default_rng(1000)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        x = rng.standard_normal((e - s, dim), dtype=np.float32) / np.sqrt(dim) + centres[rng.integers(0, clusters, e - s)]
        v[s:e] = x / np.linalg.norm(x, axis=1, keepdims=True)
    v.flush()
    del v
    np.save(folder / "ids.npy", np.arange(n, dtype=np.int64))
    meta = {"format": 1, "kind": "exact", "metric": "cosine", "dim": dim, "fingerprint": "synthetic", "count": n, "dtype": "float32", "params": {}}
    (folder / "index.json").write_text(json.dumps(meta))


def build_chunked(g: np.ndarray, kind: str, chunk: int = 200_000, **params) -> VectorIndex:
    """A faiss-kind index of the memory-mapped ``g``, added in chunks (ivfpq trains on the first)."""
    index = VectorIndex(g.shape[1], "cosine", kind, "synthetic", **params)
    for s in range(0, len(g), chunk):
        index.add(np.asarray(g[s:s + chunk]))
    return index


def part_million(args: argparse.Namespace) -> dict:
    n = args.n or 1_000_000
    folder = Path(args.work) / f"gallery-{n}x{args.dim}"
    t0 = time.perf_counter()
    if not (folder / "index.json").is_file():
        write_exact_folder(folder, n, args.dim, 20_000)
    q = clustered(args.queries, args.dim, 20_000, seed=1, draw_seed=2)  # new points of the same mixture
    out: dict = {"part": "million", "n": n, "dim": args.dim, "queries": len(q), "gen_s": time.perf_counter() - t0, "kinds": {}}
    exact = VectorIndex.load(folder, mmap=True)  # pages in the page cache, not this process's heap
    truth = exact.search(q, 10)[1]  # also pages the vectors in
    out["kinds"]["exact"] = measure(exact, q, None, args.singles)
    print(json.dumps(out), flush=True)
    g = exact._vectors
    for name, kind in (("faiss", "faiss"), ("ivfpq+rerank", "ivfpq")):
        if kind not in args.kinds:
            continue
        params = ivfpq_params(n, args.dim) if kind == "ivfpq" else {}  # sized for the whole gallery, not its first chunk
        t, index = timed(lambda kind=kind, params=params: build_chunked(g, kind, **params))
        out["kinds"][name] = {"build_s": t, "params": index.params} | measure(index, q, truth, args.singles)
        if kind == "ivfpq":
            out["kinds"][name]["nprobe_sweep"] = sweep(index, q, truth)
            # the shortlist re-ranked exactly: k_factor x k candidates (1: the PQ codes' own top k), on the same trained index
            for kf in args.k_factors:
                index._faiss.k_factor = float(kf)
                out["kinds"][name].setdefault("k_factor_sweep", {})[kf] = sweep(index, q, truth)
        del index
        print(json.dumps(out), flush=True)
    return out


def sweep(index: VectorIndex, q: np.ndarray, truth: np.ndarray, probes: tuple[int, ...] = (8, 16, 32, 64, 128)) -> dict:
    """Recall@10 and batch time per query of an ``ivfpq`` index at several ``nprobe``."""
    return {p: {"recall_at_10": recall(truth, index.search(q, 10, nprobe=p)[1]),
                "ms_per_query_batch": 1000 * timed(lambda p=p: index.search(q, 10, nprobe=p))[0] / len(q)} for p in probes}


def part_real(args: argparse.Namespace) -> dict:
    v = np.concatenate([np.load(Path(d) / "embeddings.npy") for d in args.embeddings]).astype(np.float32)
    rng = np.random.default_rng(0)
    held = rng.choice(len(v), min(500, len(v) // 10), replace=False)
    mask = np.ones(len(v), bool)
    mask[held] = False
    g, q = v[mask], v[held]
    exact = build_index(g, "exact", "cosine")
    truth = exact.search(q, 10)[1]
    out: dict = {"part": "real", "sources": args.embeddings, "n": len(g), "dim": g.shape[1], "queries": len(q), "kinds": {}}
    out["kinds"]["exact"] = measure(exact, q, None, args.singles)
    for name, params in (("ivfpq+rerank", {}), ("ivfpq codes only", {"rerank": 0})):
        index = build_index(g, "ivfpq", "cosine", **params)
        out["kinds"][name] = {"params": index.params} | measure(index, q, truth, args.singles)
        out["kinds"][name]["nprobe_sweep"] = {p: recall(truth, index.search(q, 10, nprobe=p)[1]) for p in (1, 2, 4, 8, 16, 32)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=("exact100k", "million", "real"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", type=int, help="gallery size (default: 100,000 / 1,000,000)")
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--singles", type=int, default=20, help="single-query searches timed (median)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--kinds", nargs="*", default=["faiss", "ivfpq"], help="million: the faiss kinds to build (training IVF-PQ is the slow part)")
    ap.add_argument("--k-factors", type=int, nargs="*", default=[1, 30, 100], help="million: ivfpq re-ranking shortlist factors also swept")
    ap.add_argument("--embeddings", nargs="*", default=[], help="real: folders from 'anivision embed'")
    ap.add_argument("--out", default="benchmarks/results/index_speed")
    ap.add_argument("--work", default="/tmp/index_speed", help="million: where the generated gallery (an exact index folder, 5 GB) is kept")
    args = ap.parse_args()
    try:
        import faiss  # the [index] extra

        faiss.omp_set_num_threads(args.threads)
    except ImportError:
        pass
    with threadpool_limits(args.threads):
        result = {"exact100k": part_exact100k, "million": part_million, "real": part_real}[args.part](args)
    result["threads"] = args.threads
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / f"{args.part}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
