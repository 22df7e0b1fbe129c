"""The JSON file beside every exported ``.onnx``: how to feed the model and what it returns.

A user without anivision reads it to preprocess images exactly as training did (the decoder of
:mod:`anivision.data.cache`: RGB, shorter side resized bicubic to ``resize``, centre-cropped to a
``resize`` square, then the eval transform's centre crop to ``crop`` at ``crop_offset``, scaled
to [0, 1] and normalised), and to name the outputs (class names, a gallery's prototypes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from anivision.data.transforms import DataConfig, cache_size
from anivision.errors import AnivisionError
from anivision.files import read_json
from anivision.version import __version__

#: Name of the single input of every exported model: a float32 (batch, 3, S, S) NCHW tensor.
INPUT_NAME = "image"
FORMAT = "anivision-onnx"
FORMAT_VERSION = 1


def sidecar_path(onnx_path: str | Path) -> Path:
    """``model.onnx`` -> ``model.json``."""
    return Path(onnx_path).with_suffix(".json")


def preprocess_meta(dcfg: DataConfig) -> dict[str, Any]:
    """The preprocessing of :func:`~anivision.data.cache.resize_square` + :func:`~anivision.data.transforms.eval_transform`."""
    resize = cache_size(dcfg)
    return {
        "resize": resize,
        "resize_rule": "RGB (alpha composited on white); shorter side to `resize` (PIL bicubic, reducing_gap 3.0), "
        "longer side round(side * resize / shorter); centre crop resize x resize at ((w - resize) // 2, (h - resize) // 2)",
        "interpolation": "bicubic",
        "reducing_gap": 3.0,
        "crop": dcfg.img_size,
        # torchvision's CenterCrop offset: int(round((resize - crop) / 2)) (Python rounding).
        "crop_offset": int(round((resize - dcfg.img_size) / 2.0)),
        "scale": 1.0 / 255.0,
        "mean": [float(m) for m in dcfg.mean],
        "std": [float(s) for s in dcfg.std],
        "crop_pct": float(dcfg.crop_pct),
    }


def build_sidecar(
    kind: str, dcfg: DataConfig, outputs: list[str], output_dims: dict[str, int], fingerprint: str, source: str = "",
    classes: list[str] | None = None, extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything the sidecar records for an fp32 export (:func:`mark_int8` adds the INT8 part)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "anivision_version": __version__,
        "kind": kind,
        "precision": "fp32",
        "input": {"name": INPUT_NAME, "shape": ["batch", 3, dcfg.img_size, dcfg.img_size], "dtype": "float32", "layout": "NCHW", "channels": "RGB"},
        "input_size": dcfg.img_size,
        "mean": [float(m) for m in dcfg.mean],
        "std": [float(s) for s in dcfg.std],
        "preprocess": preprocess_meta(dcfg),
        "outputs": list(outputs),
        "output_dims": dict(output_dims),
        "classes": list(classes) if classes is not None else None,
        "source": {"path": source, "model_fingerprint": fingerprint},
        **(extra or {}),
    }


def data_config_of(meta: dict[str, Any]) -> DataConfig:
    """The :class:`DataConfig` a sidecar describes."""
    pre = meta["preprocess"]
    return DataConfig(int(pre["crop"]), tuple(pre["mean"]), tuple(pre["std"]), float(pre["crop_pct"]))  # type: ignore[arg-type]


def read_sidecar(onnx_path: str | Path) -> dict[str, Any]:
    """The sidecar of ``onnx_path``.

    Raises:
        AnivisionError: missing, not JSON, or not an anivision sidecar.
    """
    path = sidecar_path(onnx_path)
    if not path.is_file():
        raise AnivisionError(f"{path}: missing; an exported model needs the JSON written beside it by 'anivision export'")
    meta = read_json(path)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise AnivisionError(f"{path}: not an anivision ONNX sidecar (no \"format\": \"{FORMAT}\")")
    return meta
