"""Anime style retrieval: re-identification training and the cross-role, k-fold protocol.

Given images of *different* roles (characters), find the images from the same work (anime,
rendering style). This package is the library side of ``anivision retrieval``:

- :mod:`.config`: presets ``agw`` and ``transreid`` (optimiser, schedule, losses, pooling) and
  :class:`RetrievalConfig`;
- :mod:`.model`: the re-ID model of a fold (timm backbone, optional GeM, BNNeck), saved and loaded;
- :mod:`.train`: :func:`train_fold` (PK batches, AMP on CUDA, a checkpoint each epoch, resumable)
  and :func:`train_run` (all folds of :func:`anivision.data.reid.make_folds`; a fold whose
  ``metrics.json`` exists is reused, so rerunning the command resumes);
- :mod:`.evaluate`: metrics on cached embeddings, per fold and mean +/- std;
  :func:`evaluate_run` and the untrained :func:`evaluate_baseline`;
- :mod:`.search`: gallery search with an index saved beside the run and reused.

The losses live in :mod:`anivision.models.losses`, ``report.md`` in
:mod:`anivision.reports.retrieval`.
"""

from anivision.models.losses import BatchHardTriplet, IdTripletLoss, WeightedRegularizedTriplet, weighted_regularized_triplet
from anivision.reports.retrieval import SUMMARY_KEYS, format_table, write_report
from anivision.tasks.retrieval.config import (
    PRESETS,
    RetrievalConfig,
    RetrievalPreset,
    get_preset,
    load_run_config,
    lr_factor,
    preset_lr_fn,
)
from anivision.tasks.retrieval.evaluate import (
    MAX_RANK,
    data_summary,
    evaluate_baseline,
    evaluate_fold_model,
    evaluate_run,
    fold_metrics,
    run_data_source,
    summarize_folds,
)
from anivision.tasks.retrieval.model import load_fold_model, make_backbone, reid_augment
from anivision.tasks.retrieval.predictor import SearchResult, StyleRetriever
from anivision.tasks.retrieval.search import GalleryIndex, build_gallery_index, pick_search_fold, search
from anivision.tasks.retrieval.train import reid_step, train_fold, train_run

__all__ = [
    "MAX_RANK", "PRESETS", "SUMMARY_KEYS", "BatchHardTriplet", "GalleryIndex", "IdTripletLoss", "RetrievalConfig",
    "RetrievalPreset", "SearchResult", "StyleRetriever", "WeightedRegularizedTriplet", "build_gallery_index", "data_summary", "evaluate_baseline",
    "evaluate_fold_model", "evaluate_run", "fold_metrics", "format_table", "get_preset", "load_fold_model",
    "load_run_config", "lr_factor", "make_backbone", "pick_search_fold", "preset_lr_fn", "reid_augment", "reid_step", "run_data_source",
    "search", "summarize_folds", "train_fold", "train_run", "weighted_regularized_triplet", "write_report",
]
