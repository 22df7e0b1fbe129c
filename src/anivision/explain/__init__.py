"""Grad-CAM / Grad-CAM++ explanations of classifiers (pytorch-grad-cam, the ``[explain]`` extra).

``explain_batch(model, batch, targets)`` gives (N, H, W) maps in [0, 1] for CNNs and ViTs;
``overlay(image, heatmap)`` draws one on a picture; ``explain_images`` explains any images
as :class:`Explanation` objects (what ``ImageClassifier.explain`` and ``anivision explain`` use).
"""

from anivision.explain.cam import METHODS, default_target_layer, explain_batch
from anivision.explain.images import Explanation, class_index, explain_images, explain_pixels
from anivision.explain.overlay import colorize, overlay, save_png, side_by_side

__all__ = [
    "METHODS", "Explanation", "class_index", "colorize", "default_target_layer", "explain_batch",
    "explain_images", "explain_pixels", "overlay", "save_png", "side_by_side",
]
