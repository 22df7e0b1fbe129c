"""Few-shot character recognition with Prototypical Networks (Snell et al., 2017).

A character is its prototype: the mean embedding of its K support images. A query belongs to
the nearest prototype, by squared euclidean distance (as Snell et al.) or cosine distance. Any
timm backbone is the embedding; meta-training fine-tunes it on episodes of the training
classes (the AniWho recipe), and new characters need no retraining, only new prototypes.

The package, one concept a module:

- :mod:`.splits`: class-disjoint splits (``classes.json``); few-shot accuracy is only
  meaningful on classes never trained on;
- :mod:`.config`: :class:`FewShotTrainConfig`, the run's ``config.json``;
- :mod:`.episodes`: N-way K-shot accuracy of cached embeddings, vectorised over episodes;
- :mod:`.train`: meta-training through the engine (an episode step), resumable;
- :mod:`.evaluate`: backbones to embed with, and the AniWho Table 8 grid;
- :mod:`.gallery`: enrolment and the gallery folder;
- :mod:`.predictor`: :class:`FewShotModel` (embed, enroll) and :class:`Gallery` (identify), used by the CLI and the Python API.

The model and its maths are :mod:`anivision.models.protonet`; the markdown report is
:mod:`anivision.reports.fewshot`.
"""

from anivision.models.protonet import DISTANCES, PrototypicalNetwork, episode_distances, protonet_logits, prototypes
from anivision.reports.fewshot import format_cell, grid_markdown
from anivision.tasks.fewshot.config import FewShotTrainConfig
from anivision.tasks.fewshot.episodes import episode_accuracy, evaluate_episodes
from anivision.tasks.fewshot.evaluate import (
    GRID_SHOTS,
    GRID_WAYS,
    BackboneSpec,
    backbone_spec,
    build_backbone,
    default_class_set,
    evaluate_fewshot,
    evaluation_name,
    is_run_dataset,
    run_data,
)
from anivision.tasks.fewshot.gallery import DEFAULT_REJECT_RATE, calibrate_threshold, enroll_gallery, gallery_weights, l2_normalise, load_gallery, loo_own_and_other
from anivision.tasks.fewshot.predictor import FewShotModel, Gallery, Identification, identify_paths
from anivision.tasks.fewshot.splits import DEFAULT_CLASS_RATIOS, ClassSplit, class_disjoint_split, parse_class_counts, select_classes
from anivision.tasks.fewshot.train import episode_step, train_fewshot

__all__ = [
    "DEFAULT_CLASS_RATIOS", "DEFAULT_REJECT_RATE", "DISTANCES", "GRID_SHOTS", "GRID_WAYS",
    "BackboneSpec", "ClassSplit", "FewShotModel", "FewShotTrainConfig", "Gallery", "Identification", "PrototypicalNetwork",
    "backbone_spec", "build_backbone", "calibrate_threshold", "class_disjoint_split", "default_class_set", "enroll_gallery", "episode_accuracy", "episode_distances",
    "episode_step", "evaluate_episodes", "evaluate_fewshot", "evaluation_name", "format_cell", "gallery_weights", "grid_markdown", "identify_paths",
    "is_run_dataset", "l2_normalise", "load_gallery", "loo_own_and_other", "parse_class_counts", "protonet_logits", "prototypes", "run_data", "select_classes",
    "train_fewshot",
]
