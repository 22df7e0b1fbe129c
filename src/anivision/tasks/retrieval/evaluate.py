"""Evaluation of the cross-role protocol on cached embeddings: per fold, mean +/- std over folds,
a trained run's folds again (:func:`evaluate_run`) and the untrained baseline on the same folds
(:func:`evaluate_baseline`).

A retrieval run folder holds no other path than its data's: ``data.json``'s ``source``, recorded
absolute (:func:`data_summary`), so ``retrieval evaluate RUN`` finds it from any working
directory and after the run folder moved (fold models are ``model.json`` + safetensors inside
the run). When the data moved, it is given again (:func:`run_data_source`); the run's
``folds.json`` then checks that it still gives the same folds.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anivision.files import absolute_path
from anivision.data.reid import DEFAULT_FOLDS, DEFAULT_QUERY_RATIO, Fold, ReidImages, make_folds
from anivision.data.transforms import DataConfig
from anivision.embeddings import embed_paths, pick_device
from anivision.errors import AnivisionError
from anivision.files import atomic_write_json
from anivision.metrics.retrieval import pairwise_distances, retrieval_metrics
from anivision.models.backbone import data_config
from anivision.models.reid_head import EmbeddingModel, ReidModel
from anivision.reports.retrieval import SUMMARY_KEYS, write_report
from anivision.tasks.retrieval.config import RetrievalConfig, load_run_config
from anivision.tasks.retrieval.model import load_fold_model, make_backbone

log = logging.getLogger(__name__)

#: Length of the stored CMC curves.
MAX_RANK = 50


def _per_work(res: dict[str, Any], q_works: np.ndarray, g_works: np.ndarray) -> dict[str, dict[str, float | int]]:
    """AP and INP averaged over each work's queries, with its query and gallery counts."""
    out: dict[str, dict[str, float | int]] = {}
    for w in sorted(set(q_works)):
        m = q_works == w
        out[w] = {
            "AP": float(np.nanmean(res["ap"][m])),
            "INP": float(np.nanmean(res["inp"][m])),
            "n_query": int(m.sum()),
            "n_gallery": int((g_works == w).sum()),
        }
    return out


