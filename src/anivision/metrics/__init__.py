"""Pure metric functions on numpy arrays: classification, retrieval, and uncertainty (stats)."""

from anivision.metrics.classification import (
    classification_metrics,
    confusion_matrix,
    expected_calibration_error,
    format_classification_report,
    topk_accuracy,
)
from anivision.metrics.retrieval import pairwise_distances, retrieval_metrics
from anivision.metrics.stats import (
    episode_ci95,
    mean_ci,
    mean_ci95,
    paired_bootstrap,
    paired_bootstrap_diff,
)

__all__ = [
    "classification_metrics",
    "confusion_matrix",
    "episode_ci95",
    "expected_calibration_error",
    "format_classification_report",
    "mean_ci",
    "mean_ci95",
    "paired_bootstrap",
    "paired_bootstrap_diff",
    "pairwise_distances",
    "retrieval_metrics",
    "topk_accuracy",
]
