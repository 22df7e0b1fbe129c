"""INT8 models with ONNX Runtime's quantization tools.

Two modes, chosen per model from its layers (:func:`int8_mode`):

- **static** (QDQ, per-channel int8 weights, uint8 activations, MinMax calibration on 200
  images) for convolutional networks: a convolution's activations need fixed scales, measured
  once on calibration images drawn from the run's training split (:class:`BatchReader`), so that
  the CPU runs integer convolutions end to end. Dynamic quantization would leave convolutions in
  float (or use the slow ``ConvInteger``). Weights of ordinary (pointwise, dense) convolutions
  keep 7 bits (``reduce_range``): on CPUs without VNNI (AVX2) ONNX Runtime multiplies u8 x s8
  pairs with ``vpmaddubsw``, whose 16-bit sums saturate with 8-bit weights. Depthwise
  convolutions run in another kernel that does not saturate, so their weights keep all 8 bits
  (:func:`depthwise_weights`). The first and last convolutions and the classifier stay in
  float32 (:func:`float_nodes`). Measured on Lite0 linear probes (benchmarks/RESULTS.md section
  14, full-data run): top-1 agreement with fp32 75% (8-bit everywhere), 91.5% (7-bit
  everywhere), 92.4% (8-bit depthwise), 93.8% (this), at the same speed.
- **dynamic** (int8 weights of ``MatMul``/``Gemm``, activation scales per batch at run time) for
  transformers: a ViT's time is in its matrix products, and its activations (after LayerNorm,
  GELU and softmax) have outliers that one calibrated scale clips badly; no calibration set needed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from torch import nn
from torch.utils.data import DataLoader, Dataset

from anivision.deploy.runtime import quiet_exporter
from anivision.deploy.sidecar import INPUT_NAME
from anivision.errors import AnivisionError
from anivision.extras import require

log = logging.getLogger(__name__)

INT8_MODES = ("static", "dynamic")


def int8_mode(module: nn.Module) -> str:
    """``static`` for a network made mostly of convolutions, ``dynamic`` for one made mostly of linear layers."""
    convs = sum(isinstance(m, nn.Conv2d) for m in module.modules())
    linears = sum(isinstance(m, nn.Linear) for m in module.modules())
    return "static" if convs >= linears else "dynamic"


def depthwise_weights(path: str | Path) -> list[str]:
    """Names of the weight initialisers of the grouped (depthwise) ``Conv`` nodes of the ONNX model at ``path``."""
    onnx = require("onnx", "export", "INT8 quantization")
    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    return sorted({n.input[1] for n in model.graph.node if n.op_type == "Conv" and len(n.input) > 1 and n.input[1] in inits
                   and any(a.name == "group" and a.i > 1 for a in n.attribute)})


def float_nodes(path: str | Path) -> list[str]:
    """Nodes that static INT8 leaves in float32: the first and the last ``Conv`` (stem and head), the
    ``Gemm``/``MatMul`` after the last one (the classifier), and a ``Clip`` (ReLU6) right after any of them."""
    onnx = require("onnx", "export", "INT8 quantization")
    nodes = list(onnx.load(str(path), load_external_data=False).graph.node)
    convs = [i for i, n in enumerate(nodes) if n.op_type == "Conv"]
    if not convs:
        return []
    keep = [nodes[convs[0]], nodes[convs[-1]]] + [n for n in nodes[convs[-1]:] if n.op_type in ("Gemm", "MatMul")]
    outputs = {o for n in keep for o in n.output}
    return [n.name for n in keep] + [n.name for n in nodes if n.op_type == "Clip" and n.input[0] in outputs]


def batch_reader(dataset: Dataset, batch_size: int = 16) -> Any:
    """A ``CalibrationDataReader`` over ``dataset`` (items ``(x, ...)``, already normalised), in batches."""
    quant = require("onnxruntime.quantization", "export", "INT8 quantization")

    class BatchReader(quant.CalibrationDataReader):  # type: ignore[misc,name-defined]
        """Feeds ``{"image": (B, 3, S, S) float32}`` batches to the calibrator, then None."""

        def __init__(self) -> None:
            self.batches: Iterator[Any] = iter(DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0))

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: batch[0].numpy().astype(np.float32)}

    return BatchReader()


def quantize_int8(fp32_path: str | Path, out_path: str | Path, mode: str, calibration: Dataset | None = None) -> dict[str, Any]:
    """Write an INT8 copy of ``fp32_path`` to ``out_path``.

    Args:
        mode: ``static`` (needs ``calibration``) or ``dynamic``.
        calibration: normalised images for the static activation ranges.

    Returns:
        What the sidecar records: mode, formats, calibration size.

    Raises:
        AnivisionError: static without calibration images, or the quantizer failed.
    """
    quant = require("onnxruntime.quantization", "export", "INT8 quantization")
    if mode not in INT8_MODES:
        raise AnivisionError(f"INT8 mode {mode!r}: choose one of {', '.join(INT8_MODES)}")
    try:
        with quiet_exporter():
            return _quantize(quant, Path(fp32_path), Path(out_path), mode, calibration)
    except AnivisionError:
        raise
    except Exception as exc:  # noqa: BLE001 - the quantizer raises many types; one line for the user
        raise AnivisionError(f"{fp32_path}: INT8 quantization ({mode}) failed: {type(exc).__name__}: {str(exc).strip()[:300]}") from exc


def _quantize(quant: Any, fp32_path: Path, out_path: Path, mode: str, calibration: Dataset | None) -> dict[str, Any]:
    """Run the quantizer of ``mode`` (see :func:`quantize_int8`)."""
    if mode == "dynamic":
        quant.quantize_dynamic(str(fp32_path), str(out_path), op_types_to_quantize=["MatMul", "Gemm"], per_channel=False, weight_type=quant.QuantType.QInt8)
        return {"mode": "dynamic", "ops": ["MatMul", "Gemm"], "weights": "int8", "activations": "uint8, scale per batch"}
    if calibration is None or len(calibration) == 0:  # type: ignore[arg-type]
        raise AnivisionError("static INT8 needs calibration images (the run's training images), and none is readable")
    pre = Path(str(out_path) + ".pre.onnx")
    try:
        try:
            quant.quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
            src = pre
        except Exception as exc:  # noqa: BLE001 - pre-processing only helps; quantize the graph as it is
            log.info("quantization pre-processing skipped: %s", exc)
            src = Path(fp32_path)
        # 7-bit weights (no u8s8 saturation without VNNI), but all 8 bits for depthwise weights (a kernel that does not saturate).
        full = {name: [{"axis": 0, "reduce_range": False}] for name in depthwise_weights(src)}
        quant.quantize_static(
            str(src), str(out_path), batch_reader(calibration), quant_format=quant.QuantFormat.QDQ, per_channel=True,
            reduce_range=True, activation_type=quant.QuantType.QUInt8, weight_type=quant.QuantType.QInt8,
            calibrate_method=quant.CalibrationMethod.MinMax, extra_options={"TensorQuantOverrides": full} if full else {},
            nodes_to_exclude=float_nodes(src),  # stem and head in float32: +1.4 to +2.6 pt agreement, speed within noise
        )
    finally:
        pre.unlink(missing_ok=True)
    return {"mode": "static", "format": "QDQ", "weights": "int8 per channel: 7-bit (reduce_range), depthwise 8-bit", "activations": "uint8",
            "float32": "first and last convolution, classifier",
            "calibration": "MinMax", "calibration_images": len(calibration)}  # type: ignore[arg-type]