def _examples(
    dist: np.ndarray, data: ReidImages, q_idx: np.ndarray, g_idx: np.ndarray, seed: int, n_examples: int, top_k: int
) -> list[dict[str, Any]]:
    """Example queries for the report: one per work in turn (seeded), so the grid shows several works."""
    works = np.asarray(data.works, dtype=object)
    q_works, g_works = works[q_idx], works[g_idx]
    rng = np.random.default_rng(seed)
    by_work = {w: rng.permutation(np.flatnonzero(q_works == w)) for w in sorted(set(q_works))}
    ws = list(by_work)
    examples = []
    for i in range(n_examples if ws else 0):
        w = ws[i % len(ws)]
        if i // len(ws) >= len(by_work[w]):
            continue
        qi = int(by_work[w][i // len(ws)])
        top = [
            {
                "path": data.paths[g_idx[j]],
                "work": str(g_works[j]),
                "role": data.roles[g_idx[j]],
                "dist": float(dist[qi, j]),
                "correct": bool(g_works[j] == q_works[qi]),
            }
            for j in np.argsort(dist[qi], kind="stable")[:top_k]
        ]
        examples.append({"query": data.paths[q_idx[qi]], "work": str(q_works[qi]), "role": data.roles[q_idx[qi]], "top": top})
    return examples


def fold_metrics(
    features: np.ndarray,
    valid: np.ndarray,
    data: ReidImages,
    fold: Fold,
    metric: str = "cosine",
    n_examples: int = 6,
    top_k: int = 5,
) -> dict[str, Any]:
    """Cross-role retrieval metrics of one fold from the features of its query and gallery images.

    Args:
        features: (n_query + n_gallery, D) features, queries first (``fold.query_idx`` order),
            then the gallery (``fold.gallery_idx`` order).
        valid: (n_query + n_gallery,) bool; unreadable images are left out on both sides.
        data: all images (for works, roles, paths).
        fold: the fold.
        metric: ``cosine`` or ``euclidean``.
        n_examples: queries kept, with their top-``top_k`` gallery items, for the report grid.
        top_k: gallery items per example query.

    Returns:
        JSON-able dict: the :func:`retrieval_metrics` scalars and ``cmc`` (list), counts,
        ``per_work`` (AP/INP averaged over each work's queries) and ``examples``.
    """
    nq = len(fold.query_idx)
    q_idx, g_idx = fold.query_idx[valid[:nq]], fold.gallery_idx[valid[nq:]]
    q_feat, g_feat = features[:nq][valid[:nq]], features[nq:][valid[nq:]]
    works = np.asarray(data.works, dtype=object)
    q_works, g_works = works[q_idx], works[g_idx]
    dist = pairwise_distances(q_feat, g_feat, metric)
    res = retrieval_metrics(dist, q_works.astype(str), g_works.astype(str), max_rank=MAX_RANK)
    out = {k: res[k] for k in ("mAP", "mINP", "rank1", "rank5", "rank10", "n_valid_queries", "n_excluded_queries")}
    out.update(
        fold=fold.index,
        cmc=res["cmc"].tolist(),
        test_works=fold.test_works,
        excluded_works=fold.excluded_works,
        n_query=int(len(q_idx)),
        n_gallery=int(len(g_idx)),
        n_unreadable=int((~valid).sum()),
        n_query_roles=sum(len(r) for r in fold.query_roles.values()),
        n_gallery_roles=sum(len(r) for r in fold.gallery_roles.values()),
        per_work=_per_work(res, q_works, g_works),
        examples=_examples(dist, data, q_idx, g_idx, fold.index, n_examples, top_k),
    )
    return out


def fold_paths(data: ReidImages, fold: Fold) -> list[str]:
    """A fold's query paths, then its gallery paths (the row order :func:`fold_metrics` expects)."""
    return [data.paths[i] for i in fold.query_idx] + [data.paths[i] for i in fold.gallery_idx]


def evaluate_fold_model(
    model: ReidModel,
    dcfg: DataConfig,
    data: ReidImages,
    fold: Fold,
    metric: str = "cosine",
    cache_dir: str | Path | None = None,
    batch_size: int = 64,
    progress: bool = True,
) -> dict[str, Any]:
    """Embed a fold's query and gallery images with a trained model (BNNeck features) and score them."""
    emb = embed_paths(EmbeddingModel(model), fold_paths(data, fold), dcfg, batch_size=batch_size, cache_dir=cache_dir, progress=progress)
    return fold_metrics(emb.features, emb.valid, data, fold, metric)


def summarize_folds(fold_results: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample std (ddof=1; 0 for one fold) over folds of :data:`SUMMARY_KEYS`, and the mean CMC."""
    if not fold_results:
        raise AnivisionError("no finished fold to summarise")
    out: dict[str, Any] = {"mean": {}, "std": {}}
    for k in SUMMARY_KEYS:
        v = np.array([r[k] for r in fold_results], dtype=np.float64)
        out["mean"][k] = float(v.mean())
        out["std"][k] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    out["cmc_mean"] = np.mean([np.asarray(r["cmc"]) for r in fold_results], axis=0).tolist()
    out["n_folds"] = len(fold_results)
    out["excluded_works"] = sorted(w for r in fold_results for w in r["excluded_works"])
    return out


def data_summary(data: ReidImages, source: str | Path) -> dict[str, Any]:
    """Counts for ``data.json`` and the report: totals, per work, per role; ``source`` made absolute."""
    return {
        "source": absolute_path(source) if str(source) else "",
        "images": len(data),
        "works": len(data.work_names),
        "roles": len(set(data.role_keys())),
        "ignored_files": len(data.ignored),
        "per_work": data.work_counts(),
        "per_role": data.role_counts(),
    }


def run_data_source(run_dir: str | Path, data: str | Path | None = None) -> str:
    """The data a run is evaluated on: ``data`` when given, else the ``source`` in its ``data.json``.

    Raises:
        AnivisionError: no data given and none recorded, or the recorded data is not there any
            more (the message says to pass ``--data``).
    """
    if data:
        return str(data)
    saved = Path(run_dir) / "data.json"
    source = json.loads(saved.read_text()).get("source") if saved.exists() else None
    if not source:
        raise AnivisionError(f"{run_dir}: the run does not record its data; pass --data ROOT")
    if not Path(source).exists():
        raise AnivisionError(f"{source}: the data of the run {run_dir} is not there any more; pass its new location with --data ROOT")
    return absolute_path(source)


def model_info(cfg: RetrievalConfig) -> dict[str, Any]:
    """The ``model`` block of a trained run's summary."""
    return {k: getattr(cfg, k) for k in ("backbone", "weights", "preset", "img_size", "epochs", "p", "k", "metric")}


def run_summary(
    kind: str,
    model: dict[str, Any],
    folds: int,
    query_ratio: float,
    seed: int,
    data: ReidImages,
    data_source: str | Path,
    command: str | None,
    results: list[dict[str, Any]],
) -> dict[str, Any]:
    """The ``metrics.json`` of a run: what was evaluated, on what, per fold and mean +/- std."""
    return {
        "kind": kind,
        "model": model,
        "protocol": {"folds": folds, "query_ratio": query_ratio, "seed": seed},
        "data": {k: v for k, v in data_summary(data, data_source).items() if not k.startswith("per_")},
        "command": command,
        "folds": results,
        **summarize_folds(results),
    }


def evaluate_run(
    run_dir: str | Path,
    data: ReidImages,
    out_dir: str | Path | None = None,
    data_source: str | Path = "",
    cache_dir: str | Path | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """Re-evaluate every trained fold of a run on its own folds; ``metrics.json`` + ``report.md`` in ``out_dir``.

    Raises:
        AnivisionError: not a run folder, the data no longer gives the run's folds, or no fold
            has a trained model.
    """
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    out_dir = Path(out_dir) if out_dir else run_dir
    folds = make_folds(data, cfg.folds, cfg.query_ratio, cfg.seed)
    saved = run_dir / "folds.json"
    if saved.exists() and json.loads(saved.read_text()) != json.loads(json.dumps([f.describe() for f in folds])):
        raise AnivisionError(f"{saved}: the data gives different folds than the run was trained on (changed or different --data)")
    results = []
    for fold in folds:
        fold_dir = run_dir / f"fold{fold.index}"
        if not (fold_dir / "model.safetensors").exists():
            log.warning("fold %d: no trained model in %s; skipped", fold.index, fold_dir)
            continue
        model, dcfg = load_fold_model(fold_dir, device)
        res = evaluate_fold_model(model, dcfg, data, fold, cfg.metric, cache_dir, cfg.eval_batch_size, progress)
        atomic_write_json(out_dir / f"fold{fold.index}" / "metrics.json", res)
        results.append(res)
    if not results:
        raise AnivisionError(f"{run_dir}: no fold has a trained model (run 'anivision retrieval train' first)")
    summary = run_summary("trained", model_info(cfg), cfg.folds, cfg.query_ratio, cfg.seed, data, data_source, command, results)
    atomic_write_json(out_dir / "metrics.json", summary)
    write_report(out_dir, summary)
    return summary


def evaluate_baseline(
    data: ReidImages,
    backbone: str,
    weights: str,
    out_dir: str | Path,
    img_size: int = 128,
    folds: int = DEFAULT_FOLDS,
    query_ratio: float = DEFAULT_QUERY_RATIO,
    seed: int = 0,
    metric: str = "cosine",
    data_source: str | Path = "",
    cache_dir: str | Path | None = None,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    progress: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """The untrained baseline: the backbone's pooled features, scored on the same folds as training.

    All images are embedded once (features do not depend on the fold), then each fold is scored
    on its query and gallery rows.

    Returns:
        The summary (also ``out_dir/metrics.json``; ``report.md`` beside it).
    """
    fold_list = make_folds(data, folds, query_ratio, seed)
    model = make_backbone(backbone, weights, img_size).to(pick_device(str(device) if device else None)).eval()
    dcfg = data_config(model, img_size)
    emb = embed_paths(model, data.paths, dcfg, batch_size=batch_size, cache_dir=cache_dir, progress=progress)
    results = []
    for fold in fold_list:
        rows = np.concatenate([fold.query_idx, fold.gallery_idx])
        results.append(fold_metrics(emb.features[rows], emb.valid[rows], data, fold, metric))
    info = {"backbone": backbone, "weights": weights, "img_size": img_size, "metric": metric}
    summary = run_summary("untrained", info, folds, query_ratio, seed, data, data_source, command, results)
    out_dir = Path(out_dir)
    atomic_write_json(out_dir / "metrics.json", summary)
    write_report(out_dir, summary)
    return summary
