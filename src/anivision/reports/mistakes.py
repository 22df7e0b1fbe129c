"""The report page of test images the model got wrong, each with its Grad-CAM++ overlay.

``mistakes.png``: the most confident mistakes first (at most :data:`MAX_MISTAKES`), each as the
model-input view (red border; caption "true → predicted, confidence") next to the Grad-CAM++
map of the predicted class. Without the ``[explain]`` extra the section says so and shows the
table only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image
from torch import nn

from anivision.data.cache import DecodedImages
from anivision.data.transforms import DataConfig
from anivision.errors import AnivisionError
from anivision.explain import explain_pixels, save_png
from anivision.reports.plots import plot_image_grid

#: At most this many mistakes are drawn (the most confident ones).
MAX_MISTAKES = 24
#: Mistakes per grid row (each one takes two cells: the image and its overlay).
PER_ROW = 4


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|")


def mistakes_section(
    out_dir: str | Path, model: nn.Module, data_config: DataConfig, decoded: DecodedImages, indices: Sequence[int] | np.ndarray,
    labels: Sequence[int] | np.ndarray, probs: np.ndarray, classes: Sequence[str], cap: int = MAX_MISTAKES,
) -> list[str]:
    """Markdown lines of the "Misclassified test images" section; writes ``out_dir/mistakes.png``.

    Args:
        out_dir: the report folder.
        model: the classifier that gave ``probs`` (images -> logits).
        data_config: its input size and normalisation.
        decoded: the decoded images; ``indices`` are the scored positions in it (unreadable
            ones are dropped, as the evaluation dropped them), in the order of ``labels``/``probs``.
        labels: (M,) true class indices.
        probs: (M, C) predicted probabilities.
        classes: class names.
        cap: how many mistakes to draw at most.
    """
    out = Path(out_dir)
    idx = np.asarray(indices, dtype=np.int64)
    idx = idx[decoded.valid[idx]] if len(idx) else idx
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    lines = ["## Misclassified test images", ""]
    stale = out / "mistakes.png"
    if len(idx) != len(labels) or probs.shape[0] != len(labels):
        return lines + [f"Not drawn: {len(idx)} images but {len(labels)} labels.", ""]
    pred = probs.argmax(axis=1) if len(probs) else np.zeros(0, np.int64)
    wrong = np.flatnonzero(pred != labels)
    if len(wrong) == 0:
        stale.unlink(missing_ok=True)
        return lines + ["None: every test image was classified correctly.", ""]
    order = wrong[np.argsort(-probs[wrong, pred[wrong]], kind="stable")][:cap]
    shown = f"the {len(order)} most confident of {len(wrong)}" if len(order) < len(wrong) else f"all {len(wrong)}"
    table = ["| image | true | predicted | confidence |", "|---|---|---|---|"]
    table += [f"| `{_cell(Path(decoded.paths[idx[i]]).name)}` | {_cell(classes[labels[i]])} | {_cell(classes[pred[i]])} | {100 * probs[i, pred[i]]:.1f}% |"
              for i in order]
    try:
        found = explain_pixels(model, classes, data_config, np.asarray(decoded.pixels[idx[order]]),
                               [decoded.paths[idx[i]] for i in order], "gradcam++", [int(pred[i]) for i in order])
    except AnivisionError as exc:
        stale.unlink(missing_ok=True)
        return lines + [f"{len(wrong)} of {len(labels)} test images misclassified; Grad-CAM++ overlays skipped: {exc}", "", *table, ""]
    cells = []
    for i, e in zip(order, found):
        cells.append((e.image, f"true {classes[labels[i]]}\npred {e.label} {100 * e.prob:.0f}%", False))
        cells.append((e.overlay, f"Grad-CAM++: {e.label}", None))
    rows = [cells[k:k + 2 * PER_ROW] for k in range(0, len(cells), 2 * PER_ROW)]
    plot_image_grid(rows, stale, cell_size=1.6, title=f"misclassified test images ({shown}): input | Grad-CAM++ of the predicted class")
    with Image.open(stale) as grid:  # 256 colours: a quarter of the bytes, so report.html stays small
        small = grid.convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE)
    save_png(small, stale)
    return lines + [
        f"{len(wrong)} of {len(labels)} test images misclassified; {shown} shown, most confident first. "
        "Each image (red border: true and predicted class, confidence) is followed by its Grad-CAM++ map "
        "for the predicted class (red = the pixels that drove that answer).", "",
        "![misclassified test images with Grad-CAM++ overlays](mistakes.png)", "", *table, "",
    ]
