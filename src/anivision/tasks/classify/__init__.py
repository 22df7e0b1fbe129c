"""Classification with transfer learning: config, model, training, evaluation and prediction.

- :mod:`.config`: :class:`TrainConfig`, the named recipes and flag/YAML resolution;
- :mod:`.model`: backbone + head, its optimizer, loading a finished run;
- :mod:`.data`: the split, decoded images and what the epochs train on (chosen once);
- :mod:`.train`: :func:`train_classifier`, the epochs on the shared engine;
- :mod:`.evaluate`: the test split, ``evaluate`` and ``predict``.
"""

from anivision.tasks.classify.config import (
    NO_AUGMENT,
    RECIPES,
    TRAIN_OPTION_KEYS,
    TrainConfig,
    recipe_values,
    resolve_train_config,
    train_option_defaults,
)
from anivision.tasks.classify.evaluate import evaluate_run, measure_inference
from anivision.tasks.classify.model import build_classifier, classifier_optimizer, load_run
from anivision.explain import Explanation
from anivision.tasks.classify.predictor import ImageClassifier, Prediction, predict_paths
from anivision.tasks.classify.train import train_classifier

__all__ = [
    "NO_AUGMENT", "RECIPES", "TRAIN_OPTION_KEYS", "TrainConfig", "recipe_values", "resolve_train_config",
    "train_option_defaults", "evaluate_run", "measure_inference", "predict_paths", "build_classifier",
    "classifier_optimizer", "load_run", "train_classifier", "ImageClassifier", "Prediction", "Explanation",
]
